"""The SAR patch manifest: ``manifest.json`` beside the ``.npy`` shards it describes.

Layout (agreed with the loading engineer)::

    {"format": "trainset.sar.patches", "version": 1, "patch_size", "stride", "units", "dtype",
     "channels", "bands", "band_mode", "vmin", "vmax", "clip": {...}, "quality": {...},
     "shards": [{"path": "shard_00000.npy", "count", "sha256"}],
     "patches": {"source": [...], "band": [...], "row": [...], "col": [...],
                 "valid_fraction": [...]},
     "sources": [{"path", "sha256", ...}], "provenance": {...}}

Shard paths are relative to the manifest's directory. A shard holds ``count * channels``
records of shape (patch_size, patch_size): patch ``i`` of a shard is records
``i*channels .. (i+1)*channels - 1``. ``patches`` has one entry per patch in shard order;
``source`` indexes ``sources``; ``band`` is the 1-based band (0 when bands are stacked).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.store import atomic_write_text, read_json

FORMAT = "trainset.sar.patches"
VERSION = 1
MANIFEST_NAME = "manifest.json"
PATCH_KEYS = ("source", "band", "row", "col")
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class ShardEntry:
    """One shard: path relative to the manifest, number of patches, sha256 (hex) or None."""

    path: str
    count: int
    sha256: str | None


@dataclass
class Manifest:
    """A loaded ``manifest.json``; ``root`` is the directory shard paths are relative to."""

    root: Path
    patch_size: int
    stride: int | None
    units: str
    dtype: str
    channels: int
    vmin: float | None
    vmax: float | None
    shards: list[ShardEntry]
    patches: dict[str, list[Any]]
    sources: list[dict[str, Any]]
    data: dict[str, Any] = field(repr=False)

    @property
    def path(self) -> Path:
        """The manifest file."""
        return self.root / MANIFEST_NAME

    def shard_paths(self) -> list[Path]:
        """Absolute shard paths, in order."""
        return [(self.root / s.path).resolve() for s in self.shards]

    def counts(self) -> list[int]:
        """Records per shard (patches x channels): the ``counts`` a ShardReader expects."""
        return [s.count * self.channels for s in self.shards]

    def patch_counts(self) -> list[int]:
        """Patches per shard."""
        return [s.count for s in self.shards]

    @property
    def num_patches(self) -> int:
        """Total number of patches."""
        return sum(s.count for s in self.shards)

    def source_of_patches(self) -> np.ndarray:
        """(N,) int64 source index of every patch, in shard order."""
        return np.asarray(self.patches["source"], dtype=np.int64)


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in data:
        raise InputError("required key is missing", file=path, key=key, expected=key, found=None)
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(
            "wrong type", file=path, key=key, expected=kind, found=type(value).__name__
        )
    return value


def manifest_from_dict(data: dict[str, Any], root: Path, *, source: Path | None = None) -> Manifest:
    """Check a manifest mapping and return a :class:`Manifest` rooted at ``root``."""
    where = source if source is not None else root / MANIFEST_NAME
    if data.get("format") != FORMAT:
        raise InputError(
            "not a SAR patch manifest",
            file=where,
            key="format",
            expected=FORMAT,
            found=data.get("format"),
        )
    if data.get("version") != VERSION:
        raise InputError(
            "unsupported manifest version",
            file=where,
            key="version",
            expected=VERSION,
            found=data.get("version"),
        )
    patch_size = _need(data, "patch_size", int, where)
    dtype = _need(data, "dtype", str, where)
    if dtype not in DTYPES:
        raise InputError("unsupported dtype", file=where, key="dtype", expected=DTYPES, found=dtype)
    channels = int(data.get("channels", 1))
    shards = []
    for i, raw in enumerate(_need(data, "shards", list, where)):
        if not isinstance(raw, dict) or "path" not in raw or "count" not in raw:
            raise InputError(
                "bad shard entry",
                file=where,
                key=f"shards[{i}]",
                expected="{path, count}",
                found=raw,
            )
        if Path(raw["path"]).is_absolute():
            raise InputError(
                "shard path must be relative to the manifest",
                file=where,
                key=f"shards[{i}].path",
                expected="relative path",
                found=raw["path"],
            )
        shards.append(ShardEntry(str(raw["path"]), int(raw["count"]), raw.get("sha256")))
    patches = _need(data, "patches", dict, where)
    total = sum(s.count for s in shards)
    for key in PATCH_KEYS:
        values = patches.get(key)
        if not isinstance(values, list) or len(values) != total:
            raise InputError(
                "per-patch list has the wrong length",
                file=where,
                key=f"patches.{key}",
                expected=f"{total} entries",
                found=len(values) if isinstance(values, list) else values,
            )
    vmin, vmax = data.get("vmin"), data.get("vmax")
    return Manifest(
        root=root,
        patch_size=patch_size,
        stride=data.get("stride"),
        units=str(data.get("units")),
        dtype=dtype,
        channels=channels,
        vmin=None if vmin is None else float(vmin),
        vmax=None if vmax is None else float(vmax),
        shards=shards,
        patches=patches,
        sources=list(data.get("sources", [])),
        data=data,
    )


def find_manifest(path_or_dir: str | os.PathLike[str]) -> Path:
    """``DIR`` -> ``DIR/manifest.json``; a ``.json`` file is returned as it is."""
    p = Path(path_or_dir)
    return p / MANIFEST_NAME if p.is_dir() else p


def load_manifest(path_or_dir: str | os.PathLike[str]) -> Manifest:
    """Read and check ``manifest.json`` (given it or its directory)."""
    path = find_manifest(path_or_dir)
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError("manifest must be a JSON object", file=path, found=type(data).__name__)
    return manifest_from_dict(data, path.parent, source=path)


def write_manifest(directory: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Check ``data`` and write it atomically as ``directory/manifest.json``.

    One top-level key per line, each value compact (per-patch lists stay one line each).
    """
    root = Path(directory)
    manifest_from_dict(data, root)
    lines = [f" {json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in data.items()]
    return atomic_write_text(root / MANIFEST_NAME, "{\n" + ",\n".join(lines) + "\n}\n")
