"""GeoTIFF access for tiling: open with clear errors, read block-aligned full-width strips.

rasterio is imported lazily (``pip install 'trainset[sar]'``), so the rest of trainset works
without it. A raster is never read whole: :func:`iter_strips` yields strips whose height is a
multiple of the file's block height, together with the GDAL validity mask (nodata, internal
masks and alpha honoured).
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
    """Sizes, dtype, nodata, block height, CRS and affine transform of an open raster."""
    block_h = int(src.block_shapes[0][0]) if src.block_shapes else 1
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


def iter_strips(
    src: Any, bands: Sequence[int], min_rows: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(row0, data, valid)`` full-width strips covering the raster top to bottom.

    ``data`` is (C, h, W) in the file's dtype, ``valid`` (C, h, W) bool from GDAL's masks
    (nodata, per-dataset mask, alpha); strip starts are multiples of the block height.
    """
    rasterio = _rasterio()
    window_cls = rasterio.windows.Window
    info = raster_info(src)
    rows = strip_rows(info.block_height, min_rows)
    indexes = [int(b) for b in bands]
    for row0 in range(0, info.height, rows):
        h = min(rows, info.height - row0)
        window = window_cls(0, row0, info.width, h)
        try:
            data = src.read(indexes, window=window)
            masks = src.read_masks(indexes, window=window)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"cannot read rows {row0}..{row0 + h}: {exc}", file=info.path) from exc
        yield row0, data, masks > 0
