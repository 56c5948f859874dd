"""SLURM executor on the real local cluster (scripts/slurm/start.sh), with toy commands.

Skipped with the reason when no controller answers `scontrol ping`; failed instead when
TRAINSET_REQUIRE_SLURM=1 (CI running as root starts the cluster and sets it).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.slurm_helpers import require_controller
from trainset.errors import InputError
from trainset.pipeline.slurm import (
    TASK_INDEX,
    SceneStep,
    SetStep,
    SlurmConfig,
    StageResources,
    controller_up,
    query_cluster,
    read_jobs,
    submit,
    unit_states,
    wait_for_jobs,
)

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[2]
SMALL = StageResources("cpu", 1, "100M", "00:05:00", None, 4)
TIMEOUT_S = 120  # generous: a 2-CPU machine shared with other work


@pytest.fixture
def slurm_cluster():
    """Skip (or fail when TRAINSET_REQUIRE_SLURM=1) unless a SLURM controller answers."""
    require_controller()


def _touch_step(name: str, out: Path, pending: set[int], fail: int | None = None) -> SceneStep:
    """A scene step whose task i creates out/{name}_{i}, failing (exit 3) for unit ``fail``."""
    script = f'test "$1" != "{fail}" || exit 3; touch "$0/{name}_$1"'
    return SceneStep(name, ("/bin/sh", "-c", script, str(out), TASK_INDEX), frozenset(pending))


def _job_ids(out: Path) -> list[str]:
    return [job["job_id"] for sub in read_jobs(out) for job in sub["jobs"]]


def test_failed_unit_never_blocks_others_and_nothing_pends(tmp_path, slurm_cluster):
    steps = [
        _touch_step("a", tmp_path, {0, 1, 2, 3}, fail=2),
        _touch_step("b", tmp_path, {0, 1, 2, 3}),
    ]
    listing = 'ls "$0" | grep -c "^b_" > "$0/c"'
    set_steps = [SetStep("c", ("/bin/sh", "-c", listing, str(tmp_path)), ("b",))]
    config = SlurmConfig({"a": SMALL, "b": SMALL, "c": SMALL})
    submit(tmp_path, steps, set_steps, config)
    states = wait_for_jobs(_job_ids(tmp_path), timeout_s=TIMEOUT_S)
    made = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert made == ["a_0", "a_1", "a_3", "b_0", "b_1", "b_3", "c"]
    assert (tmp_path / "c").read_text() == "3\n"
    by_unit = {key: state for key, (state, _) in unit_states(read_jobs(tmp_path), states).items()}
    assert (by_unit[("a", "2")].state, by_unit[("a", "2")].reason) == ("FAILED", "NonZeroExitCode")
    assert (by_unit[("b", "2")].state, by_unit[("b", "2")].reason) == (
        "CANCELLED",
        "DependencyNeverSatisfied",
    )
    assert by_unit[("c", None)].state == "COMPLETED"


def test_chunks_beyond_array_limit_run_every_unit_once(tmp_path, slurm_cluster):
    cluster = replace(query_cluster(), max_array_size=2)
    steps = [_touch_step("a", tmp_path, {0, 1, 2}), _touch_step("b", tmp_path, {0, 1, 2})]
    submit(tmp_path, steps, [], SlurmConfig({"a": SMALL, "b": SMALL}), cluster=cluster)
    wait_for_jobs(_job_ids(tmp_path), timeout_s=TIMEOUT_S)
    made = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert made == ["a_0", "a_1", "a_2", "b_0", "b_1", "b_2"]
    offsets = [job["offset"] for job in read_jobs(tmp_path)[0]["jobs"]]
    assert offsets == [0, 2, 0, 2]


def test_too_many_cpus_is_refused_before_submitting(tmp_path, slurm_cluster):
    steps = [_touch_step("a", tmp_path, {0})]
    config = SlurmConfig({"a": replace(SMALL, cpus=4096)})
    with pytest.raises(InputError, match=r"a: asks for 4096 CPUs but the nodes of partition 'cpu'"):
        submit(tmp_path, steps, [], config)
    assert read_jobs(tmp_path) == []


def test_gpu_on_partition_without_gpus_is_refused_before_submitting(tmp_path, slurm_cluster):
    steps = [_touch_step("a", tmp_path, {0})]
    config = SlurmConfig({"a": replace(SMALL, partition="gpu", gres="gpu:1")})
    with pytest.raises(
        InputError, match=r"a: asks for GRES gpu:1 but the nodes of partition 'gpu'"
    ):
        submit(tmp_path, steps, [], config)
    assert read_jobs(tmp_path) == []


def test_start_script_twice_is_harmless(slurm_cluster):
    result = subprocess.run(
        [str(REPO / "scripts" / "slurm" / "start.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout
    assert controller_up()


def _recorded_pids(state: Path) -> dict[str, int]:
    names = ("slurmctld", "slurmd", "munged")
    return {
        n: int((state / f"{n}.pid").read_text()) for n in names if (state / f"{n}.pid").is_file()
    }


def _running(name: str, pid: int) -> bool:
    comm = Path(f"/proc/{pid}/comm")
    return comm.is_file() and comm.read_text().strip() == name


def test_stop_script_leaves_no_daemon_it_started_then_start_restores(slurm_cluster):
    state = Path(os.environ.get("TRAINSET_SLURM_STATE", "/tmp/trainset-slurm"))
    pids = _recorded_pids(state)
    if "slurmctld" not in pids:
        pytest.skip(f"the running cluster was not started by scripts/slurm/start.sh ({state})")
    stop = subprocess.run([str(REPO / "scripts/slurm/stop.sh")], capture_output=True, text=True)
    assert stop.returncode == 0, stop.stderr
    assert [name for name, pid in pids.items() if _running(name, pid)] == []
    assert _recorded_pids(state) == {}
    assert not controller_up()
    start = subprocess.run([str(REPO / "scripts/slurm/start.sh")], capture_output=True, text=True)
    assert start.returncode == 0, start.stderr
    assert controller_up()
