"""The SAR patch manifest: ``manifest.json`` plus a per-patch table beside the shards.

:class:`Manifest` is the one owner of the format: it reads (:meth:`Manifest.open`), checks,
builds (:meth:`Manifest.from_dict`) and writes (:meth:`Manifest.write`) it, and it says what a
shard must look like (:meth:`Manifest.shard_problems`).

Layout, version 2::

    manifest.json  {"format": "trainset.sar.patches", "version": 2, "patch_size", "stride",
                    "units", "dtype", "channels", "bands", "band_mode", "vmin", "vmax",
                    "clip": {...}, "quality": {...}, "shards_root": ".",
                    "shards": [{"path": "shard_00000.npy", "count", "sha256"}],
                    "patches": {"path": "patches-<sha256[:16]>.npy", "count", "sha256"},
                    "sources": [{"path", "sha256", ...}], "provenance": {...}}
    patches-*.npy  one record whose fields are the (N,) columns: source int32, band int32,
                   row int32, col int32, valid_fraction float32 (NaN where unknown); each
                   column is contiguous, so reading one (the sources, for a split) reads only
                   its pages

Version 1 (still read) held the per-patch table as JSON lists under ``"patches"``: 5 million
patches made a 200 MB JSON that took seconds and gigabytes to open; the ``.npy`` table is
memory-mapped (``benchmarks/manifest_scale.py``). The table's file name carries its sha256, so
a new ``manifest.json`` (written last, atomically) never points at a half-written table and
an old one keeps pointing at its own.

Shard paths are relative to the shards' root: the manifest's folder, or ``shards_root`` when
the manifest declares one (``trainset sar import-legacy`` points at legacy shards where they
lie). A shard must resolve inside that root and be a regular ``.npy`` file. A shard holds
``count * channels`` records of (patch_size, patch_size): patch ``i`` of a shard is records
``i*channels .. (i+1)*channels - 1``. Table row ``i`` is patch ``i`` in shard order;
``source`` indexes ``sources``; ``band`` is the 1-based band (0 when bands are stacked).
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainset.errors import InputError
from trainset.store import atomic_write_bytes, atomic_write_text, read_json, sha256_bytes

if TYPE_CHECKING:
    from trainset.loading.shards import ShardReader

FORMAT = "trainset.sar.patches"
VERSION = 2  # the version written
READ_VERSIONS = (1, 2)  # 1: per-patch table as JSON lists
MANIFEST_NAME = "manifest.json"
TABLE_PREFIX = "patches-"
PATCH_KEYS = ("source", "band", "row", "col")  # required per-patch columns
# The per-patch columns and their dtypes on disk.
PATCH_COLUMNS = (
    ("source", "<i4"),
    ("band", "<i4"),
    ("row", "<i4"),
    ("col", "<i4"),
    ("valid_fraction", "<f4"),
)
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class ShardEntry:
    """One shard: path relative to the shards' root, number of patches, sha256 (hex) or None."""

    path: str
    count: int
    sha256: str | None


@dataclass(frozen=True)
class ShardProblem:
    """What is wrong with one shard: the file, the manifest key, expected and found."""

    file: Path
    key: str
    message: str
    expected: object = None
    found: object = None

    def error(self) -> InputError:
        """The problem as the error a loader raises."""
        return InputError(
            self.message, file=self.file, key=self.key, expected=self.expected, found=self.found
        )


def table_dtype(n: int) -> np.dtype[Any]:
    """The per-patch table of ``n`` patches: one record whose fields are (n,) columns."""
    return np.dtype([(name, dt, (n,)) for name, dt in PATCH_COLUMNS])


def patch_table(columns: Mapping[str, Any], n: int) -> np.ndarray:
    """The per-patch table (a 0-d record of (n,) columns: ``table["source"]`` is a column) from
    per-patch lists or arrays; a missing or None ``valid_fraction`` becomes NaN."""
    table = np.zeros((), table_dtype(n))
    for key in PATCH_KEYS:
        table[key] = np.asarray(columns[key], dtype=np.int64)
    valid = columns.get("valid_fraction")
    if valid is None:
        table["valid_fraction"] = np.nan
    else:
        table["valid_fraction"] = np.array(
            [np.nan if v is None else v for v in valid] if isinstance(valid, list) else valid,
            dtype=np.float64,
        )
    return table


@dataclass
class Manifest:
    """A patch set: shards, per-patch table (:attr:`patches`), sources and how it was made.

    ``root`` is the folder of ``manifest.json``; shard paths are relative to
    :attr:`shards_dir` (``root / shards_root``).
    """

    root: Path
    patch_size: int
    dtype: str
    shards: list[ShardEntry]
    patches: np.ndarray  # patch_table(): columns by name; memory-mapped when read from a file
    channels: int = 1
    stride: int | None = None
    units: str = "intensity"
    vmin: float | None = None
    vmax: float | None = None
    band_mode: str = "separate"
    bands: list[int] | None = None
    clip: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] | None = None
    shards_root: str = "."
    patches_file: str | None = None
    patches_sha256: str | None = None

    # -- reading -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path_or_dir: str | os.PathLike[str]) -> Manifest:
        """Read and check ``manifest.json`` (given it or its folder), version 1 or 2."""
        path = find_manifest(path_or_dir)
        data = read_json(path)
        if not isinstance(data, dict):
            raise InputError("manifest must be a JSON object", file=path, found=type(data).__name__)
        return cls.from_dict(data, path.parent, source=path)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], root: Path, *, source: Path | None = None
    ) -> Manifest:
        """Check a manifest mapping (version 1 or 2) and return it rooted at ``root``.

        Version 2 reads its per-patch table from ``root``; version 1 (and a mapping being built)
        carries it as lists.
        """
        where = source if source is not None else root / MANIFEST_NAME
        if data.get("format") != FORMAT:
            raise InputError(
                "not a SAR patch manifest",
                file=where,
                key="format",
                expected=FORMAT,
                found=data.get("format"),
            )
        version = data.get("version")
        if version not in READ_VERSIONS:
            raise InputError(
                "unsupported manifest version",
                file=where,
                key="version",
                expected=" or ".join(map(str, READ_VERSIONS)),
                found=version,
            )
        patch_size = _need(data, "patch_size", int, where)
        dtype = _need(data, "dtype", str, where)
        if dtype not in DTYPES:
            raise InputError(
                "unsupported dtype", file=where, key="dtype", expected=DTYPES, found=dtype
            )
        shards_root = data.get("shards_root", ".")
        if not isinstance(shards_root, str) or not shards_root:
            raise InputError(
                "shards_root must be a folder path",
                file=where,
                key="shards_root",
                expected="a non-empty string",
                found=shards_root,
            )
        shards = [
            _shard_entry(raw, i, where) for i, raw in enumerate(_need(data, "shards", list, where))
        ]
        total = sum(s.count for s in shards)
        raw_patches = _need(data, "patches", dict, where)
        patches_file = patches_sha = None
        if "path" in raw_patches:
            patches_file = str(raw_patches["path"])
            patches_sha = raw_patches.get("sha256")
            table = _read_table(root, patches_file, total, where)
        else:
            for key in PATCH_KEYS:
                values = raw_patches.get(key)
                if not isinstance(values, (list, np.ndarray)) or len(values) != total:
                    raise InputError(
                        "per-patch list has the wrong length",
                        file=where,
                        key=f"patches.{key}",
                        expected=f"{total} entries",
                        found=len(values) if isinstance(values, (list, np.ndarray)) else values,
                    )
            table = patch_table(raw_patches, total)
        vmin, vmax = data.get("vmin"), data.get("vmax")
        return cls(
            root=Path(root),
            patch_size=patch_size,
            dtype=dtype,
            shards=shards,
            patches=table,
            channels=int(data.get("channels", 1)),
            stride=data.get("stride"),
            units=str(data.get("units", "intensity")),
            vmin=None if vmin is None else float(vmin),
            vmax=None if vmax is None else float(vmax),
            band_mode=str(data.get("band_mode", "separate")),
            bands=data.get("bands"),
            clip=data.get("clip"),
            quality=data.get("quality"),
            sources=list(data.get("sources", [])),
            provenance=data.get("provenance"),
            shards_root=shards_root,
            patches_file=patches_file,
            patches_sha256=patches_sha,
        )

    # -- writing -------------------------------------------------------------------------------
    def to_dict(self, patches: dict[str, Any]) -> dict[str, Any]:
        """The ``manifest.json`` mapping, with ``patches`` as the per-patch entry."""
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "patch_size": self.patch_size,
            "stride": self.stride,
            "units": self.units,
            "dtype": self.dtype,
            "channels": self.channels,
            "band_mode": self.band_mode,
            "bands": self.bands,
            "vmin": self.vmin,
            "vmax": self.vmax,
            "clip": self.clip,
            "quality": self.quality,
            "shards_root": self.shards_root,
            "shards": [{"path": s.path, "count": s.count, "sha256": s.sha256} for s in self.shards],
            "patches": patches,
            "sources": self.sources,
        }
        if self.provenance is not None:
            data["provenance"] = self.provenance
        return data

    def write(self, directory: str | os.PathLike[str]) -> Path:
        """Write the table and then ``manifest.json`` into ``directory`` (both atomically);
        tables of earlier manifests in that folder are removed afterwards. Returns the
        manifest's path; ``self`` is re-rooted there."""
        root = Path(directory)
        n = self.num_patches
        lengths = [len(self.patches[name]) for name, _ in PATCH_COLUMNS]
        if lengths != [n] * len(PATCH_COLUMNS):
            raise InputError(
                "per-patch table does not match the shards",
                key="patches",
                expected=f"{n} rows in every column",
                found=lengths,
            )
        table = patch_table({name: self.patches[name] for name, _ in PATCH_COLUMNS}, n)
        buf = io.BytesIO()
        np.save(buf, table, allow_pickle=False)
        blob = buf.getvalue()
        digest = sha256_bytes(blob)
        name = f"{TABLE_PREFIX}{digest[:16]}.npy"
        atomic_write_bytes(root / name, blob)
        entry = {"path": name, "count": n, "sha256": digest}
        data = self.to_dict(entry)
        lines = [f" {json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in data.items()]
        path = atomic_write_text(root / MANIFEST_NAME, "{\n" + ",\n".join(lines) + "\n}\n")
        for old in root.glob(f"{TABLE_PREFIX}*.npy"):
            if old.name != name:
                old.unlink(missing_ok=True)
        self.root, self.patches_file, self.patches_sha256 = root, name, digest
        return path

    # -- what it describes ---------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The manifest file."""
        return self.root / MANIFEST_NAME

    @property
    def shards_dir(self) -> Path:
        """The folder shard paths are relative to (resolved)."""
        return (self.root / self.shards_root).resolve()

    def shard_paths(self) -> list[Path]:
        """Absolute shard paths, in order."""
        base = self.shards_dir
        return [(base / s.path).resolve() for s in self.shards]

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

    # -- shards ----------------------------------------------------------------------------------
    def shard_problems(self, index: int) -> list[ShardProblem]:
        """What is wrong with shard ``index`` as far as its path and ``.npy`` header tell
        (cheap: no data is read). Empty when the shard may be read."""
        entry = self.shards[index]
        key = f"shards[{index}]"
        base = self.shards_dir
        path = (base / entry.path).resolve()
        if not path.is_relative_to(base):
            where = (
                "the set's folder (shards elsewhere need a declared shards_root: re-run "
                "`trainset sar import-legacy` for a legacy set)"
                if self.shards_root == "."
                else "the declared shards_root"
            )
            return [
                ShardProblem(
                    path,
                    f"{key}.path",
                    f"shard path leaves {where}",
                    expected=f"a path inside {base}",
                    found=entry.path,
                )
            ]
        if path.suffix != ".npy":
            return [ShardProblem(path, f"{key}.path", "not an .npy file", ".npy", path.suffix)]
        header = npy_header(path)
        if isinstance(header, ShardProblem):
            return [ShardProblem(path, key, header.message, header.expected, header.found)]
        shape, dt, fortran, offset = header
        size = self.patch_size
        want = entry.count * self.channels
        if dt.hasobject:
            return [ShardProblem(path, key, "holds pickled objects, not patches", self.dtype, dt)]
        if len(shape) != 3 or shape[1:] != (size, size):
            return [
                ShardProblem(
                    path, key, "records have the wrong shape", f"(N, {size}, {size})", shape
                )
            ]
        problems = []
        if shape[0] != want:
            problems.append(
                ShardProblem(
                    path, f"{key}.count", "record count differs from the manifest", want, shape[0]
                )
            )
        if str(dt) != self.dtype:
            problems.append(
                ShardProblem(path, "dtype", "dtype differs from the manifest", self.dtype, str(dt))
            )
        if fortran:
            problems.append(ShardProblem(path, key, "stored in Fortran order", "C order", "F"))
        need = offset + int(np.prod(shape)) * dt.itemsize
        if not problems and os.stat(path).st_size < need:
            problems.append(
                ShardProblem(
                    path, key, "shard is truncated", f"{need} bytes", os.stat(path).st_size
                )
            )
        return problems

    def open_reader(self) -> ShardReader:
        """A :class:`ShardReader` over the shards, after checking every shard's path and header
        against the manifest; the first problem is raised as an :class:`InputError` naming the
        file, the key, what was expected and what was found."""
        from trainset.loading.shards import ShardReader  # torch stays out of `sar verify`

        for i in range(len(self.shards)):
            problems = self.shard_problems(i)
            if problems:
                raise problems[0].error()
        return ShardReader(self.shard_paths(), self.counts())


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any], bool, int] | ShardProblem:
    """(shape, dtype, fortran, data offset) of the regular ``.npy`` file ``path``, or what is
    wrong with it. Reads the header only, and never opens a FIFO or device (which can block)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return ShardProblem(path, "", "missing shard file")
    except OSError as exc:
        return ShardProblem(path, "", f"cannot stat shard: {exc.strerror}")
    if not stat.S_ISREG(mode):
        return ShardProblem(path, "", "not a regular file", "a regular file", _kind(mode))
    try:
        with open(path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
            except ValueError:
                return ShardProblem(
                    path, "", "not an .npy file (no .npy magic string at its start)"
                )
            if version == (1, 0):
                shape, fortran, dt = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dt = np.lib.format.read_array_header_2_0(fh)
            return tuple(int(s) for s in shape), np.dtype(dt), bool(fortran), fh.tell()
    except (ValueError, EOFError) as exc:
        return ShardProblem(path, "", f"cannot open as .npy: bad header ({exc})")
    except OSError as exc:
        return ShardProblem(path, "", f"cannot open as .npy: {exc.strerror}")


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in data:
        raise InputError("required key is missing", file=path, key=key, expected=key, found=None)
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(
            "wrong type", file=path, key=key, expected=kind, found=type(value).__name__
        )
    return value


def _shard_entry(raw: Any, i: int, where: Path) -> ShardEntry:
    if not isinstance(raw, dict) or "path" not in raw or "count" not in raw:
        raise InputError(
            "bad shard entry", file=where, key=f"shards[{i}]", expected="{path, count}", found=raw
        )
    if Path(raw["path"]).is_absolute():
        raise InputError(
            "shard path must be relative to the manifest",
            file=where,
            key=f"shards[{i}].path",
            expected="relative path",
            found=raw["path"],
        )
    return ShardEntry(str(raw["path"]), int(raw["count"]), raw.get("sha256"))


def _read_table(root: Path, name: str, total: int, where: Path) -> np.ndarray:
    """Memory-map the per-patch table ``root/name`` and check it against the shards."""
    if Path(name).name != name or not name.endswith(".npy"):
        raise InputError(
            "per-patch table must be an .npy file beside the manifest",
            file=where,
            key="patches.path",
            expected="a file name ending in .npy",
            found=name,
        )
    path = root / name
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise InputError("per-patch table is not a regular file", file=path, key="patches.path")
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as exc:
        raise InputError("per-patch table is missing", file=path, key="patches.path") from exc
    except (OSError, ValueError) as exc:
        raise InputError(
            f"per-patch table unreadable: {exc}", file=path, key="patches.path"
        ) from exc
    names = table.dtype.names or ()
    if table.shape != () or any(k not in names for k, _ in PATCH_COLUMNS):
        raise InputError(
            "per-patch table has the wrong layout",
            file=path,
            key="patches",
            expected=f"one record of columns {[k for k, _ in PATCH_COLUMNS]}",
            found=f"shape {table.shape}, fields {list(names)}",
        )
    lengths = {len(table[k]) for k, _ in PATCH_COLUMNS}
    if lengths != {total}:
        raise InputError(
            "per-patch table has the wrong length",
            file=path,
            key="patches.count",
            expected=f"{total} rows (the shards' patches)",
            found=", ".join(map(str, sorted(lengths))),
        )
    return table


def find_manifest(path_or_dir: str | os.PathLike[str]) -> Path:
    """``DIR`` -> ``DIR/manifest.json``; a ``.json`` file is returned as it is."""
    p = Path(path_or_dir)
    return p / MANIFEST_NAME if p.is_dir() else p


def load_manifest(path_or_dir: str | os.PathLike[str]) -> Manifest:
    """Read and check ``manifest.json`` (given it or its folder): :meth:`Manifest.open`."""
    return Manifest.open(path_or_dir)


def write_manifest(directory: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Check a manifest mapping (per-patch columns as lists or arrays) and write it into
    ``directory`` in the current format: :meth:`Manifest.write`."""
    return Manifest.from_dict(data, Path(directory)).write(directory)
