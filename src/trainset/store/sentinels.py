"""Sentinels: a ``.done`` file written last, holding JSON that says what produced the output.

A stage re-runs a unit of work when its sentinel is missing, unreadable, from another stage
version, or from other parameters (compared by :func:`trainset.store.params_hash`). A sentinel
also records ``inputs``: the fingerprint (:func:`sentinel_fingerprint`) of each upstream
sentinel the output was made from, so a missing or redone upstream makes it stale.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
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
    # Upstream stage name -> fingerprint of its sentinel when this output was made; None in
    # sentinels written before inputs were recorded.
    inputs: dict[str, str] | None = None


def sentinel_path(directory: str | os.PathLike[str]) -> Path:
    """Path of the sentinel of an output directory."""
    return Path(directory) / SENTINEL_NAME


def write_sentinel(
    directory: str | os.PathLike[str],
    stage: str,
    stage_version: int,
    params: Mapping[str, Any],
    counts: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str] | None = None,
) -> Sentinel:
    """Write the sentinel of ``directory`` (atomically, after everything else) and return it.

    ``inputs``: fingerprints of the upstream sentinels the output was made from (None: not
    recorded; staleness then falls back to comparing modification times).
    """
    sentinel = Sentinel(
        stage=stage,
        stage_version=stage_version,
        params_hash=params_hash(params),
        counts=dict(counts or {}),
        # Microseconds: a redone stage always gets a new fingerprint.
        time=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        inputs=None if inputs is None else dict(inputs),
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
            inputs=None if data.get("inputs") is None else dict(data["inputs"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sentinel_fingerprint(directory: str | os.PathLike[str]) -> str | None:
    """sha256 of the sentinel file of ``directory`` (None when there is none): it changes
    whenever the stage is redone, since every sentinel holds the time (to the microsecond) it
    was written."""
    try:
        return hashlib.sha256(sentinel_path(directory).read_bytes()).hexdigest()
    except OSError:
        return None
