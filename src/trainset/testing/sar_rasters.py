"""Seeded SAR test rasters written with rasterio (CRS, transform, nodata); shared by the SAR tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    nodata: float | None = None,
    block: int = 64,
    tiled: bool = True,
) -> Path:
    """Write (H, W) or (C, H, W) ``data`` as a GeoTIFF in UTM 33N with 10 m pixels."""
    arr = data[None] if data.ndim == 2 else data
    profile = {
        "driver": "GTiff",
        "height": arr.shape[1],
        "width": arr.shape[2],
        "count": arr.shape[0],
        "dtype": str(arr.dtype),
        "crs": "EPSG:32633",
        "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0),
        "nodata": nodata,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


def speckle_intensity(shape: tuple[int, ...], seed: int, mean: float = 0.05) -> np.ndarray:
    """Seeded gamma (4-look speckle) intensity, float32, strictly positive."""
    rng = np.random.default_rng(seed)
    return rng.gamma(4.0, mean / 4.0, shape).astype(np.float32) + np.float32(1e-6)


def speckle_amplitude_dn(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Seeded uint16 amplitude DN in [1, 2000] (GRD-like)."""
    rng = np.random.default_rng(seed)
    dn = np.sqrt(rng.gamma(4.0, 1.0e5 / 4.0, shape)).round()
    return np.clip(dn, 1, 2000).astype(np.uint16)
