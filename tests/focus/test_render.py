"""Renderer ``layered`` against analytic cases (reference/models.md, DESIGN.md)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from trainset.errors import InputError
from trainset.focus.occlusion import extend_hidden
from trainset.focus.optics import signed_coc_px
from trainset.focus.render import (
    HighlightCurve,
    LayeredRenderer,
    assign_layers,
    make_renderer,
    renderer_record,
)
from trainset.testing.defocus_truth import pinhole_view, quality_scenes, thin_lens_image
from trainset.testing.image_metrics import depth_edge_band, psnr


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


def _red_post_before_green_wall(shape, split):
    """Constant red foreground (columns < split) at 1 m before a constant green wall at 10 m."""
    image, depth = _two_planes(shape, split)
    image[:, :split] = (230, 20, 20)
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
    image, depth = _red_post_before_green_wall(shape, split)
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
        match=r"key '--renderer': unknown renderer backend "
        r"\(expected \['genfocus', 'layered'\], found bokehnet",
    ):
        make_renderer("bokehnet")


def test_blur_wider_than_the_image_keeps_a_constant_image_constant(renderer):
    image = np.full((12, 10, 3), (90, 140, 250), np.uint8)
    coc = np.linspace(-70, 60, 120, dtype=np.float32).reshape(12, 10)
    assert np.array_equal(renderer.render(image, coc), image)


def test_focused_far_the_background_shows_through_the_blurred_foreground_edge(renderer):
    shape, split = (48, 80), 40
    image, depth = _red_post_before_green_wall(shape, split)
    coc = plan_coc_px(depth, 0.05, 1.4, 10.0, shape[1] * 4).astype(np.float32)
    kernel = disc(abs(float(coc[0, 0])) / 2)
    half = kernel.shape[0] // 2
    column_weight = kernel.sum(axis=0)  # over offsets dx = -half..half
    linear = srgb_to_linear(image[0, [0, -1]])  # red, green
    out = renderer.render(image, coc)
    for inside in range(1, half):
        col = split - inside
        # Share of the disc around col that lies on the foreground (columns < split).
        alpha = column_weight[: half + inside].sum()
        expected = linear_to_srgb(alpha * linear[0] + (1 - alpha) * linear[1])
        assert np.abs(out[24, col].astype(int) - expected.astype(int)).max() <= 1


def test_hidden_none_keeps_the_blurred_foreground_opaque_inside_its_edge():
    shape, split = (48, 80), 40
    image, depth = _red_post_before_green_wall(shape, split)
    coc = plan_coc_px(depth, 0.05, 1.4, 10.0, shape[1] * 4).astype(np.float32)
    out = LayeredRenderer(device="cpu", hidden="none").render(image, coc)
    assert np.array_equal(out[24, split - 3], image[0, 0])


def test_a_plane_between_two_layers_hides_the_background_completely(renderer):
    shape = (64, 64)
    coc = np.full(shape, 12.0, np.float32)  # background, radius 6 px
    coc[:, :40] = -9.4  # plane, radius -4.7 px: 0.3 of the way from layer -5 to layer -4
    coc[:2, :2] = -16.0  # the nearest layer at -8 px sets the 1-px grid of layer radii
    image = texture(shape, seed=21)
    outs = []
    for wall in ((20, 200, 60), (20, 60, 200)):
        image[:, 40:] = wall
        outs.append(renderer.render(image, coc))
    # The plane's two tent layers add up to an opaque plane: no wall shows through inside it.
    assert np.array_equal(outs[0][16:48, 8:24], outs[1][16:48, 8:24])


def test_smooth_depth_gets_no_hidden_content():
    radius = torch.linspace(-12.0, 12.0, 64)[:, None].repeat(1, 48)
    layers = assign_layers(radius)
    used = torch.nonzero(layers.weights.flatten(1).amax(dim=1) > 0)[:, 0]
    linear = torch.rand((3, 64, 48), generator=torch.Generator().manual_seed(4))
    weights = layers.weights[used]
    rgba = torch.cat([linear[None] * weights[:, None], weights[:, None]], dim=1)
    before = rgba.clone()
    extend_hidden(rgba, layers.radii[used], used)
    assert torch.equal(rgba, before)


def test_hidden_content_fades_out_smoothly_behind_a_large_foreground():
    radius = torch.full((96, 96), 6.0)
    radius[16:80, 16:80] = -6.0  # a square in front of a wall: layers -6 .. 6 px
    layers = assign_layers(radius)
    used = torch.nonzero(layers.weights.flatten(1).amax(dim=1) > 0)[:, 0]
    weights = layers.weights[used]
    rgba = torch.cat([0.5 * weights[:, None].repeat(1, 3, 1, 1), weights[:, None]], dim=1)
    extend_hidden(rgba, layers.radii[used], used)
    wall = rgba[-1, 3, 16:80, 16:80]  # the wall's alpha behind the square
    assert float(wall[6:58, :6].min()) > 0.99  # fully continued within a blur radius
    assert float((wall[:, 1:] - wall[:, :-1]).abs().max()) < 0.2  # no block-shaped steps


def test_highlight_curve_compress_undoes_expand():
    curve = HighlightCurve(gain=12.0, threshold=0.9)
    x = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    assert float(curve.expand(x)[-1]) == 12.0
    assert torch.allclose(curve.compress(curve.expand(x)), x, atol=1e-9)
    assert torch.equal(curve.expand(x[x <= 0.9]), x[x <= 0.9])


def test_highlight_gain_makes_a_clipped_pixel_a_disc_of_gain_times_its_share():
    image = np.zeros((41, 41, 3), np.uint8)
    image[20, 20] = 255
    coc = np.full((41, 41), 10.0, np.float32)  # radius 5 px
    kernel = disc(5.0)
    centre = kernel[kernel.shape[0] // 2, kernel.shape[1] // 2]
    plain = LayeredRenderer(device="cpu").render(image, coc)
    boosted = LayeredRenderer(device="cpu", highlight_gain=12.0).render(image, coc)
    assert 12 * centre < 0.95  # below the curve's threshold: compress is the identity
    assert np.array_equal(plain[20, 20], linear_to_srgb(np.full(3, centre)))
    assert np.array_equal(boosted[20, 20], linear_to_srgb(np.full(3, 12 * centre)))


def test_highlight_gain_scales_a_clipped_colour_without_changing_its_hue():
    image = np.zeros((41, 41, 3), np.uint8)
    image[20, 20] = (255, 200, 100)
    coc = np.full((41, 41), 10.0, np.float32)  # radius 5 px
    kernel = disc(5.0)
    centre = kernel[kernel.shape[0] // 2, kernel.shape[1] // 2]
    boosted = LayeredRenderer(device="cpu", highlight_gain=12.0).render(image, coc)
    expected = linear_to_srgb(12 * centre * srgb_to_linear(image[20, 20]))
    assert np.abs(boosted[20, 20].astype(int) - expected.astype(int)).max() <= 1


def test_highlight_gain_keeps_a_frame_in_focus_unchanged():
    image = texture((40, 50), seed=2)
    image[5:9, 5:9] = 255
    renderer = LayeredRenderer(device="cpu", highlight_gain=12.0)
    assert np.array_equal(renderer.render(image, np.zeros((40, 50), np.float32)), image)


def test_highlight_gain_below_one_is_refused():
    with pytest.raises(InputError, match="bad highlight curve"):
        LayeredRenderer(device="cpu", highlight_gain=0.5)


def test_unknown_hidden_mode_is_refused():
    with pytest.raises(InputError, match="expected extend or none, found inpaint"):
        LayeredRenderer(device="cpu", hidden="inpaint")


def test_options_given_as_strings_are_resolved_and_recorded():
    renderer = make_renderer("layered", device="cpu", hidden="none", highlight_gain="12")
    assert renderer_record(renderer) == {
        "renderer": "layered",
        "renderer_version": 2,
        "renderer_params": {
            "renderer": "layered",
            "layer_step_px": 1.0,
            "max_layers": 24,
            "hidden": "none",
            "highlight_gain": 12.0,
            "highlight_threshold": 0.95,
        },
    }


def test_an_unknown_renderer_option_is_refused():
    with pytest.raises(
        InputError, match=r"key '--renderer-option': .*rejected its options.*found \['blades'\]"
    ):
        make_renderer("layered", blades="6")


def test_hidden_content_brings_depth_edges_much_closer_to_thin_lens_truth():
    scene = quality_scenes(64)[0]  # textured planes, focused on the far wall
    assert scene.name == "planes_focus_far"
    colour, depth, _ = pinhole_view(scene)
    truth = linear_to_srgb(thin_lens_image(scene, 256)[0])
    lens = scene.lens
    coc = signed_coc_px(
        depth, lens.f_m, lens.n, lens.s_focus_m, 64, sensor_width_m=0.036, coc_model="thin_lens"
    )
    image = linear_to_srgb(colour)
    band = depth_edge_band(coc / 2)
    before = LayeredRenderer(device="cpu", hidden="none").render(image, coc)
    after = LayeredRenderer(device="cpu").render(image, coc)
    assert psnr(after, truth, band) > psnr(before, truth, band) + 8.0
