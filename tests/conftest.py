"""Shared fixtures. Test data is made by the tests themselves, never downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainset.demo import shared_data_root

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``trainset ARGS`` in a fresh process and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "trainset.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cli():
    """The ``run_cli`` helper as a fixture."""
    return run_cli


# Real instrument data (../shared/data beside the checkout; its README says what each file is).
# TRAINSET_SHARED_DATA points elsewhere. Tests that need it skip with this reason when absent.
SHARED_DATA = shared_data_root()


def shared_data_path(*parts: str) -> Path:
    """A file or folder of the real data set; skips the test with a clear reason when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real data not found at {path} (the ../shared/data folder beside the checkout, "
            "or TRAINSET_SHARED_DATA): this test checks what only instrument data shows"
        )
    return path


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data_path`` as a fixture: ``shared_data("rgbd", "7scenes-redkitchen")``."""
    return shared_data_path
