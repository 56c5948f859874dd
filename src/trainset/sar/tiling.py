"""GeoTIFF -> normalised patches in streamed ``.npy`` shards plus ``manifest.json``.

Two passes over block-aligned windows of bounded size (never a whole raster, never a size a
header claims), each showing progress: pass 1 accumulates global clip bounds in dB (skipped for
``fixed``), pass 2 normalises each strip, cuts ``patch_size`` patches at ``stride``, applies the
quality filter and streams accepted patches into shards. The set is a folder: the new one is
built in a staging folder beside ``--out`` and swapped in whole only when every input succeeded
(:mod:`trainset.store.publish`), under a lock that keeps a second run off the same ``--out``; a
failure or a kill at any moment leaves the old set as it was.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import numpy as np

from trainset.errors import InputError
from trainset.pipeline.progress import Progress
from trainset.sar.geotiff import (
    DEFAULT_MAX_PIXELS,
    RasterInfo,
    check_bands,
    check_raster_limits,
    column_ranges,
    iter_strips,
    iter_windows,
    open_raster,
    raster_env,
    raster_info,
    strip_rows,
)
from trainset.sar.manifest import (
    DTYPES,
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    patch_table,
)
from trainset.sar.preprocessing import (
    CLIP_METHODS,
    DEFAULT_FIXED_VMAX_DB,
    DEFAULT_FIXED_VMIN_DB,
    DEFAULT_HIGH_PCT,
    DEFAULT_LOW_PCT,
    DEFAULT_SIGMA_K,
    check_clip_bounds,
    check_units,
    preprocess_sar_complete,
    to_db,
    to_intensity,
    valid_pixels,
)
from trainset.store import NPY_ALIGN, atomic_path, provenance_record, sha256_file
from trainset.store.atomic import TEMP_MARKER
from trainset.store.codecs import npy_header_bytes
from trainset.store.publish import folder_lock, make_staging, publish_folder, remove_leftovers

# Histogram for streaming percentiles: dB range and bin width (percentiles exact to 0.001 dB
# inside the range; values outside are counted in the edge bins).
HIST_LO_DB = -200.0
HIST_HI_DB = 200.0
HIST_BIN_DB = 0.001
# The reference project's quality filter: keep a patch when >= 90% of its pixels are valid
# and strictly inside (0.01, 0.99) after normalisation.
DEFAULT_QUALITY_LOW = 0.01
DEFAULT_QUALITY_HIGH = 0.99
DEFAULT_QUALITY_FRACTION = 0.9
DEFAULT_SHARD_SIZE = 4096
BAND_MODES = ("separate", "stack")
# Pixels (all bands) of one read window plus the rows buffered with it: bounds the memory of
# both passes whatever the raster's width (about 17 bytes each with their copies: 550 MB; 741 MiB
# peak RSS measured for a 200000 x 1024 raster, benchmarks/sar_tiling.py). A wider raster is
# tiled in column groups.
WINDOW_PIXELS = 2**25


@dataclass(frozen=True)
class ClipSpec:
    """How global clip bounds are chosen: ``percentile:LOW,HIGH``, ``fixed:VMIN,VMAX`` (dB) or
    ``sigma:K``."""

    method: str = "percentile"
    params: tuple[float, ...] = (DEFAULT_LOW_PCT, DEFAULT_HIGH_PCT)

    @classmethod
    def parse(cls, text: str) -> ClipSpec:
        """Parse ``METHOD[:A[,B]]``; a bare method takes the plan's defaults."""
        method, _, rest = text.partition(":")
        method = method.strip()
        defaults = {
            "percentile": (DEFAULT_LOW_PCT, DEFAULT_HIGH_PCT),
            "fixed": (DEFAULT_FIXED_VMIN_DB, DEFAULT_FIXED_VMAX_DB),
            "sigma": (DEFAULT_SIGMA_K,),
        }
        if method not in CLIP_METHODS:
            raise InputError(
                "unknown clip method",
                key="clip",
                expected="percentile:LOW,HIGH | fixed:VMIN,VMAX | sigma:K",
                found=text,
            )
        try:
            params = tuple(float(v) for v in rest.split(",")) if rest else defaults[method]
        except ValueError as exc:
            raise InputError("clip parameters must be numbers", key="clip", found=text) from exc
        if len(params) != len(defaults[method]):
            raise InputError(
                f"'{method}' takes {len(defaults[method])} number(s)", key="clip", found=text
            )
        if method == "percentile" and not 0 <= params[0] < params[1] <= 100:
            raise InputError(
                "percentiles out of order",
                key="clip",
                expected="0 <= LOW < HIGH <= 100",
                found=text,
            )
        if method == "fixed":
            check_clip_bounds(params[0], params[1], method)
        if method == "sigma" and not params[0] > 0:
            raise InputError("sigma K must be > 0", key="clip", found=text)
        return cls(method, params)

    def to_dict(self) -> dict[str, Any]:
        """JSON form with the plan's keyword names."""
        names = {"percentile": ("low_pct", "high_pct"), "fixed": ("vmin", "vmax"), "sigma": ("k",)}
        return {"method": self.method, **dict(zip(names[self.method], self.params))}


@dataclass(frozen=True)
class QualityFilter:
    """Keep a patch when at least ``min_fraction`` of its pixels are valid and in (low, high)."""

    low: float = DEFAULT_QUALITY_LOW
    high: float = DEFAULT_QUALITY_HIGH
    min_fraction: float = DEFAULT_QUALITY_FRACTION

    def __post_init__(self) -> None:
        if not (0.0 <= self.low < self.high <= 1.0 and 0.0 <= self.min_fraction <= 1.0):
            raise InputError(
                "bad quality filter",
                key="quality",
                expected="0 <= low < high <= 1 and 0 <= min_fraction <= 1",
                found=asdict(self),
            )


@dataclass(frozen=True)
class TilingConfig:
    """Everything that shapes a patch set (recorded in the manifest)."""

    patch_size: int = 256
    stride: int = 128
    units: str = "intensity"
    clip: ClipSpec = field(default_factory=ClipSpec)
    quality: QualityFilter = field(default_factory=QualityFilter)
    bands: tuple[int, ...] | None = None  # 1-based; None = every band of each file
    band_mode: str = "separate"
    shard_size: int = DEFAULT_SHARD_SIZE
    dtype: str = "float32"

    def __post_init__(self) -> None:
        check_units(self.units)
        if self.patch_size < 1 or self.stride < 1 or self.shard_size < 1:
            raise InputError(
                "patch size, stride and shard size must be positive",
                key="patch_size/stride/shard_size",
                expected="> 0",
                found=(self.patch_size, self.stride, self.shard_size),
            )
        if self.band_mode not in BAND_MODES:
            raise InputError(
                "unknown band mode", key="band_mode", expected=BAND_MODES, found=self.band_mode
            )
        if self.dtype not in DTYPES:
            raise InputError(
                "unsupported shard dtype", key="dtype", expected=DTYPES, found=self.dtype
            )


class ClipAccumulator:
    """Streaming global clip bounds from valid dB values fed in chunks (memory independent of
    the number of pixels)."""

    def __init__(self, spec: ClipSpec) -> None:
        self.spec = spec
        self.count = 0
        self._nbins = round((HIST_HI_DB - HIST_LO_DB) / HIST_BIN_DB)
        self._hist = np.zeros(self._nbins, dtype=np.int64) if spec.method == "percentile" else None
        self._shift: float | None = None
        self._sum = 0.0
        self._sumsq = 0.0

    def add(self, db: np.ndarray) -> None:
        """Add valid pixel values in dB (any shape; non-finite values are ignored)."""
        values = np.asarray(db, dtype=np.float64).ravel()
        self.add_weighted(values, None)

    def add_weighted(self, db: np.ndarray, weights: np.ndarray | None) -> None:
        """Add dB values (N,) each seen ``weights`` (N,) times (None: once each)."""
        values = np.asarray(db, dtype=np.float64).ravel()
        keep = np.isfinite(values)
        values = values[keep]
        w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()[keep]
        n = values.size if w is None else int(w.sum())
        if n == 0:
            return
        self.count += n
        if self._hist is not None:
            idx = np.floor((values - HIST_LO_DB) / HIST_BIN_DB).astype(np.int64)
            np.clip(idx, 0, self._nbins - 1, out=idx)
            counts = np.bincount(idx, weights=w, minlength=self._nbins)
            self._hist += counts.astype(np.int64) if w is not None else counts
        elif self.spec.method == "sigma":
            if self._shift is None:
                self._shift = float(np.average(values, weights=w))
            centred = values - self._shift
            weighted = centred if w is None else centred * w
            self._sum += float(weighted.sum())
            self._sumsq += float(np.dot(weighted, centred))

    def bounds(self) -> tuple[float, float]:
        """(vmin, vmax) in dB."""
        method, params = self.spec.method, self.spec.params
        if method == "fixed":
            return check_clip_bounds(params[0], params[1], method)
        if self.count == 0:
            raise InputError("no valid pixel in any input raster", key="clip")
        if self._hist is not None:
            cum = np.cumsum(self._hist)
            vmin, vmax = (self._percentile(cum, q) for q in params)
        else:
            mean = self._sum / self.count
            std = float(np.sqrt(max(self._sumsq / self.count - mean * mean, 0.0)))
            centre = mean + (self._shift or 0.0)
            vmin, vmax = centre - params[0] * std, centre + params[0] * std
        return check_clip_bounds(vmin, vmax, method)

    def _percentile(self, cum: np.ndarray, q: float) -> float:
        # numpy's default (linear) percentile: rank q/100*(n-1) between the two order statistics.
        rank = q / 100.0 * (self.count - 1)
        lo_i, hi_i = int(np.floor(rank)), int(np.ceil(rank))
        centres = [
            HIST_LO_DB + (int(np.searchsorted(cum, i, side="right")) + 0.5) * HIST_BIN_DB
            for i in (lo_i, hi_i)
        ]
        return float(centres[0] + (rank - lo_i) * (centres[1] - centres[0]))


class ShardWriter:
    """Stream (channels, P, P) patches into ``shard_00000.npy``... of at most ``shard_size``
    patches each; every shard is written through :func:`trainset.store.atomic_path` with a
    page-aligned header."""

    def __init__(
        self, directory: Path, shard_size: int, channels: int, patch_size: int, dtype: str
    ) -> None:
        self.directory = directory
        self.shard_size = shard_size
        self.channels = channels
        self.patch_size = patch_size
        self.dtype = np.dtype(dtype)
        self.shards: list[dict[str, Any]] = []
        self._stack: ExitStack | None = None
        self._fh: IO[bytes] | None = None
        self._count = 0

    def _header(self, patches: int) -> bytes:
        shape = (patches * self.channels, self.patch_size, self.patch_size)
        return npy_header_bytes(shape, self.dtype, align=NPY_ALIGN)

    def _name(self) -> str:
        return f"shard_{len(self.shards):05d}.npy"

    def add(self, patch: np.ndarray) -> None:
        """Append one (channels, P, P) patch."""
        if self._fh is None:
            self._stack = ExitStack()
            tmp = self._stack.enter_context(atomic_path(self.directory / self._name()))
            self._fh = self._stack.enter_context(open(tmp, "wb"))  # noqa: SIM115
            self._fh.write(self._header(self.shard_size))
            self._count = 0
        self._fh.write(np.ascontiguousarray(patch, dtype=self.dtype).tobytes())
        self._count += 1
        if self._count == self.shard_size:
            self._close_shard()

    def _close_shard(self) -> None:
        assert self._fh is not None and self._stack is not None
        header = self._header(self._count)
        if len(header) != len(self._header(self.shard_size)):
            raise InputError("shard header length changed", expected=NPY_ALIGN, found=len(header))
        self._fh.seek(0)
        self._fh.write(header)
        name = self._name()
        self._stack.close()
        self._fh, self._stack = None, None
        sha = sha256_file(self.directory / name)  # just written: read back from the page cache
        self.shards.append({"path": name, "count": self._count, "sha256": sha})

    @property
    def current(self) -> Path | None:
        """The shard being written, if one is open."""
        return self.directory / self._name() if self._fh is not None else None

    def finish(self) -> list[dict[str, Any]]:
        """Close the last shard; return ``[{"path", "count", "sha256"}]``."""
        if self._fh is not None:
            self._close_shard()
        return self.shards

    def abort(self, exc: BaseException) -> None:
        """Drop the open shard (its temp file is removed); closing a file on a full disk fails
        again, and that second error is dropped with it."""
        if self._stack is not None:
            with contextlib.suppress(OSError):
                self._stack.__exit__(type(exc), exc, exc.__traceback__)
        self._fh, self._stack = None, None


def _integer_range(dtype: np.dtype[Any]) -> tuple[int, int] | None:
    """(min, max) of integer dtypes of at most 16 bits (lookup-table path), else None."""
    dt = np.dtype(dtype)
    if dt.kind in "ui" and dt.itemsize <= 2:
        info = np.iinfo(dt)
        return int(info.min), int(info.max)
    return None


class StripNormalizer:
    """``preprocess_sar_complete`` for raster strips; integer rasters of <= 16 bits go through a
    lookup table (every possible value preprocessed once: one gather per pixel, same numbers)."""

    def __init__(self, dtype: np.dtype[Any] | str, units: str, bounds: tuple[float, float]):
        self.units = units
        self.bounds = bounds
        self.dtype = np.dtype(dtype)
        span = _integer_range(self.dtype)
        self.offset = span[0] if span is not None else 0
        self.lut: np.ndarray | None = None
        self.lut_valid: np.ndarray | None = None
        if span is not None:
            values = np.arange(span[0], span[1] + 1, dtype=np.int64)
            self.lut, self.lut_valid = preprocess_sar_complete(values, *bounds, units)

    def __call__(self, data: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, h, W) raw values and GDAL validity -> (normalized float32, valid bool)."""
        if self.lut is None or self.lut_valid is None or data.dtype != self.dtype:
            return preprocess_sar_complete(data, *self.bounds, self.units, mask=mask)
        idx = data if self.offset == 0 else data.astype(np.int32) - self.offset
        norm = self.lut[idx]
        valid = self.lut_valid[idx] & mask
        norm[~mask] = 0.0
        return norm, valid


def _accumulate_strip(acc: ClipAccumulator, data: np.ndarray, mask: np.ndarray, units: str) -> None:
    """Feed one strip's valid pixels (in dB) to the accumulator; integer strips as counts."""
    valid = valid_pixels(data, units, mask)
    span = _integer_range(data.dtype)
    if span is None:
        acc.add(to_db(to_intensity(data[valid], units)))
        return
    counts = np.bincount((data[valid].astype(np.int64) - span[0]), minlength=1)
    present = np.flatnonzero(counts)
    acc.add_weighted(to_db(to_intensity(present + span[0], units)), counts[present])


@dataclass
class _PatchTable:
    source: list[int] = field(default_factory=list)
    band: list[int] = field(default_factory=list)
    row: list[int] = field(default_factory=list)
    col: list[int] = field(default_factory=list)
    valid_fraction: list[float] = field(default_factory=list)

    def append(self, source: int, band: int, row: int, col: int, valid: float) -> None:
        self.source.append(source)
        self.band.append(band)
        self.row.append(row)
        self.col.append(col)
        self.valid_fraction.append(round(valid, 6))


def _bands_of(info: RasterInfo, config: TilingConfig) -> tuple[int, ...]:
    bands = config.bands if config.bands is not None else tuple(range(1, info.count + 1))
    check_bands(info, bands)
    return bands


def _window_counts(flags: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """(C, P, W) bool -> (C, len(starts)) number of true pixels in each P x P window."""
    per_col = flags.sum(axis=1, dtype=np.int64)
    cum = np.concatenate([np.zeros((per_col.shape[0], 1), np.int64), per_col.cumsum(axis=1)], 1)
    return cum[:, starts + size] - cum[:, starts]


def _column_groups(
    info: RasterInfo, channels: int, config: TilingConfig
) -> list[tuple[int, int, int, int, int]]:
    """Patch columns tiled together so that a group's window (channels x (patch + strip rows)
    x its width) holds at most :data:`WINDOW_PIXELS`: ``(j0, j1, col0, col1, counted)`` with
    patch-column indices ``j0..j1-1``, read columns ``col0..col1-1``, and ``counted`` the end of
    the columns whose valid pixels the group counts (groups count disjoint columns)."""
    size, stride = config.patch_size, config.stride
    rows = strip_rows(info.block_height, stride)
    fit = WINDOW_PIXELS // (channels * (size + rows))
    per_group = (fit - size) // stride + 1 if fit >= size else 0
    if per_group < 1:
        raise InputError(
            "too many bands for one read window; choose fewer with --bands",
            file=info.path,
            key="bands",
            expected=f"<= {WINDOW_PIXELS // (size * (size + rows))} bands",
            found=channels,
        )
    n_cols = (info.width - size) // stride + 1
    groups = []
    for j0 in range(0, n_cols, per_group):
        j1 = min(j0 + per_group, n_cols)
        if j1 == n_cols:
            groups.append((j0, j1, j0 * stride, info.width, info.width))
        else:
            col1 = max((j1 - 1) * stride + size, j1 * stride)
            groups.append((j0, j1, j0 * stride, col1, j1 * stride))
    return groups


def _tile_source(
    src: Any,
    index: int,
    info: RasterInfo,
    bands: tuple[int, ...],
    config: TilingConfig,
    bounds: tuple[float, float],
    writer: ShardWriter,
    table: _PatchTable,
    progress: Progress,
) -> dict[str, int]:
    """Pass 2 for one raster; returns candidate/kept patch counts and valid pixel count.

    Patches come in (row, column, band) order within each column group (one group unless the
    raster is wider than a window holds)."""
    size, stride, q = config.patch_size, config.stride, config.quality
    n_rows = (info.height - size) // stride + 1
    n_cols = (info.width - size) // stride + 1
    area = float(size * size)
    channels = len(bands)
    normalizer = StripNormalizer(info.dtype, config.units, bounds)
    kept = valid_pixels_seen = 0
    for j0, j1, col0, col1, counted in _column_groups(info, channels, config):
        starts = np.arange(j0, j1) * stride - col0  # patch columns within the window
        buf = np.empty((channels, 0, col1 - col0), np.float32)
        buf_valid = np.empty((channels, 0, col1 - col0), bool)
        buf0 = 0
        strips = iter_strips(src, bands, stride, (col0, col1))
        for i in range(n_rows):
            r = i * stride
            while buf0 + buf.shape[1] < r + size:
                _, data, mask = next(strips)
                norm, valid = normalizer(data, mask)
                valid_pixels_seen += int(valid[:, :, : counted - col0].sum())
                buf = np.concatenate([buf, norm], axis=1)
                buf_valid = np.concatenate([buf_valid, valid], axis=1)
                drop = min(max(r - buf0, 0), buf.shape[1])
                buf, buf_valid, buf0 = buf[:, drop:], buf_valid[:, drop:], buf0 + drop
            window = buf[:, r - buf0 : r - buf0 + size]
            wvalid = buf_valid[:, r - buf0 : r - buf0 + size]
            valid_counts = _window_counts(wvalid, starts, size)
            good = wvalid & (window > q.low) & (window < q.high)
            passes = _window_counts(good, starts, size) / area >= q.min_fraction
            if config.band_mode == "stack":
                for j in np.flatnonzero(passes.all(axis=0)):
                    c = int(starts[j])
                    writer.add(window[:, :, c : c + size])
                    table.append(index, 0, r, col0 + c, float(valid_counts[:, j].min()) / area)
                    kept += 1
            else:
                for j, b in zip(*np.nonzero(passes.T)):
                    c = int(starts[j])
                    writer.add(window[b : b + 1, :, c : c + size])
                    table.append(index, bands[b], r, col0 + c, float(valid_counts[b, j]) / area)
                    kept += 1
            progress.update(1, note=info.path.name)
    candidates = n_rows * n_cols * (1 if config.band_mode == "stack" else channels)
    return {"candidates": candidates, "patches": kept, "valid_pixels": valid_pixels_seen}


def _clip_windows(info: RasterInfo, channels: int, config: TilingConfig) -> list[tuple[int, int]]:
    """Column ranges of pass 1: windows of at most :data:`WINDOW_PIXELS` (all bands)."""
    rows = strip_rows(info.block_height, config.stride)
    return column_ranges(info.width, WINDOW_PIXELS // (channels * rows))


def _clip_pass(
    rasters: list[tuple[Any, RasterInfo, tuple[int, ...]]],
    config: TilingConfig,
    stream: TextIO | None,
) -> tuple[float, float]:
    """Pass 1: global clip bounds over the valid pixels of every raster (with progress)."""
    acc = ClipAccumulator(config.clip)
    if config.clip.method == "fixed":
        return acc.bounds()
    plans = [
        (src, info, bands, _clip_windows(info, len(bands), config)) for src, info, bands in rasters
    ]
    total = sum(
        -(-info.height // strip_rows(info.block_height, config.stride)) * len(columns)
        for _, info, _, columns in plans
    )
    with Progress(total, "sar patches 1/2 clip bounds", stream=stream) as progress:
        for src, info, bands, columns in plans:
            before = acc.count
            for *_, data, mask in iter_windows(src, bands, config.stride, columns):
                _accumulate_strip(acc, data, mask, config.units)
                progress.update(1, note=info.path.name)
            if acc.count == before:
                raise InputError(
                    "raster holds no valid pixel (all nodata, masked, <= 0 or non-finite)",
                    file=info.path,
                    expected="at least one valid pixel",
                    found=0,
                )
    return acc.bounds()


def _open_all(
    sources: Sequence[str | os.PathLike[str]],
    config: TilingConfig,
    stack: ExitStack,
    max_pixels: int,
) -> list[tuple[Any, RasterInfo, tuple[int, ...]]]:
    """Open every raster and check it from its header: size limits, patch fit, bands."""
    rasters = []
    for path in sources:
        src = stack.enter_context(open_raster(path))
        info = raster_info(src)
        bands = _bands_of(info, config)
        check_raster_limits(info, bands, max_pixels)
        if info.height < config.patch_size or info.width < config.patch_size:
            raise InputError(
                "raster is smaller than one patch",
                file=info.path,
                expected=f">= {config.patch_size} x {config.patch_size} pixels",
                found=f"{info.height} x {info.width}",
            )
        _column_groups(info, len(bands), config)
        rasters.append((src, info, bands))
    if config.band_mode == "stack" and len({len(b) for _, _, b in rasters}) > 1:
        raise InputError(
            "stacked bands need the same band count in every raster",
            key="bands",
            found={str(i.path): len(b) for _, i, b in rasters},
        )
    return rasters


def _output_folder(out_dir: str | os.PathLike[str]) -> Path:
    """The set folder ``--out`` names (``DIR``, or ``DIR/manifest.json``), symlinks resolved.

    A set is published by replacing this folder as a whole, so it may not be a file, a mount
    point, or the current folder (or one holding it).
    """
    given = Path(out_dir)
    if given.name == MANIFEST_NAME and not given.is_dir():
        given = given.parent
    out = Path(os.path.realpath(given))
    if out.exists() and not out.is_dir():
        raise InputError("output exists and is not a directory", file=out)
    if out.is_dir() and os.path.ismount(out):
        raise InputError(
            "output is a mount point; a set replaces its folder as a whole: give a folder in it",
            file=out,
            expected=f"e.g. --out {out / 'patches'}",
        )
    cwd = Path.cwd().resolve()
    if cwd == out or out in cwd.parents:
        raise InputError(
            "output is the current folder or holds it; a set replaces its folder as a whole: "
            "give a sub-folder",
            file=out,
            expected="e.g. --out patches",
        )
    return out


def _is_leftover(name: str) -> bool:
    """A temp file of an atomic write, or a staging folder that earlier versions made inside
    ``--out``: left by killed runs, replaced with the folder."""
    return name.startswith(".") and (TEMP_MARKER in name or name.startswith(".staging-"))


def _check_replaceable(out: Path) -> None:
    """``out`` must be absent, empty or a patch set (it has ``manifest.json``)."""
    if not out.is_dir() or (out / MANIFEST_NAME).is_file():
        return
    others = sorted(p.name for p in out.iterdir() if not _is_leftover(p.name))
    if others:
        raise InputError(
            "output folder holds files but no patch set (manifest.json); publishing replaces "
            "the whole folder: choose a new or empty folder",
            file=out,
            expected="a new or empty folder, or a patch set",
            found=", ".join(others[:5])
            + (f" and {len(others) - 5} more" if len(others) > 5 else ""),
        )


def _write_error(exc: OSError, path: Path, out: Path) -> OSError:
    """``exc`` naming the file being written and saying that the set in ``out`` is unchanged."""
    return OSError(
        exc.errno,
        f"{exc.strerror or exc} (writing the new set; the set in {out} is unchanged)",
        exc.filename if exc.filename is not None else str(path),
    )


def build_patches(
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: TilingConfig | None = None,
    *,
    argv: list[str] | None = None,
    show_progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Path:
    """Tile GeoTIFFs into normalised patches in ``out_dir`` (shards + ``manifest.json``).

    Patches are (P, P) float32/float16 in [0, 1]; returns the manifest path. ``out_dir`` (a
    folder, or its ``manifest.json``) is replaced as a whole when the new set is complete.
    Raises :class:`InputError` (nothing written, an existing set untouched) for unreadable, too
    small, too large (``max_pixels``: width x height x bands) or all-invalid rasters, when no
    patch passes the quality filter, and when another run is writing ``out_dir``.
    """
    cfg = config or TilingConfig()
    if not sources:
        raise InputError("no input raster given", expected="one or more GeoTIFFs", found=0)
    out = _output_folder(out_dir)
    stream = None if show_progress else io.StringIO()
    with raster_env(), ExitStack() as files:
        rasters = _open_all(sources, cfg, files, max_pixels)
        with folder_lock(out) as locked:
            remove_leftovers(out, locked=locked)
            _check_replaceable(out)
            bounds = _clip_pass(rasters, cfg, stream)
            staging = make_staging(out)
            try:
                _write_set(staging, out, rasters, cfg, bounds, argv, stream)
                publish_folder(staging, out)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return out / MANIFEST_NAME


def _write_set(
    staging: Path,
    out: Path,
    rasters: list[tuple[Any, RasterInfo, tuple[int, ...]]],
    cfg: TilingConfig,
    bounds: tuple[float, float],
    argv: list[str] | None,
    stream: TextIO | None,
) -> None:
    """Pass 2 into ``staging``: every shard, then ``manifest.json`` (for the folder ``out``)."""
    channels = len(rasters[0][2]) if cfg.band_mode == "stack" else 1
    writer = ShardWriter(staging, cfg.shard_size, channels, cfg.patch_size, cfg.dtype)
    table = _PatchTable()
    source_records = []
    total = sum(
        ((i.height - cfg.patch_size) // cfg.stride + 1) * len(_column_groups(i, len(b), cfg))
        for _, i, b in rasters
    )
    try:
        with Progress(total, "sar patches 2/2 tiling", stream=stream) as progress:
            for index, (src, info, bands) in enumerate(rasters):
                counts = _tile_source(src, index, info, bands, cfg, bounds, writer, table, progress)
                if counts["valid_pixels"] == 0:
                    raise InputError(
                        "raster holds no valid pixel in the tiled area (all nodata?)",
                        file=info.path,
                        expected="at least one valid pixel",
                        found=0,
                    )
                source_records.append(_source_record(info, bands, out, counts))
        if not table.source:
            candidates = sum(s["candidates"] for s in source_records)
            raise InputError(
                "no patch passed the quality filter; relax --quality or check --units",
                key="quality",
                expected="at least one patch",
                found=f"0 of {candidates} candidates",
            )
        shards = writer.finish()
        manifest = _build_manifest(cfg, bounds, channels, rasters, shards, table, source_records)
        manifest.provenance = provenance_record(argv)
        manifest.write(staging)
    except OSError as exc:
        path = writer.current or staging / MANIFEST_NAME
        writer.abort(exc)
        raise _write_error(exc, path, out) from exc
    except BaseException as exc:
        writer.abort(exc)
        raise


def _source_record(
    info: RasterInfo, bands: tuple[int, ...], out: Path, counts: dict[str, int]
) -> dict[str, Any]:
    return {
        "path": os.path.relpath(info.path.resolve(), out.resolve()),
        "sha256": sha256_file(info.path),
        "width": info.width,
        "height": info.height,
        "dtype": info.dtype,
        "nodata": "nan" if info.nodata is not None and np.isnan(info.nodata) else info.nodata,
        "crs": info.crs,
        "transform": list(info.transform),
        "bands": list(bands),
        **counts,
    }


def _build_manifest(
    cfg: TilingConfig,
    bounds: tuple[float, float],
    channels: int,
    rasters: list[tuple[Any, RasterInfo, tuple[int, ...]]],
    shards: list[dict[str, Any]],
    table: _PatchTable,
    sources: list[dict[str, Any]],
) -> Manifest:
    return Manifest(
        root=Path("."),
        patch_size=cfg.patch_size,
        dtype=cfg.dtype,
        shards=[ShardEntry(s["path"], s["count"], s["sha256"]) for s in shards],
        patches=patch_table(asdict(table), len(table.source)),
        channels=channels,
        stride=cfg.stride,
        units=cfg.units,
        vmin=float(bounds[0]),
        vmax=float(bounds[1]),
        band_mode=cfg.band_mode,
        bands=list(rasters[0][2]) if cfg.band_mode == "stack" else None,
        clip=cfg.clip.to_dict(),
        quality=asdict(cfg.quality),
        sources=sources,
    )
