"""`trainset focus run --executor slurm` on the real local cluster (scripts/slurm/start.sh).

One scripted session on the synthetic demo set, shared by the tests below (each checks one
behaviour of it): one scene's depth input is broken, the first submission stops at the manual
gate, the second (``--max-coc from-stats``) renders and validates the rest, the input is fixed
and the same command resubmits only that scene; the finished set is then compared byte for
byte with a run of the local executor on the same input.

Skipped with the reason when no controller answers `scontrol ping`; failed instead when
TRAINSET_REQUIRE_SLURM=1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.slurm_helpers import CONFIG, cli, require_controller, wait
from trainset.focus.calibration import select_calibration_scenes
from trainset.focus.synthetic import generate_scenes
from trainset.pipeline.slurm import ACTIVE_STATES, TaskState, read_jobs
from trainset.store import read_json

N_SCENES = 3
IDS = [f"scene_{i:03d}" for i in range(N_SCENES)]
# The broken scene must not be the one calibration samples (ceil(0.2 * 3) = 1 scene), so the
# recommended max_coc is the local run's.
BROKEN = next(s for s in reversed(IDS) if s not in select_calibration_scenes(IDS, 0.2))


@dataclass
class Session:
    raw: Path
    out: Path
    local: Path
    gate_stdout: str = ""
    failed_sentinels: dict[str, list[str]] = field(default_factory=dict)
    failed_states: list[TaskState] = field(default_factory=list)
    failed_status: tuple[int, str] = (0, "")
    resubmitted: list[dict] = field(default_factory=list)
    final_states: list[TaskState] = field(default_factory=list)


def _done_stages(out: Path, scene: str) -> list[str]:
    dirs = ("frames_sharp", "depth_maps", "focus_maps", "bokeh_renders")
    return [d for d in dirs if (out / scene / d / ".done").is_file()]


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    require_controller()
    root = tmp_path_factory.mktemp("slurm_e2e")
    s = Session(root / "raw", root / "out", root / "local")
    generate_scenes(s.raw, n_scenes=N_SCENES, n_frames=4, size=(32, 32))
    config = root / "slurm.yaml"
    config.write_text(CONFIG)
    broken = s.raw / BROKEN / "depth" / "depth_0001.npy"
    good_bytes = broken.read_bytes()
    broken.write_bytes(b"not an npy file")
    run = (
        *("focus", "run", "--raw-root", str(s.raw), "--out-root", str(s.out), "--min-frames", "4"),
        *("--executor", "slurm", "--slurm-config", str(config)),
    )

    code, s.gate_stdout = cli(*run)
    assert code == 0, s.gate_stdout
    wait(s.out)
    code, text = cli(*run, "--max-coc", "from-stats")
    assert code == 0, text
    s.failed_states = wait(s.out)
    s.failed_sentinels = {scene: _done_stages(s.out, scene) for scene in IDS}
    s.failed_status = cli("focus", "status", "--out-root", str(s.out))

    broken.write_bytes(good_bytes)
    code, text = cli(*run, "--max-coc", "from-stats")
    assert code == 0, text
    s.resubmitted = read_jobs(s.out)[-1]["jobs"]
    s.final_states = wait(s.out)

    code, text = cli(
        *("focus", "run", "--raw-root", str(s.raw), "--out-root", str(s.local)),
        *("--min-frames", "4", "--max-coc", "from-stats"),
    )
    assert code == 0, text
    return s


pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_first_submission_stops_at_the_gate_with_the_command_to_continue(session):
    assert "manual gate: when calibrate (job " in session.gate_stdout
    assert "--executor slurm --slurm-config" in session.gate_stdout
    assert "--max-coc from-stats" in session.gate_stdout
    stats = read_json(session.out / "logs" / "coc_stats.json")
    assert stats["recommended_max_coc"] > 0


def test_failed_depth_leaves_other_scenes_complete_and_nothing_pending(session):
    complete = ["frames_sharp", "depth_maps", "focus_maps", "bokeh_renders"]
    assert session.failed_sentinels == {
        scene: (["frames_sharp"] if scene == BROKEN else complete) for scene in IDS
    }
    assert [s for s in session.failed_states if s.state in ACTIVE_STATES] == []


def test_status_names_the_failed_scene_and_stage(session):
    code, text = session.failed_status
    assert code == 1
    assert f"  failed: {BROKEN}" in text
    assert f"  FAILED depth {BROKEN}: NonZeroExitCode" in text
    assert f"  CANCELLED render {BROKEN}: DependencyNeverSatisfied" in text


def test_rerun_after_fix_submits_only_the_failed_scene_and_validates(session):
    scene_jobs = [(job["step"], job.get("units")) for job in session.resubmitted]
    assert scene_jobs == [("depth", [BROKEN]), ("render", [BROKEN]), ("validate", None)]
    report = read_json(session.out / "logs" / "validation_report.json")
    assert (report["passing_scenes"], report["failed_scenes"]) == (N_SCENES, [])
    validate_id = str(session.resubmitted[-1]["job_id"])
    assert [s.state for s in session.final_states if s.job_id == validate_id] == ["COMPLETED"]


def _outputs(root: Path) -> dict[str, bytes]:
    files = {}
    for scene in IDS:
        for path in sorted((root / scene).rglob("*")):
            rel = path.relative_to(root)
            wanted = path.suffix == ".npz" or path.name == "metadata.json"
            if path.is_file() and wanted:
                files[str(rel)] = path.read_bytes()
    return files


def test_outputs_are_byte_identical_to_the_local_executor(session):
    slurm, local = _outputs(session.out), _outputs(session.local)
    # per scene: 4 depth maps, 4 sets x 4 focus maps, metadata.json
    assert len(local) == N_SCENES * (4 + 16 + 1)
    assert sorted(slurm) == sorted(local)
    assert [name for name in local if slurm[name] != local[name]] == []
