"""`trainset sar patches --executor slurm` on the real local cluster (scripts/slurm/start.sh).

One scripted session on three small rasters, shared by the tests below (each checks one
behaviour of it): the first submission runs stats -> bounds -> tile -> manifest, and one
raster's tile task is cancelled while it waits (as a node failure, a preemption or a user
would end it), so the manifest job publishes nothing; the same command is submitted again and
redoes only that raster; the published set is compared byte for byte with a local run.

Skipped with the reason when no controller answers `scontrol ping`; failed instead when
TRAINSET_REQUIRE_SLURM=1.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.slurm_helpers import cli, require_controller, wait
from trainset.pipeline.slurm import TaskState, read_jobs
from trainset.sar.workdir import unit_ids
from trainset.testing.sar_rasters import speckle_amplitude_dn, write_geotiff
from trainset.testing.sar_sets import set_files

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS = ("stats", "bounds", "tile", "manifest")
SMALL = "{partition: cpu, cpus: 1, mem: 400M, time: '00:10:00'}"
CONFIG = "stages:\n" + "".join(f"  {step}: {SMALL}\n" for step in STEPS)
# 32-pixel patches every 16 pixels, all kept, 7 per shard: shards hold patches of two rasters.
FLAGS = ["--units", "amplitude", "--patch-size", "32", "--stride", "16", "--quality", "0,1,0"]
FLAGS += ["--shard-size", "7"]


@dataclass
class Session:
    rasters: list[Path]
    out: Path
    local: Path
    cancelled: str = ""
    first_jobs: list[dict] = field(default_factory=list)
    first_states: list[TaskState] = field(default_factory=list)
    published_after_first: bool = True
    manifest_log: str = ""
    resubmitted: list[dict] = field(default_factory=list)
    final_states: list[TaskState] = field(default_factory=list)
    work_after: list[str] = field(default_factory=list)


def _states(states: list[TaskState], job: dict) -> list[str]:
    return sorted(s.state for s in states if s.job_id == str(job["job_id"]))


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    require_controller()
    root = tmp_path_factory.mktemp("sar_slurm")
    sizes = ((96, 112), (64, 80), (80, 64))
    rasters = [
        write_geotiff(root / f"{name}.tif", speckle_amplitude_dn(size, seed=seed))
        for seed, (name, size) in enumerate(zip("abc", sizes))
    ]
    s = Session(rasters, root / "out", root / "local")
    config = root / "slurm.yaml"
    config.write_text(CONFIG)
    work = root / ".out.work"
    run = ("sar", "patches", *map(str, rasters), "--out", str(s.out), *FLAGS)
    run += ("--executor", "slurm", "--slurm-config", str(config))

    code, text = cli(*run)
    assert code == 0, text
    s.first_jobs = read_jobs(work)[-1]["jobs"]
    tile = next(job for job in s.first_jobs if job["step"] == "tile")
    s.cancelled = unit_ids([rasters[1].resolve()])[0]
    task = tile["tasks"][tile["units"].index(s.cancelled)]
    # The tile array waits for stats and bounds, so its task is still pending here.
    subprocess.run(["scancel", f"{tile['job_id']}_{task}"], check=True)
    s.first_states = wait(work)
    s.published_after_first = s.out.exists()
    manifest = next(job for job in s.first_jobs if job["step"] == "manifest")
    s.manifest_log = (work / "slurm" / "logs" / f"manifest_{manifest['job_id']}.out").read_text()

    code, text = cli(*run)
    assert code == 0, text
    s.resubmitted = read_jobs(work)[-1]["jobs"]
    s.final_states = wait(work)
    s.work_after = sorted(p.name for p in (work / s.cancelled).iterdir())

    code, text = cli("sar", "patches", *map(str, rasters), "--out", str(s.local), *FLAGS)
    assert code == 0, text
    return s


def test_first_submission_runs_the_four_steps_over_three_rasters(session):
    jobs = [(job["step"], job["tasks"]) for job in session.first_jobs]
    assert jobs == [("stats", [0, 1, 2]), ("bounds", None), ("tile", [0, 1, 2]), ("manifest", None)]
    stats, bounds = session.first_jobs[:2]
    assert _states(session.first_states, stats) == ["COMPLETED"] * 3
    assert _states(session.first_states, bounds) == ["COMPLETED"]
    # squeue keeps no record of a task cancelled while it was pending
    assert _states(session.first_states, session.first_jobs[2]) == ["COMPLETED", "COMPLETED"]


def test_a_raster_left_untiled_publishes_nothing_and_the_manifest_log_names_it(session):
    assert not session.published_after_first
    assert _states(session.first_states, session.first_jobs[3]) == ["FAILED"]
    assert "no set published: 1 of 3 raster(s) are not tiled" in session.manifest_log
    assert (
        f"  {session.cancelled} ({session.rasters[1].resolve()}): tile not done"
        in session.manifest_log
    )
    assert "submit again (finished rasters are kept)" in session.manifest_log


def test_resubmission_redoes_only_the_cancelled_raster_then_publishes(session):
    jobs = [(job["step"], job.get("units")) for job in session.resubmitted]
    assert jobs == [("tile", [session.cancelled]), ("manifest", None)]
    assert [_states(session.final_states, job) for job in session.resubmitted] == [
        ["COMPLETED"],
        ["COMPLETED"],
    ]
    assert session.work_after == ["stats"]  # its patches are removed once published


def test_the_set_built_on_slurm_equals_the_local_set_byte_for_byte(session):
    assert set_files(session.out) == set_files(session.local)
    assert sum(name.startswith("shard_") for name in set_files(session.out)) == 8  # 54 patches
