"""Check a patch set against its manifest, collecting every failure (the plan's
``verify_patch_files``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainset.sar.legacy import is_pickled_npy, legacy_manifest, load_legacy_metadata
from trainset.sar.manifest import Manifest, ShardProblem
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
    for i, (entry, path) in enumerate(zip(manifest.shards, manifest.shard_paths())):
        problems = manifest.shard_problems(i)
        errors += [(str(p.file), _describe(p)) for p in problems]
        if problems:
            continue
        data = np.load(path, mmap_mode="r", allow_pickle=False)
        problem = _scan_values(data)
        if problem is not None:
            errors.append((str(path), problem))
        del data
        if deep and entry.sha256 is not None and sha256_file(path) != entry.sha256:
            errors.append((str(path), f"sha256 differs from manifest ({entry.sha256[:12]}...)"))
    if deep and manifest.patches_file is not None and manifest.patches_sha256 is not None:
        table = manifest.root / manifest.patches_file
        if sha256_file(table) != manifest.patches_sha256:
            errors.append((str(table), "sha256 of the per-patch table differs from manifest"))
    return errors


def _describe(problem: ShardProblem) -> str:
    """One line: the message, and what was expected and found when the message does not say."""
    if problem.expected is None and problem.found is None:
        return problem.message
    return f"{problem.message} (expected {problem.expected}, found {problem.found})"


def verify_patch_files(
    metadata_path: str | os.PathLike[str], *, deep: bool = False, trust_pickle: bool = False
) -> list[tuple[str, str]]:
    """Verify every shard of a patch set; returns a list of (path, error) for failures.

    ``metadata_path`` is a ``manifest.json``, its directory, or (with ``trust_pickle``) the
    plan's pickled ``metadata.npy``. Checks: the shard path stays inside the shards' root and
    names a regular ``.npy`` file that opens without pickle, with the manifest's count,
    (P, P) shape and dtype, and finite values in [0, 1]; ``deep`` also compares sha256 (of
    every shard and of the per-patch table). An empty list means the set is sound.
    """
    p = Path(metadata_path)
    if p.suffix == ".npy" and is_pickled_npy(p):
        meta = load_legacy_metadata(p, trust_pickle=trust_pickle)
        manifest = legacy_manifest(p, p.resolve().parent, meta, hash_shards=False, strict=False)
        return check_manifest_shards(manifest, deep=deep)
    return check_manifest_shards(Manifest.open(p), deep=deep)
