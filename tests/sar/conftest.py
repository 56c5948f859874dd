"""SAR test fixtures: small seeded GeoTIFFs (helpers in sar_rasters.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rasterio")

from trainset.testing.sar_rasters import speckle_amplitude_dn, speckle_intensity, write_geotiff


@pytest.fixture
def amplitude_tif(tmp_path: Path) -> Path:
    """160 x 200 uint16 amplitude raster, nodata = 7 in rows 0..19."""
    dn = speckle_amplitude_dn((160, 200), seed=1)
    dn[dn == 7] = 8
    dn[:20, :] = 7
    return write_geotiff(tmp_path / "amp.tif", dn, nodata=7)


@pytest.fixture
def intensity_tif(tmp_path: Path) -> Path:
    """128 x 144 float32 intensity raster, nodata NaN in a 10 x 10 corner block."""
    inten = speckle_intensity((128, 144), seed=2)
    inten[:10, :10] = np.nan
    return write_geotiff(tmp_path / "int.tif", inten, nodata=float("nan"))
