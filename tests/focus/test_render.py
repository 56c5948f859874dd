"""Renderer ``layered`` against analytic cases (reference/models.md, DESIGN.md)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from trainset.errors import InputError
from trainset.focus.render import LayeredRenderer, make_renderer


def srgb_to_linear(codes: np.ndarray) -> np.ndarray:
    c = codes.astype(np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    x = np.clip(linear, 0.0, 1.0)
    c = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    return np.round(c * 255.0).astype(np.uint8)


def disc(radius: float) -> np.ndarray:
    """Anti-aliased disc: weight clip(r + 0.5 - distance, 0, 1), normalised."""
    half = int(np.ceil(radius))
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    weight = np.clip(radius + 0.5 - np.hypot(x, y), 0.0, 1.0)
    return weight / weight.sum()


def plan_coc_px(depth_m, f, N, S, width_px, sensor_width_m=0.036):
    """Signed CoC diameter in pixels from the plan's formula (+ behind the focus plane)."""
    coc_m = f**2 / (N * S) * np.abs(depth_m - S) / depth_m
    return np.sign(depth_m - S) * coc_m * width_px / sensor_width_m


def texture(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def renderer():
    return LayeredRenderer(device="cpu")


def test_zero_coc_returns_the_input_exactly(renderer):
    image = texture((40, 50))
    out = renderer.render(image, np.zeros((40, 50), np.float32))
    assert out.dtype == np.uint8 and np.array_equal(out, image)


def test_constant_image_stays_constant_under_any_coc(renderer):
    image = np.full((48, 48, 3), (200, 31, 97), np.uint8)
    coc = np.linspace(-30, 24, 48 * 48, dtype=np.float32).reshape(48, 48)
    out = renderer.render(image, coc)
    assert np.array_equal(out, image)


def test_fronto_parallel_plane_is_its_convolution_with_the_predicted_disc(renderer):
    shape = (64, 72)
    image = texture(shape, seed=3)
    f, N, S, depth = 0.085, 1.4, 1.0, 3.0
    coc = plan_coc_px(np.full(shape, depth), f, N, S, shape[1]).astype(np.float32)
    diameter = f**2 / (N * S) * abs(depth - S) / depth * shape[1] / 0.036
    assert diameter == pytest.approx(6.881, abs=1e-3)
    linear = srgb_to_linear(image)
    kernel = disc(diameter / 2)
    expected = np.stack(
        [ndimage.convolve(linear[..., c], kernel, mode="mirror") for c in range(3)], axis=-1
    )
    out = renderer.render(image, coc)
    m = kernel.shape[0]
    inner = (slice(m, -m), slice(m, -m))
    diff = np.abs(out[inner].astype(int) - linear_to_srgb(expected)[inner].astype(int))
    assert diff.max() <= 1


def test_blur_grows_with_the_disparity_distance_from_the_focus_plane(renderer):
    shape = (64, 64)
    image = texture(shape, seed=5)
    f, N, S = 0.05, 2.0, 2.0
    spreads = []
    for depth in (2.0, 2.4, 3.0, 5.0, 20.0):
        coc = plan_coc_px(np.full(shape, depth), f, N, S, 1024).astype(np.float32)
        out = srgb_to_linear(renderer.render(image, coc))
        spreads.append(float(out[16:-16, 16:-16].std()))
    assert all(a > b for a, b in itertools.pairwise(spreads))


def test_mean_linear_brightness_is_kept_within_one_percent(renderer):
    shape = (80, 96)
    image = texture(shape, seed=9)
    rows = np.linspace(0.8, 15.0, shape[0])[:, None] * np.ones((1, shape[1]))
    coc = plan_coc_px(rows, 0.085, 1.4, 2.5, shape[1]).astype(np.float32)
    out = renderer.render(image, np.clip(coc, -20, 20))
    before = srgb_to_linear(image).mean()
    after = srgb_to_linear(out).mean()
    assert abs(after - before) / before < 0.01


def _two_planes(shape, split_col):
    image = np.empty((*shape, 3), np.uint8)
    image[:, :split_col] = texture((shape[0], split_col), seed=11)
    image[:, split_col:] = (20, 200, 60)
    depth = np.full(shape, 10.0)
    depth[:, :split_col] = 1.0
    return image, depth


def test_focused_near_keeps_the_foreground_edge_sharp(renderer):
    shape, split = (48, 64), 32
    image, depth = _two_planes(shape, split)
    image[:, split:] = texture((shape[0], shape[1] - split), seed=12)
    coc = plan_coc_px(depth, 0.05, 1.4, 1.0, shape[1] * 8).astype(np.float32)
    assert coc[0, split] > 20
    out = renderer.render(image, coc)
    assert np.array_equal(out[:, :split], image[:, :split])
    assert not np.array_equal(out[:, split + 2 :], image[:, split + 2 :])


def test_focused_far_spreads_the_blurred_foreground_over_the_background(renderer):
    shape, split = (48, 80), 32
    image, depth = _two_planes(shape, split)
    image[:, :split] = (230, 20, 20)
    coc = plan_coc_px(depth, 0.05, 1.4, 10.0, shape[1] * 4).astype(np.float32)
    radius = abs(float(coc[0, 0])) / 2
    assert 5 < radius < 12
    out = renderer.render(image, coc).astype(int)
    row = out[24]
    reach = int(np.ceil(radius))
    spread = row[split : split + reach - 1, 0]
    assert np.all(spread > 20)
    assert np.all(np.diff(spread) <= 0)
    assert np.array_equal(
        row[split + reach + 1 :], np.tile([20, 200, 60], (80 - split - reach - 1, 1))
    )


def test_renderer_refuses_a_coc_map_of_another_size(renderer):
    with pytest.raises(
        InputError, match=r"CoC map and image differ in size \(expected \(H, W\) = \(8, 8\)"
    ):
        renderer.render(texture((8, 8)), np.zeros((8, 9), np.float32))


def test_renderer_refuses_images_that_are_not_rgb_uint8(renderer):
    with pytest.raises(InputError, match=r"expected \(H, W, 3\) uint8, found \(8, 8, 3\) float32"):
        renderer.render(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.float32))


def test_renderer_refuses_non_finite_coc(renderer):
    coc = np.zeros((8, 8), np.float32)
    coc[1, 1] = np.nan
    with pytest.raises(InputError, match="CoC map has NaN or Inf"):
        renderer.render(texture((8, 8)), coc)


def test_unknown_renderer_is_refused():
    with pytest.raises(
        InputError,
        match=r"renderer.*unknown renderer.*expected layered or genfocus, found bokehnet",
    ):
        make_renderer("bokehnet")


def test_blur_wider_than_the_image_keeps_a_constant_image_constant(renderer):
    image = np.full((12, 10, 3), (90, 140, 250), np.uint8)
    coc = np.linspace(-70, 60, 120, dtype=np.float32).reshape(12, 10)
    assert np.array_equal(renderer.render(image, coc), image)
