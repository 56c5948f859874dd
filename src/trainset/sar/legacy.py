"""The one reader of the plan's pickled ``metadata.npy`` (opt-in with ``trust_pickle``).

The legacy index is ``np.save``'d dict ``{"file_index": [(path, count), ...], ...}``; loading it
executes pickle, so it is refused unless the caller says it trusts the file. It can be
converted into a JSON ``manifest.json`` once (:func:`import_legacy`) and never unpickled again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.sar.manifest import (
    DTYPES,
    Manifest,
    ShardEntry,
    ShardProblem,
    npy_header,
    patch_table,
)
from trainset.store import provenance_record, sha256_file

TRUST_HINT = (
    "it is a pickled object array and loading it runs code from the file; "
    "pass --trust-pickle (trust_pickle=True) only for a file you made yourself, "
    "or convert it once with `trainset sar import-legacy`"
)


def is_pickled_npy(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an ``.npy`` whose dtype is object (needs pickle to load)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except (OSError, ValueError, EOFError):
        return False
    return bool(np.dtype(dtype).hasobject)


def load_legacy_metadata(
    path: str | os.PathLike[str], *, trust_pickle: bool = False
) -> dict[str, Any]:
    """Load the plan's pickled ``metadata.npy`` dict; refuses unless ``trust_pickle`` is true.

    Returns the dict with ``file_index`` checked: a list of (path, count) pairs.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", file=p, expected="metadata.npy", found="nothing")
    if not trust_pickle:
        raise InputError(
            f"refusing to unpickle legacy metadata: {TRUST_HINT}",
            file=p,
            expected="--trust-pickle",
            found="no opt-in",
        )
    try:
        raw = np.load(p, allow_pickle=True)
        meta = raw.item() if isinstance(raw, np.ndarray) and raw.dtype.hasobject else raw
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"not a readable metadata.npy: {exc}", file=p) from exc
    if not isinstance(meta, dict) or "file_index" not in meta:
        raise InputError(
            "legacy metadata must be a dict with 'file_index'",
            file=p,
            key="file_index",
            expected="dict with file_index",
            found=type(meta).__name__,
        )
    index = []
    for i, entry in enumerate(meta["file_index"]):
        try:
            fpath, count = entry
            index.append((str(fpath), int(count)))
        except (TypeError, ValueError) as exc:
            raise InputError(
                "bad file_index entry",
                file=p,
                key=f"file_index[{i}]",
                expected="(path, count)",
                found=entry,
            ) from exc
    meta = dict(meta)
    meta["file_index"] = index
    return meta


def _resolve(fpath: str, base: Path) -> Path:
    p = Path(fpath)
    return (p if p.is_absolute() else (base / p)).resolve()


def _shards_root(paths: list[Path], out: Path) -> Path:
    """The folder the shards are declared relative to: ``out`` when they all lie inside it,
    else the deepest folder that holds them all."""
    if all(p.is_relative_to(out) for p in paths):
        return out
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def _legacy_shape(path: Path, strict: bool) -> tuple[tuple[int, ...], str] | None:
    """(shape, dtype) from the shard's header; None (or, ``strict``, an error) when unreadable."""
    header = npy_header(path)
    if isinstance(header, ShardProblem):
        if not strict:
            return None
        if header.message == "missing shard file":
            raise InputError("shard listed in legacy metadata is missing", file=path)
        raise InputError(f"unreadable shard: {header.message}", file=path)
    return header[0], str(header[1])


def legacy_manifest(
    metadata_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    meta: dict[str, Any],
    *,
    hash_shards: bool = True,
    strict: bool = True,
) -> Manifest:
    """A :class:`Manifest` rooted at ``out_dir`` over the shards of legacy metadata.

    Each legacy file is one source (the plan wrote one shard per scene); row/col are unknown
    (-1). vmin/vmax come from the metadata when present, else they are null. The shards stay
    where they lie: when they are outside ``out_dir`` the manifest declares the folder that
    holds them as ``shards_root``. Without ``hash_shards`` the shards' sha256 are left null
    (reading 182 GB just to open a dataset). ``strict`` refuses a shard that is missing,
    unreadable or disagrees with the metadata; otherwise (for ``verify``, which reports every
    shard) patch size and dtype come from the first readable shard.
    """
    base = Path(metadata_path).resolve().parent
    out = Path(out_dir).resolve()
    paths = [_resolve(fpath, base) for fpath, _ in meta["file_index"]]
    if not paths:
        raise InputError("legacy metadata lists no shard", key="file_index", found=0)
    patch_size, dtype = None, None
    for path, (_, count) in zip(paths, meta["file_index"]):
        found = _legacy_shape(path, strict)
        if found is None:
            continue
        shape, dt = found
        if not strict:
            if len(shape) == 3 and patch_size is None:
                patch_size, dtype = shape[1], dt
            continue
        if len(shape) != 3 or shape[1] != shape[2]:
            raise InputError(
                "legacy shard must be (N, P, P)", file=path, expected="(N, P, P)", found=shape
            )
        if shape[0] != count:
            raise InputError(
                "legacy shard count differs from metadata",
                file=path,
                key="file_index",
                expected=count,
                found=shape[0],
            )
        if patch_size not in (None, shape[1]) or dtype not in (None, dt):
            raise InputError(
                "legacy shards differ in patch size or dtype",
                file=path,
                expected=f"{patch_size} {dtype}",
                found=f"{shape[1]} {dt}",
            )
        patch_size, dtype = shape[1], dt
    if strict and dtype not in DTYPES:
        raise InputError(
            "unsupported shard dtype", file=paths[0], key="dtype", expected=DTYPES, found=dtype
        )
    root = _shards_root(paths, out)
    shards = [
        ShardEntry(
            os.path.relpath(path, root),
            count,
            sha256_file(path) if hash_shards else None,
        )
        for path, (_, count) in zip(paths, meta["file_index"])
    ]
    counts = [count for _, count in meta["file_index"]]
    total = sum(counts)
    unknown = np.full(total, -1)
    table = patch_table(
        {
            "source": np.repeat(np.arange(len(counts)), counts),
            "band": np.ones(total),
            "row": unknown,
            "col": unknown,
        },
        total,
    )
    vmin, vmax = meta.get("vmin"), meta.get("vmax")
    return Manifest(
        root=out,
        patch_size=int(patch_size or 0),
        dtype=dtype if dtype in DTYPES else "float32",
        shards=shards,
        patches=table,
        stride=meta.get("stride"),
        units=str(meta.get("units", "intensity")),
        vmin=None if vmin is None else float(vmin),
        vmax=None if vmax is None else float(vmax),
        clip={"method": "legacy"},
        sources=[
            {"path": os.path.relpath(p, out), "sha256": s.sha256} for p, s in zip(paths, shards)
        ],
        shards_root=os.path.relpath(root, out),
    )


def import_legacy(
    metadata_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    argv: list[str] | None = None,
) -> Path:
    """Convert a pickled ``metadata.npy`` into ``out_dir/manifest.json``; return its path.

    The shards stay where they are: the manifest declares their folder as ``shards_root``
    (relative to ``out_dir``) and lists them relative to it.
    """
    meta = load_legacy_metadata(metadata_path, trust_pickle=trust_pickle)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("output exists and is not a directory", file=out)
    manifest = legacy_manifest(metadata_path, out, meta)
    manifest.provenance = {**provenance_record(argv), "imported_from": str(metadata_path)}
    out.mkdir(parents=True, exist_ok=True)
    return manifest.write(out)
