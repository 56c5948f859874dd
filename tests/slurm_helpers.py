"""Helpers of the tests that run on the local SLURM cluster (scripts/slurm/start.sh)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from trainset.cli import main
from trainset.pipeline.slurm import TaskState, controller_up, read_jobs, wait_for_jobs

TIMEOUT_S = 400  # a 2-CPU machine shared with other work; jobs themselves take seconds
SMALL = "{partition: cpu, gres: none, cpus: 1, mem: 400M, time: '00:10:00'}"
CONFIG = "stages:\n" + "".join(
    f"  {step}: {SMALL}\n" for step in ("deblur", "depth", "calibrate", "render", "validate")
)


def require_controller() -> None:
    """Skip (or, with TRAINSET_REQUIRE_SLURM=1, fail) when no controller answers."""
    if controller_up():
        return
    reason = (
        "no SLURM controller answers `scontrol ping` "
        "(start the local one as root: scripts/slurm/start.sh)"
    )
    if os.environ.get("TRAINSET_REQUIRE_SLURM") == "1":
        pytest.fail(f"{reason}; TRAINSET_REQUIRE_SLURM=1 requires it")
    pytest.skip(reason)


def cli(*argv: str) -> tuple[int, str]:
    """``trainset ARGV`` in this process: exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(argv))
    return code, out.getvalue()


def wait(*out_roots: Path) -> list[TaskState]:
    """Wait for every job submitted for ``out_roots``; their final states."""
    ids = [
        str(job["job_id"]) for root in out_roots for sub in read_jobs(root) for job in sub["jobs"]
    ]
    return wait_for_jobs(ids, timeout_s=TIMEOUT_S)
