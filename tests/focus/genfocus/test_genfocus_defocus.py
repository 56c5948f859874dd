from __future__ import annotations

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.focus.genfocus.defocus import defocus_from_coc, defocus_map, genfocus_k
from trainset.focus.optics import coc_px_per_disparity, signed_coc_px


def transcribed_recipe(depth, k, mask=None, point=None):
    """Inference_bokehNet.py, as genfocus.md states it, written out pixel by pixel."""
    h, w = depth.shape
    disp = np.zeros((h, w), dtype=np.float32)
    for y in range(h):
        for x in range(w):
            d = depth[y, x]
            disp[y, x] = np.float32(1.0) / (d if d > 0 else np.finfo(np.float32).max)
    if mask is not None:
        values = sorted(disp[y, x] for y in range(h) for x in range(w) if mask[y, x] > 0)
        if not values:
            values = sorted(disp.ravel())
        mid = len(values) // 2
        focus = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    elif point is not None:
        focus = disp[point[1], point[0]]
    else:
        focus = disp[h // 2, w // 2]
    out = np.zeros((h, w), dtype=np.float32)
    for y in range(h):
        for x in range(w):
            out[y, x] = min(max(abs(k * (disp[y, x] - np.float32(focus))) / 100.0, 0.0), 1.0)
    return out


@pytest.fixture
def depth() -> np.ndarray:
    rng = np.random.default_rng(4)
    d = rng.uniform(0.3, 30.0, size=(9, 12)).astype(np.float32)
    d[0, 0] = 0.0  # no measurement: infinitely far
    d[1, 1] = -1.0
    return d


def test_defocus_map_focuses_the_centre_by_default(depth: np.ndarray) -> None:
    np.testing.assert_allclose(defocus_map(depth, 15.0), transcribed_recipe(depth, 15.0), atol=1e-6)


def test_defocus_map_focuses_a_point(depth: np.ndarray) -> None:
    out = defocus_map(depth, 20.0, point=(7, 2))
    np.testing.assert_allclose(out, transcribed_recipe(depth, 20.0, point=(7, 2)), atol=1e-6)


def test_defocus_map_focuses_the_median_disparity_of_a_mask(depth: np.ndarray) -> None:
    mask = np.zeros(depth.shape, dtype=np.uint8)
    mask[2:5, 3:9] = 255
    out = defocus_map(depth, 40.0, mask=mask)
    np.testing.assert_allclose(out, transcribed_recipe(depth, 40.0, mask=mask), atol=1e-6)


def test_defocus_map_with_an_empty_mask_uses_the_whole_image(depth: np.ndarray) -> None:
    mask = np.zeros(depth.shape)
    out = defocus_map(depth, 40.0, mask=mask)
    np.testing.assert_allclose(out, transcribed_recipe(depth, 40.0, mask=mask), atol=1e-6)


def test_defocus_map_is_float32_in_zero_one(depth: np.ndarray) -> None:
    out = defocus_map(depth, 1e4)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() == 1.0


def test_defocus_map_rejects_nan_depth(depth: np.ndarray) -> None:
    depth[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        defocus_map(depth, 15.0)


def test_our_coc_converts_to_the_recipe_of_a_lens_focused_at_s() -> None:
    """A pixel at S is in focus; K = K_diam / 2 turns the CoC diameter into GenFocus's radius."""
    depth = np.linspace(0.5, 20.0, 8 * 10, dtype=np.float32).reshape(8, 10)
    f, n, s, width = 0.05, 2.0, 2.0, 10
    depth[4, 5] = s
    coc = signed_coc_px(depth, f, n, s, width, coc_model="thin_lens")
    k = genfocus_k(coc_px_per_disparity(f, n, s, width, coc_model="thin_lens"))
    np.testing.assert_allclose(
        defocus_from_coc(coc), defocus_map(depth, k, point=(5, 4)), rtol=1e-5, atol=1e-6
    )


def test_defocus_from_coc_is_half_the_diameter_over_100_px_scaled() -> None:
    coc = np.array([[-60.0, 0.0, 120.0, 1000.0]], dtype=np.float32)
    np.testing.assert_allclose(defocus_from_coc(coc, scale=0.5), [[0.15, 0.0, 0.3, 1.0]], rtol=1e-6)


def test_genfocus_k_is_half_k_diam_at_the_working_width() -> None:
    # f 50 mm, N 2, S 2 m, 1024 px, full frame: K_diam ~ 36.5 px m (models.md)
    k_diam = coc_px_per_disparity(0.05, 2.0, 2.0, 1024, coc_model="thin_lens")
    assert k_diam == pytest.approx(36.47, abs=0.01)
    assert genfocus_k(k_diam, 512 / 1024) == pytest.approx(k_diam / 4)
