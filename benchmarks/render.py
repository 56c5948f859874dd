"""Renderer ``layered`` speed: renders/s, against the bare blur of the same layer stack.

Two frames per size, both with signed CoC radii from -R to +R px: ``tilted``, a textured plane
crossing the focus plane (smooth depth: no hidden content to extend), and ``blocks``, an 8 x 8
grid of blocks at random depths (depth edges everywhere: nearly every layer is extended behind
nearer content, the worst case of ``hidden="extend"``). Each is rendered end to end (sRGB
decode, layer assignment, hidden-content extension, blur, compositing, uint8 output ready for
PNG). In the same process the irreducible core, the batched FFT blur of exactly the layers that
render blurs, is timed alone right after each render. Prints renders/s (best of the rounds) and
the ratio whole render / core (median over the rounds of the back-to-back pair; target: at most
2).

    python benchmarks/render.py [--sizes 256 512] [--max-radius 20] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from trainset.focus.render import LayeredRenderer, LayerPlan


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed_pair(first, second, repeats: int, device: torch.device) -> tuple[float, float, float]:
    """Best time of each of two functions over ``repeats`` interleaved rounds (after a
    warm-up), and the median over rounds of first / second timed back to back: on a shared,
    busy machine the pair sees the same load, so the ratio holds better than either time."""
    first()
    second()
    best = [math.inf, math.inf]
    ratios = []
    for _ in range(repeats):
        times = []
        for i, fn in enumerate((first, second)):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
            best[i] = min(best[i], times[-1])
        ratios.append(times[0] / times[1])
    return best[0], best[1], statistics.median(ratios)


def core_plan(renderer: LayeredRenderer, image: np.ndarray, coc: np.ndarray) -> LayerPlan:
    """The padded layers that ``render`` blurs (the renderer's own ``plan``)."""
    linear, layers = renderer.prepare(image, coc)
    return renderer.plan(linear, layers)


def frames(size: int, max_radius: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seeded test frames ``name -> (image (size, size, 3) uint8, signed CoC diameter px)``."""
    rng = np.random.default_rng(size)
    image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    radius = np.linspace(-max_radius, max_radius, size, dtype=np.float32)
    tilted = np.repeat(radius[:, None] * 2.0, size, axis=1)
    blocks = rng.uniform(-max_radius, max_radius, size=(8, 8)).astype(np.float32)
    blocks[0, 0], blocks[0, 1] = -max_radius, max_radius
    cell = np.ones((math.ceil(size / 8),) * 2, np.float32)
    stepped = np.kron(blocks, cell)[:size, :size] * 2.0
    return {"tilted": (image, tilted), "blocks": (image, stepped)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--max-radius", type=float, default=20.0, help="largest |CoC radius|, px")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args()
    renderer = LayeredRenderer(device=args.device)
    print(
        f"device {renderer.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"radii -{args.max_radius:g}..+{args.max_radius:g} px, max {renderer.max_layers} layers, "
        f"options {renderer.params()}"
    )
    print(
        f"{'size':>9} {'frame':>7} {'layers':>6} {'render s':>9} {'renders/s':>9} {'core s':>8} "
        f"{'render/core':>11}"
    )
    for size in args.sizes:
        for name, (image, coc) in frames(size, args.max_radius).items():
            plan = core_plan(renderer, image, coc)
            t_render, t_core, ratio = _timed_pair(
                lambda image=image, coc=coc: renderer.render(image, coc),
                plan.blur,
                args.repeats,
                renderer.device,
            )
            print(
                f"{size:>4}x{size:<4} {name:>7} {len(plan.counts):>6} {t_render:>9.3f} "
                f"{1 / t_render:>9.2f} {t_core:>8.3f} {ratio:>11.2f}"
            )


if __name__ == "__main__":
    main()
