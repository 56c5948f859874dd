"""Sentinels: a ``.done`` file written last, holding JSON that says what produced the output.

A stage re-runs a unit of work when its sentinel is missing, unreadable, from another stage
version, or from other parameters (compared by :func:`trainset.store.params_hash`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainset.store.atomic import atomic_write_json
from trainset.store.hashing import params_hash

SENTINEL_NAME = ".done"


@dataclass(frozen=True)
class Sentinel:
    """The content of a ``.done`` file."""

    stage: str
    stage_version: int
    params_hash: str
    counts: dict[str, Any] = field(default_factory=dict)
    time: str = ""


def sentinel_path(directory: str | os.PathLike[str]) -> Path:
    """Path of the sentinel of an output directory."""
    return Path(directory) / SENTINEL_NAME


def write_sentinel(
    directory: str | os.PathLike[str],
    stage: str,
    stage_version: int,
    params: Mapping[str, Any],
    counts: Mapping[str, Any] | None = None,
) -> Sentinel:
    """Write the sentinel of ``directory`` (atomically, after everything else) and return it."""
    sentinel = Sentinel(
        stage=stage,
        stage_version=stage_version,
        params_hash=params_hash(params),
        counts=dict(counts or {}),
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    atomic_write_json(sentinel_path(directory), asdict(sentinel))
    return sentinel


def read_sentinel(directory: str | os.PathLike[str]) -> Sentinel | None:
    """Read the sentinel of ``directory``; None when missing or not a valid sentinel."""
    path = sentinel_path(directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Sentinel(
            stage=str(data["stage"]),
            stage_version=int(data["stage_version"]),
            params_hash=str(data["params_hash"]),
            counts=dict(data.get("counts", {})),
            time=str(data.get("time", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_current(
    directory: str | os.PathLike[str], stage: str, stage_version: int, params: Mapping[str, Any]
) -> bool:
    """True when ``directory`` holds a sentinel for this stage, version and parameters."""
    sentinel = read_sentinel(directory)
    return (
        sentinel is not None
        and sentinel.stage == stage
        and sentinel.stage_version == stage_version
        and sentinel.params_hash == params_hash(params)
    )
