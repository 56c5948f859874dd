"""GeoTIFF access for tiling: open with clear errors, check what a header claims, read
block-aligned windows.

rasterio is imported lazily (``pip install 'trainset[sar]'``), so the rest of trainset works
without it. A raster is never read whole: :func:`iter_windows` yields windows whose height is a
multiple of the file's block height and whose width is bounded, together with the GDAL validity
mask (nodata, internal masks and alpha honoured). Nothing is allocated by the size a header
claims: :func:`check_raster_limits` refuses a raster beyond ``max_pixels`` or whose blocks GDAL
would have to read whole into more than :data:`MAX_BLOCK_PIXELS`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError

# Upper bound on rows read at once when a file's blocks are taller (e.g. one strip per file).
MAX_STRIP_ROWS = 1024
# Largest raster (width x height x bands used) tiled unless --max-pixels raises it: 65536 x 65536
# pixels of one band. A 4 KB header can claim 1e8 x 1e8; the time to read grows with the pixels.
DEFAULT_MAX_PIXELS = 2**32
# Largest GDAL block (pixels, all interleaved bands): GDAL reads a block whole, so a compressed
# single-strip file is decoded into one allocation of this size (re-tile such files).
MAX_BLOCK_PIXELS = 2**27
# GDAL block cache while tiling, in MB. Every block is read once per pass, so caching gains
# nothing and GDAL's default (5% of RAM) only grows the resident memory.
GDAL_CACHE_MB = 64


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError as exc:
        raise InputError(
            "rasterio is required to read GeoTIFFs; install it with pip install 'trainset[sar]'"
        ) from exc
    return rasterio


def raster_env() -> Any:
    """A ``rasterio.Env`` with GDAL's block cache capped at :data:`GDAL_CACHE_MB`."""
    return _rasterio().Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


@dataclass(frozen=True)
class RasterInfo:
    """What tiling needs to know about one raster (sizes in pixels, bands 1-based)."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    block_height: int
    crs: str | None
    transform: tuple[float, ...]
    block_width: int
    block_pixels: int  # one GDAL block, all bands it interleaves


def open_raster(path: str | os.PathLike[str]) -> Any:
    """Open a raster with rasterio; a missing file or a non-raster raises :class:`InputError`."""
    rasterio = _rasterio()
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", file=p, expected="a GeoTIFF", found="nothing")
    if p.is_dir():
        raise InputError("is a directory", file=p, expected="a GeoTIFF", found="directory")
    try:
        return rasterio.open(p)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(
            f"not a readable raster: {exc}", file=p, expected="a GeoTIFF", found="unreadable"
        ) from exc


def raster_info(src: Any) -> RasterInfo:
    """Sizes, dtype, nodata, block shape, CRS and affine transform of an open raster."""
    block_h, block_w = (int(v) for v in src.block_shapes[0]) if src.block_shapes else (1, 1)
    pixel_interleaved = getattr(src.interleaving, "value", None) == "PIXEL"
    interleaved = int(src.count) if pixel_interleaved else 1
    return RasterInfo(
        path=Path(src.name),
        width=int(src.width),
        height=int(src.height),
        count=int(src.count),
        dtype=str(src.dtypes[0]),
        nodata=None if src.nodata is None else float(src.nodata),
        block_height=max(block_h, 1),
        crs=src.crs.to_string() if src.crs is not None else None,
        transform=tuple(float(v) for v in tuple(src.transform)[:6]),
        block_width=max(block_w, 1),
        block_pixels=max(block_h, 1) * max(block_w, 1) * interleaved,
    )


def check_raster_limits(info: RasterInfo, bands: Sequence[int], max_pixels: int) -> None:
    """Raise :class:`InputError` for a raster beyond ``max_pixels`` (width x height x bands) or
    with blocks over :data:`MAX_BLOCK_PIXELS`, from its header alone (nothing is read)."""
    pixels = info.width * info.height * len(bands)
    if pixels > max_pixels:
        raise InputError(
            f"raster too large: {info.width} x {info.height} pixels x {len(bands)} band(s); "
            "raise --max-pixels if the size is real (time grows with it)",
            file=info.path,
            key="max_pixels",
            expected=f"<= {max_pixels:,} pixels",
            found=f"{pixels:,}",
        )
    if info.block_pixels > MAX_BLOCK_PIXELS:
        raise InputError(
            f"blocks of {info.block_height} x {info.block_width} pixels: GDAL reads a block "
            "whole; re-tile the file (gdal_translate -co TILED=YES IN OUT)",
            file=info.path,
            key="block size",
            expected=f"<= {MAX_BLOCK_PIXELS:,} pixels per block",
            found=f"{info.block_pixels:,}",
        )


def check_bands(info: RasterInfo, bands: Sequence[int]) -> None:
    """Raise :class:`InputError` unless every band (1-based) exists in the raster."""
    bad = [b for b in bands if not 1 <= b <= info.count]
    if bad:
        raise InputError(
            "band not in raster",
            file=info.path,
            key="bands",
            expected=f"bands 1..{info.count}",
            found=bad,
        )


def strip_rows(block_height: int, min_rows: int) -> int:
    """Rows per read: the smallest multiple of the block height >= ``min_rows``.

    Blocks taller than :data:`MAX_STRIP_ROWS` (a whole file in one strip) are read in chunks
    of ``max(min_rows, MAX_STRIP_ROWS)`` rows instead.
    """
    if block_height > MAX_STRIP_ROWS:
        return max(min_rows, MAX_STRIP_ROWS)
    return block_height * max(1, -(-min_rows // block_height))


def column_ranges(width: int, max_columns: int) -> list[tuple[int, int]]:
    """Split ``range(width)`` into consecutive ``(col0, col1)`` of at most ``max_columns``."""
    step = max(int(max_columns), 1)
    return [(c, min(c + step, width)) for c in range(0, width, step)]


def iter_windows(
    src: Any, bands: Sequence[int], min_rows: int, columns: Sequence[tuple[int, int]]
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield ``(row0, col0, data, valid)`` windows top to bottom, each row of windows over
    ``columns`` left to right.

    ``data`` is (C, h, w) in the file's dtype, ``valid`` (C, h, w) bool from GDAL's masks
    (nodata, per-dataset mask, alpha); window starts are multiples of the block height.
    """
    rasterio = _rasterio()
    window_cls = rasterio.windows.Window
    info = raster_info(src)
    rows = strip_rows(info.block_height, min_rows)
    indexes = [int(b) for b in bands]
    for row0 in range(0, info.height, rows):
        h = min(rows, info.height - row0)
        for col0, col1 in columns:
            window = window_cls(col0, row0, col1 - col0, h)
            try:
                data = src.read(indexes, window=window)
                masks = src.read_masks(indexes, window=window)
            except rasterio.errors.RasterioIOError as exc:
                raise InputError(
                    f"cannot read rows {row0}..{row0 + h}, columns {col0}..{col1}: {exc}",
                    file=info.path,
                ) from exc
            yield row0, col0, data, masks > 0


def iter_strips(
    src: Any, bands: Sequence[int], min_rows: int, columns: tuple[int, int] | None = None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(row0, data, valid)`` strips covering the raster top to bottom over ``columns``
    (``(col0, col1)``, default: the full width); see :func:`iter_windows`."""
    cols = columns if columns is not None else (0, int(src.width))
    for row0, _, data, valid in iter_windows(src, bands, min_rows, [cols]):
        yield row0, data, valid
