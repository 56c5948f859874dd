"""Check a patch set against its manifest, collecting every failure (the plan's
``verify_patch_files``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from trainset.sar.legacy import is_pickled_npy, load_legacy_metadata
from trainset.sar.manifest import Manifest, ShardEntry, load_manifest
from trainset.store import sha256_file

# Records checked per step for the value-range scan (bounded memory on any shard size).
_SCAN_RECORDS = 256


def _scan_values(data: np.ndarray) -> str | None:
    """None when every value is finite and in [0, 1], else a description of what was found."""
    lo, hi, bad = np.inf, -np.inf, 0
    for start in range(0, data.shape[0], _SCAN_RECORDS):
        chunk = np.asarray(data[start : start + _SCAN_RECORDS], dtype=np.float32)
        finite = np.isfinite(chunk)
        bad += int(chunk.size - finite.sum())
        if finite.any():
            lo = min(lo, float(chunk[finite].min()))
            hi = max(hi, float(chunk[finite].max()))
    problems = []
    if bad:
        problems.append(f"{bad} non-finite value(s)")
    if data.size and (lo < 0.0 or hi > 1.0):
        problems.append(f"values outside [0, 1]: min {lo}, max {hi}")
    return "; ".join(problems) or None


def check_manifest_shards(manifest: Manifest, *, deep: bool = False) -> list[tuple[str, str]]:
    """Every failure of the shards of ``manifest`` as (shard path, message)."""
    errors: list[tuple[str, str]] = []
    size = manifest.patch_size
    for entry, path in zip(manifest.shards, manifest.shard_paths()):
        expected = entry.count * manifest.channels
        if not path.is_file():
            errors.append((str(path), "missing shard file"))
            continue
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            errors.append((str(path), f"cannot open as .npy: {exc}"))
            continue
        if data.ndim != 3 or data.shape[1:] != (size, size):
            errors.append((str(path), f"expected shape (N, {size}, {size}), found {data.shape}"))
            continue
        if data.shape[0] != expected:
            errors.append((str(path), f"expected {expected} patches, found {data.shape[0]}"))
        if str(data.dtype) != manifest.dtype:
            errors.append((str(path), f"expected dtype {manifest.dtype}, found {data.dtype}"))
        elif (problem := _scan_values(data)) is not None:
            errors.append((str(path), problem))
        del data
        if deep and entry.sha256 is not None and sha256_file(path) != entry.sha256:
            errors.append((str(path), f"sha256 differs from manifest ({entry.sha256[:12]}...)"))
    return errors


def verify_patch_files(
    metadata_path: str | os.PathLike[str], *, deep: bool = False, trust_pickle: bool = False
) -> list[tuple[str, str]]:
    """Verify every shard of a patch set; returns a list of (path, error) for failures.

    ``metadata_path`` is a ``manifest.json``, its directory, or (with ``trust_pickle``) the
    plan's pickled ``metadata.npy``. Checks: the shard exists, opens as ``.npy`` without pickle,
    has the manifest's count, (P, P) shape and dtype, and finite values in [0, 1]; ``deep``
    also compares sha256. An empty list means the set is sound.
    """
    p = Path(metadata_path)
    if p.suffix == ".npy" and is_pickled_npy(p):
        meta = load_legacy_metadata(p, trust_pickle=trust_pickle)
        return check_manifest_shards(_legacy_manifest(p, meta), deep=deep)
    return check_manifest_shards(load_manifest(p), deep=deep)


def _legacy_manifest(path: Path, meta: dict[str, Any]) -> Manifest:
    """A manifest view of legacy metadata (patch size from the first readable shard)."""
    base = path.resolve().parent
    shards = [ShardEntry(str(f), c, None) for f, c in meta["file_index"]]
    patch_size = 0
    for entry in shards:
        try:
            shape = np.load(base / entry.path, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError, EOFError):
            continue
        if len(shape) == 3:
            patch_size = int(shape[1])
            break
    total = sum(s.count for s in shards)
    return Manifest(
        root=base,
        patch_size=patch_size,
        stride=None,
        units=str(meta.get("units", "intensity")),
        dtype="float32",
        channels=1,
        vmin=meta.get("vmin"),
        vmax=meta.get("vmax"),
        shards=shards,
        patches={k: [0] * total for k in ("source", "band", "row", "col")},
        sources=[],
        data={},
    )
