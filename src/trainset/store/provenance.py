"""Provenance: what code, environment and command produced a file."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import trainset


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(path: str | Path | None = None) -> str | None:
    """Commit of the git checkout holding ``path`` (default: trainset's own code), or None."""
    where = Path(path) if path is not None else Path(trainset.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def provenance_record(argv: list[str] | None = None) -> dict[str, Any]:
    """Return trainset version, git commit, Python/numpy/torch versions, command line, UTC time.

    torch's version is read from package metadata, so torch is not imported.
    """
    return {
        "trainset_version": trainset.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "platform": f"{platform.system()}-{platform.machine()}",
        "command": list(sys.argv if argv is None else argv),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
