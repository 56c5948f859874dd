"""Defocus renderers against exact thin-lens defocus: PSNR, SSIM and renders/s in one run.

Ground truth (``trainset.testing.defocus_truth``): scenes whose whole content is known (textured
planes including what hides behind the front ones, a slanted floor, small HDR lights on a dark
wall), imaged by a thin lens as the mean of pinhole views over the aperture disc: two golden-angle
spirals of ``--samples`` points each, rotated against each other; the truth is their mean and
the PSNR between the two halves (the truth's own convergence residual) is printed per scene. A
camera then clips at white and encodes sRGB uint8.

Every contender gets the same single RGB-D input, as the pipeline has it: the central pinhole
view clipped and encoded as sRGB uint8, and the exact depth, turned into the signed CoC diameter
in pixels by ``signed_coc_px`` (``coc_model="thin_lens"``):

- ``layered v1``: the renderer as it was before hidden-content extension (``hidden="none"``).
- ``layered``: the current default (hidden content extended, highlight curve off).
- ``layered +hl``: the same with the optional inverse tone curve (``highlight_gain``).
- ``scatter``: BokehMe's classical renderer (Peng et al., CVPR 2022) as the public anchor,
  written here: every pixel splats a soft disc of its CoC radius r, weight
  ``(0.5 + 0.5 tanh(4 (r - distance))) / (r^2 + 0.2)`` over the square of half-size
  ``int(r) + 1``, the sums normalised by the summed weights; done on sRGB values raised to
  ``gamma`` (4, its demo default) and brought back with ``1/gamma``, after its highlight boost
  (sRGB above 220/255 raised by up to 40% where the disparity is more than 0.1 of its range
  from the focus). ``scatter g2.2`` is the same with gamma 2.2 and no boost.

Scores against the truth, each as PSNR dB / SSIM (``trainset.testing.image_metrics``; SSIM is our
own Gaussian-window implementation, checked against torchmetrics in the tests): the whole frame,
the band within 2 CoC radii of depth edges (``depth_edge_band``), and the highlights (pixels
that any aperture sample sees a light through). Renders/s: each contender on every scene at
each ``--speed-sizes``, interleaved, best of ``--repeats``. One picture per scene
(truth | layered v1 | layered +hl | scatter) is written to ``--pictures``.

    python benchmarks/render_quality.py [--size 256] [--speed-sizes 256 512] [--samples 1024]
        [--repeats 2] [--highlight-gain 12] [--pictures /tmp/render_quality]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainset.focus.optics import signed_coc_px
from trainset.focus.render import LayeredRenderer
from trainset.testing.defocus_truth import Scene, pinhole_view, quality_scenes, thin_lens_image
from trainset.testing.image_metrics import depth_edge_band, psnr, ssim

Renderer = Callable[[np.ndarray, np.ndarray], np.ndarray]
# BokehMe demo defaults: gamma, highlight threshold (sRGB), highlight enhance ratio, and the
# disparity distance from the focus (fraction of the range) beyond which it boosts.
BOKEHME_GAMMA = 4.0
BOKEHME_HIGHLIGHT_THRESHOLD = 220 / 255
BOKEHME_HIGHLIGHT_RATIO = 0.4
BOKEHME_DEFOCUS_FRACTION = 0.1


def srgb_uint8(linear: np.ndarray) -> np.ndarray:
    """Camera output: linear light clipped to [0, 1], sRGB-encoded, rounded to uint8."""
    x = np.clip(linear, 0.0, 1.0)
    code = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.round(code * 255.0).astype(np.uint8)


def scatter_render(
    image: np.ndarray,
    coc_px_signed: np.ndarray,
    *,
    gamma: float = BOKEHME_GAMMA,
    highlight: bool = True,
) -> np.ndarray:
    """BokehMe's classical scatter renderer (module docstring): (H, W, 3) uint8 sRGB and the
    signed CoC diameter (H, W) px -> (H, W, 3) uint8. Written as a gather over offsets, which
    sums exactly what the scatter splats."""
    img = torch.from_numpy(image).permute(2, 0, 1).to(torch.float32) / 255.0
    signed = torch.from_numpy(np.ascontiguousarray(coc_px_signed, np.float32)) / 2.0
    radius = signed.abs()
    height, width = radius.shape
    if highlight:
        span = float(signed.max() - signed.min())
        if span > 0:
            away = torch.tanh(200.0 * ((signed / span) ** 2 - BOKEHME_DEFOCUS_FRACTION**2))
            bright = torch.tanh(10.0 * (img - BOKEHME_HIGHLIGHT_THRESHOLD)).clamp(0.0, 1.0)
            img = img * (1.0 + away.clamp(0.0, 1.0) * bright * BOKEHME_HIGHLIGHT_RATIO)
    source = img**gamma
    half = int(float(radius.max())) + 1
    sides = (half, half, half, half)
    source_p = torch.nn.functional.pad(source[None], sides)[0]
    radius_p = torch.nn.functional.pad(radius[None, None], sides)[0, 0]
    inside = torch.nn.functional.pad(torch.ones((1, 1, height, width)), sides)[0, 0]
    norm_p = inside / (radius_p * radius_p + 0.2)
    reach_p = torch.floor(radius_p) + 1.0
    total = torch.zeros((3, height, width))
    weights = torch.zeros((height, width))
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            rows = slice(half - dy, half - dy + height)
            cols = slice(half - dx, half - dx + width)
            r = radius_p[rows, cols]
            weight = (0.5 + 0.5 * torch.tanh(4.0 * (r - math.hypot(dy, dx)))) * norm_p[rows, cols]
            weight = weight * (reach_p[rows, cols] >= max(abs(dy), abs(dx)))
            total.addcmul_(source_p[:, rows, cols], weight)
            weights += weight
    out = (total / weights).clamp_min(0.0) ** (1.0 / gamma)
    return (out.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def contenders(highlight_gain: float) -> dict[str, Renderer]:
    v1 = LayeredRenderer(device="cpu", hidden="none")
    v2 = LayeredRenderer(device="cpu")
    v2_hl = LayeredRenderer(device="cpu", highlight_gain=highlight_gain)
    return {
        "layered v1": v1.render,
        "layered": v2.render,
        "layered +hl": v2_hl.render,
        "scatter": scatter_render,
        "scatter g2.2": lambda image, coc: scatter_render(image, coc, gamma=2.2, highlight=False),
    }


def renderer_input(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """The single RGB-D input: sRGB uint8 frame and signed CoC diameter (px) from its depth."""
    colour, depth, _ = pinhole_view(scene)
    lens = scene.lens
    coc = signed_coc_px(
        depth,
        lens.f_m,
        lens.n,
        lens.s_focus_m,
        scene.width,
        sensor_width_m=lens.sensor_width_m,
        coc_model="thin_lens",
    )
    return srgb_uint8(colour), coc


def score(out: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> str:
    """``PSNR / SSIM`` over ``region`` (the whole frame when None)."""
    return f"{psnr(out, truth, region):6.2f} / {ssim(out, truth, region):.4f}"


def quality(args: argparse.Namespace, renderers: dict[str, Renderer]) -> dict[str, dict]:
    """Scores per scene and contender; writes the pictures."""
    args.pictures.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for scene in quality_scenes(args.size):
        start = time.perf_counter()
        half_a, lights_a = thin_lens_image(scene, args.samples, rotation=0.0)
        half_b, lights_b = thin_lens_image(scene, args.samples, rotation=1.0)
        truth = srgb_uint8((half_a + half_b) / 2.0)
        residual = psnr(srgb_uint8(half_a), srgb_uint8(half_b))
        image, coc = renderer_input(scene)
        band = depth_edge_band(coc / 2.0)
        lights = (lights_a + lights_b) > 0
        print(
            f"\n{scene.name}: truth {2 * args.samples} aperture samples in "
            f"{time.perf_counter() - start:.0f} s, residual (half vs half) {residual:.1f} dB; "
            f"|CoC radius| <= {np.abs(coc).max() / 2:.1f} px; edge band {band.mean():.0%}, "
            f"highlights {lights.mean():.1%} of the frame"
        )
        print(f"  {'contender':<13} {'whole frame':>15} {'depth edges':>15} {'highlights':>15}")
        outs = {name: render(image, coc) for name, render in renderers.items()}
        rows = {}
        for name, out in outs.items():
            rows[name] = {"all": psnr(out, truth), "edge": psnr(out, truth, band)}
            highlight = score(out, truth, lights) if lights.any() else "-"
            print(
                f"  {name:<13} {score(out, truth):>15} {score(out, truth, band):>15} "
                f"{highlight:>15}"
            )
        results[scene.name] = rows
        picture = np.concatenate(
            [truth, outs["layered v1"], outs["layered +hl"], outs["scatter"]], axis=1
        )
        Image.fromarray(picture).save(args.pictures / f"{scene.name}.png")
    return results


def speed(args: argparse.Namespace, renderers: dict[str, Renderer]) -> dict[int, dict[str, float]]:
    """Renders/s of each contender over all scenes at each size (interleaved, best of); the
    gamma variant of scatter costs the same as scatter and is not timed."""
    timed = {name: render for name, render in renderers.items() if name != "scatter g2.2"}
    rates: dict[int, dict[str, float]] = {}
    print(
        f"\nrenders/s (best of {args.repeats}, interleaved, all scenes), torch threads "
        f"{torch.get_num_threads()}"
    )
    for size in args.speed_sizes:
        inputs = [renderer_input(scene) for scene in quality_scenes(size)]
        best = {name: [math.inf] * len(inputs) for name in timed}
        for _ in range(args.repeats):
            for i, (image, coc) in enumerate(inputs):
                for name, render in timed.items():
                    start = time.perf_counter()
                    render(image, coc)
                    best[name][i] = min(best[name][i], time.perf_counter() - start)
        rates[size] = {name: len(inputs) / sum(times) for name, times in best.items()}
        cells = "  ".join(f"{name} {rate:.2f}" for name, rate in rates[size].items())
        print(f"  {size}x{size}: {cells}")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="frame size of the quality scores")
    parser.add_argument("--speed-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--samples", type=int, default=1024, help="aperture samples per spiral")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--highlight-gain",
        type=float,
        default=12.0,
        help="layered +hl: assumed brightness of a clipped pixel (x white)",
    )
    parser.add_argument("--pictures", type=Path, default=Path("/tmp/render_quality"))
    args = parser.parse_args()
    renderers = contenders(args.highlight_gain)
    print(f"torch {torch.__version__}, CPU, threads {torch.get_num_threads()}")
    results = quality(args, renderers)
    rates = speed(args, renderers)
    print("\nacceptance: 'layered +hl' against 'scatter' (PSNR whole frame and depth edges; speed)")
    for name, rows in results.items():
        mine, anchor = rows["layered +hl"], rows["scatter"]
        print(
            f"  {name:<18} whole {mine['all'] - anchor['all']:+6.2f} dB  "
            f"edges {mine['edge'] - anchor['edge']:+6.2f} dB  "
            f"{'ok' if mine['all'] > anchor['all'] and mine['edge'] > anchor['edge'] else 'LOSES'}"
        )
    for size, rate in rates.items():
        print(
            f"  {size}x{size}: layered +hl {rate['layered +hl'] / rate['scatter']:.1f}x the "
            f"renders/s of scatter"
        )


if __name__ == "__main__":
    main()
