"""Thin-lens ground truth against closed forms (reference/models.md, "Optics")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special

from trainset.errors import InputError
from trainset.focus.optics import signed_coc_px
from trainset.testing.defocus_truth import (
    Extent,
    Lens,
    Plane,
    Scene,
    Texture,
    _plane_positions,
    aperture_samples,
    pinhole_view,
    quality_scenes,
    thin_lens_image,
)

# A small sensor (3.6 mm wide) gives a blur of a few pixels on frames of 32 px.
LENS = Lens(f_m=0.05, n=2.0, s_focus_m=2.0, sensor_width_m=0.0036)
WAVE = (0.11, 0.05)  # cycles/px


def cosine(amplitude: float = 0.2) -> Texture:
    """0.4 + amplitude * cos(2 pi (0.11 x + 0.05 y) + 0.3) in every channel."""
    return Texture(
        base=(0.4, 0.4, 0.4),
        freqs=np.array([WAVE]),
        phases=np.array([0.3]),
        amps=np.array([[amplitude] * 3]),
    )


def blurred_cosine(x: np.ndarray, y: np.ndarray, radius_px: float) -> np.ndarray:
    """The cosine texture averaged over a uniform disc: its amplitude times the jinc
    2 J1(k R) / (k R), k = 2 pi |f|."""
    kr = 2 * math.pi * math.hypot(*WAVE) * radius_px
    jinc = 2 * special.j1(kr) / kr
    return 0.4 + 0.2 * jinc * np.cos(2 * math.pi * (WAVE[0] * x + WAVE[1] * y) + 0.3)


def fronto(depth_m: float, texture: Texture, extent: Extent) -> Plane:
    return Plane((1.0 / depth_m, 0.0, 0.0), texture, extent)


def test_aperture_samples_cover_the_unit_disc_uniformly():
    q = aperture_samples(4096, rotation=0.7)
    r2 = (q**2).sum(axis=1)
    assert r2.max() <= 1.0
    assert r2.mean() == pytest.approx(0.5, abs=1e-4)  # E[r^2] over the uniform disc
    assert np.abs(q.mean(axis=0)).max() < 1e-3


def test_radius_scale_is_half_the_thin_lens_coc_in_pixels():
    depth = np.array([[0.7, 2.0, 9.0]], np.float32)
    coc = signed_coc_px(depth, 0.05, 2.0, 2.0, 640, sensor_width_m=0.0036, coc_model="thin_lens")
    radius = LENS.radius_scale_px(640) * np.abs(1 / depth - 1 / 2.0)
    np.testing.assert_allclose(np.abs(coc) / 2, radius, rtol=1e-6)


def test_a_plane_in_focus_is_imaged_exactly_as_the_pinhole_sees_it():
    scene = Scene("focus", 24, 32, (fronto(2.0, cosine(), Extent(everywhere=True)),), LENS)
    colour, depth, _ = pinhole_view(scene)
    image, _ = thin_lens_image(scene, 64)
    np.testing.assert_allclose(image, colour, atol=1e-6)
    assert np.all(depth == np.float32(2.0))


def test_a_defocused_plane_is_its_texture_averaged_over_the_coc_disc():
    scene = Scene("plane", 24, 32, (fronto(6.0, cosine(), Extent(everywhere=True)),), LENS)
    radius = LENS.radius_scale_px(32) * abs(1 / 6.0 - 1 / 2.0)
    assert radius == pytest.approx(1.8993, abs=1e-4)
    image, _ = thin_lens_image(scene, 2048)
    y, x = np.mgrid[0:24, 0:32]
    np.testing.assert_allclose(image[..., 0], blurred_cosine(x, y, radius), atol=1e-4)


def test_the_background_blur_includes_what_the_sharp_foreground_hides():
    wall = fronto(6.0, cosine(), Extent(everywhere=True))
    post = fronto(2.0, Texture(base=(0.9, 0.1, 0.1)), Extent(boxes=((-5, -5, 11.5, 40),)))
    scene = Scene("post", 24, 32, (wall, post), LENS)
    image, _ = thin_lens_image(scene, 2048)
    radius = LENS.radius_scale_px(32) * abs(1 / 6.0 - 1 / 2.0)
    y, x = np.mgrid[0:24, 12:32]
    # Rays through a pixel beside the in-focus post all pass it: the whole disc of the wall,
    # including the part behind the post, reaches the pixel.
    np.testing.assert_allclose(image[:, 12:, 0], blurred_cosine(x, y, radius), atol=1e-4)
    np.testing.assert_allclose(
        image[:, :12], np.broadcast_to([0.9, 0.1, 0.1], (24, 12, 3)), atol=1e-6
    )


def test_the_nearest_plane_is_seen_and_its_depth_recorded():
    wall = fronto(6.0, Texture(base=(0.1, 0.2, 0.3)), Extent(everywhere=True))
    disc = fronto(1.5, Texture(base=(0.8, 0.7, 0.6)), Extent(discs=((10.0, 8.0, 4.0),)))
    colour, depth, light = pinhole_view(Scene("disc", 16, 20, (wall, disc), LENS))
    inside = (np.mgrid[0:16, 0:20][1] - 10.0) ** 2 + (np.mgrid[0:16, 0:20][0] - 8.0) ** 2 <= 16
    np.testing.assert_allclose(colour[inside], np.tile([0.8, 0.7, 0.6], (inside.sum(), 1)))
    np.testing.assert_allclose(depth[inside], 1.5)
    np.testing.assert_allclose(depth[~inside], 6.0)
    assert not light.any()


def test_slanted_plane_positions_solve_the_ray_equation():
    plane = Plane((0.3, 0.004, -0.002), cosine(), Extent(everywhere=True))
    ys, xs = torch.meshgrid(torch.arange(12.0), torch.arange(16.0), indexing="ij")
    shift = torch.tensor([[3.0, -2.0], [-1.5, 4.0]])
    px, py, inv = _plane_positions(plane, xs, ys, shift, 0.5)
    # x' = x + s (1/d(x') - 1/S) with 1/d affine in x'.
    torch.testing.assert_close(inv, 0.3 + 0.004 * px - 0.002 * py)
    torch.testing.assert_close(px, xs + shift[:, 0, None, None] * (inv - 0.5))
    torch.testing.assert_close(py, ys + shift[:, 1, None, None] * (inv - 0.5))


def test_a_scene_with_uncovered_pixels_is_refused():
    disc = fronto(1.5, Texture(base=(0.8, 0.7, 0.6)), Extent(discs=((10.0, 8.0, 4.0),)))
    with pytest.raises(InputError, match="scene leaves pixels empty"):
        pinhole_view(Scene("hole", 16, 20, (disc,), LENS))


def test_the_benchmark_scenes_scale_with_the_frame():
    small, large = quality_scenes(64), quality_scenes(128)
    assert [s.name for s in small] == [
        "planes_focus_far",
        "planes_focus_near",
        "planes_focus_mid",
        "slanted",
        "lights",
    ]
    for a, b in zip(small, large):
        depth_a, depth_b = pinhole_view(a)[1], pinhole_view(b)[1]
        np.testing.assert_allclose(depth_a, depth_b[::2, ::2], rtol=1e-5)
