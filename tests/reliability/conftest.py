"""Fixtures of the reliability tests: a small disk that can be filled (tmpfs, root only)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PAGE = 4096  # tmpfs allocates whole pages


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs, unmounted after the test (root only; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the dev machine run as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)]
    done = subprocess.run(mount, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"mount refused: {done.stderr.strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def _fill(disk: Path, free_pages: int) -> Path:
    """Leave exactly ``free_pages`` pages free on ``disk``; returns the filler file."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    filler.write_bytes(bytes(stat.f_bavail * stat.f_frsize - free_pages * PAGE))
    stat = os.statvfs(disk)
    assert stat.f_bavail * stat.f_frsize == free_pages * PAGE
    return filler


@pytest.fixture
def fill_disk():
    """``fill_disk(disk, free_pages)``: a filler file takes all but ``free_pages`` pages."""
    return _fill
