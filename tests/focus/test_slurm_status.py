"""The SLURM section of `trainset focus status`, with a stand-in for the SLURM commands."""

from __future__ import annotations

import subprocess

from trainset.focus.slurm_status import slurm_status_lines
from trainset.pipeline.slurm import append_jobs
from trainset.store import atomic_write_json


def _runner(squeue_out: str, up: bool = True):
    def run(argv):
        if argv[:2] == ["scontrol", "ping"]:
            text = "Slurmctld(primary) at vm is UP\n" if up else "Slurmctld(primary) is DOWN\n"
            return subprocess.CompletedProcess(argv, 0 if up else 1, text, "")
        assert argv[0] == "squeue"
        return subprocess.CompletedProcess(argv, 0, squeue_out, "")

    return run


def _record(out, jobs, command=None):
    append_jobs(out, jobs, {"command": command} if command else None)


def test_status_names_failed_scene_and_stage_and_cancelled_dependents(tmp_path):
    _record(
        tmp_path,
        [
            {"job_id": "7", "step": "depth", "tasks": [0, 1], "units": ["s0", "s1"]},
            {"job_id": "8", "step": "render", "tasks": [0, 1], "units": ["s0", "s1"]},
        ],
    )
    squeue = (
        "7|0|COMPLETED|None\n7|1|FAILED|NonZeroExitCode\n"
        "8|0|COMPLETED|None\n8|1|CANCELLED|DependencyNeverSatisfied\n"
    )
    assert slurm_status_lines(tmp_path, _runner(squeue)) == [
        "SLURM: 2 jobs in 1 submissions (slurm/jobs.json); newest task per scene and stage:",
        "  depth      1 COMPLETED, 1 FAILED",
        "  render     1 CANCELLED, 1 COMPLETED",
        "  FAILED depth s1: NonZeroExitCode (log: slurm/logs/depth_7_1.out)",
        "  CANCELLED render s1: DependencyNeverSatisfied: an earlier stage of this scene failed"
        " (log: slurm/logs/render_8_1.out)",
    ]


def test_status_without_controller_says_states_are_unknown(tmp_path):
    _record(tmp_path, [{"job_id": "7", "step": "depth", "tasks": [0], "units": ["s0"]}])
    assert slurm_status_lines(tmp_path, _runner("", up=False)) == [
        "SLURM: 1 jobs in 1 submissions (slurm/jobs.json)",
        "  no controller answers `scontrol ping`: job states unknown",
    ]


def test_status_counts_forgotten_tasks_and_prints_the_gate(tmp_path):
    command = ["trainset", "focus", "run", "--out-root", str(tmp_path), "--executor", "slurm"]
    _record(
        tmp_path,
        [
            {"job_id": "7", "step": "depth", "tasks": [0, 1], "units": ["s0", "s1"]},
            {"job_id": "9", "step": "calibrate", "tasks": None},
        ],
        command,
    )
    atomic_write_json(tmp_path / "logs" / "coc_stats.json", {"recommended_max_coc": 0.000125})
    lines = slurm_status_lines(tmp_path, _runner("9|N/A|COMPLETED|None\n"))
    assert lines[1:] == [
        "  calibrate  1 COMPLETED",
        "  2 tasks of the newest submission are no longer known to the controller (finished "
        "more than MinJobAge ago); the sentinel counts are authoritative",
        "  gate: recommended max_coc = 0.000125 m (0.125 mm on the sensor)",
        f"  continue with: trainset focus run --out-root {tmp_path} --executor slurm"
        " --max-coc from-stats",
    ]


def test_status_without_jobs_file_adds_nothing(tmp_path):
    assert slurm_status_lines(tmp_path, _runner("")) == []
