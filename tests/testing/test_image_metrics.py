"""PSNR, SSIM and the depth-edge band against closed forms and torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from trainset.errors import InputError
from trainset.testing.image_metrics import depth_edge_band, psnr, ssim, ssim_map


def noise(seed: int, shape=(40, 48, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_psnr_of_a_constant_error_of_five_codes():
    a = noise(1)
    b = a.astype(int) + 5
    assert psnr(b, a) == pytest.approx(10 * math.log10(255**2 / 25))


def test_psnr_reads_only_the_masked_region():
    a = noise(2)
    b = a.copy()
    b[:, :10] = 255 - b[:, :10]
    region = np.zeros(a.shape[:2], bool)
    region[:, 10:] = True
    assert psnr(b, a, region) == math.inf


def test_ssim_of_constant_images_is_their_luminance_term():
    a = np.full((24, 24, 3), 100.0)
    b = np.full((24, 24, 3), 130.0)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 130 + c1) / (100**2 + 130**2 + c1)
    np.testing.assert_allclose(ssim_map(b, a), expected, rtol=1e-12)


def test_ssim_matches_torchmetrics():
    a, b = noise(3), noise(4)
    b = (0.6 * a + 0.4 * b).astype(np.uint8)

    def tensor(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(img).permute(2, 0, 1)[None].to(torch.float64)

    reference = structural_similarity_index_measure(tensor(b), tensor(a), data_range=255.0)
    assert isinstance(reference, torch.Tensor)
    assert ssim(b, a) == pytest.approx(float(reference), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)


def test_metrics_refuse_images_of_different_shapes():
    with pytest.raises(InputError, match="images to compare"):
        psnr(noise(5), noise(5, (40, 40, 3)))


def test_an_empty_region_is_refused():
    with pytest.raises(InputError, match="region to score"):
        ssim(noise(6), noise(6), np.zeros((40, 48), bool))


def test_depth_edge_band_reaches_two_radii_on_both_sides_of_the_edge():
    radius = np.zeros((20, 60))
    radius[:, 30:] = 5.0
    band = depth_edge_band(radius)
    # Edge pixels: columns 29 and 30; each claims 2 * 5 px around it.
    expected = np.zeros(60, bool)
    expected[19:41] = True
    assert np.array_equal(band, np.tile(expected, (20, 1)))


def test_a_smooth_slope_has_no_depth_edge():
    radius = np.tile(np.linspace(-12.0, 12.0, 64), (16, 1))
    assert not depth_edge_band(radius).any()
