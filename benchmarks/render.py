"""Renderer ``layered`` speed: renders/s, against the bare blur of the same layer stack.

For each size, a textured frame whose signed CoC radius runs from -R to +R px (a tilted plane
crossing the focus plane) is rendered end to end (sRGB decode, layer assignment, blur,
compositing, uint8 output ready for PNG). In the same process the irreducible core, the batched
FFT blur of exactly the layer stack that render blurs, is timed alone. Prints renders/s and the
ratio whole render / core (target: at most 2).

    python benchmarks/render.py [--sizes 256 512] [--max-radius 20] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from trainset.focus.render import LayeredRenderer, blur_layers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed_pair(first, second, repeats: int, device: torch.device) -> tuple[float, float]:
    """Best time of each of two functions over ``repeats`` interleaved runs (after a warm-up):
    interleaving and the minimum keep a shared, busy machine from favouring either side."""
    first()
    second()
    best = [math.inf, math.inf]
    for _ in range(repeats):
        for i, fn in enumerate((first, second)):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def core_stack(renderer: LayeredRenderer, image: np.ndarray, coc: np.ndarray):
    """The padded stack and radii that ``render`` blurs (the renderer's own ``blur_input``)."""
    linear, layers = renderer.prepare(image, coc)
    _, _, stack, radii, _ = renderer.blur_input(linear, layers)
    return stack, radii


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
        f"radii -{args.max_radius:g}..+{args.max_radius:g} px, max {renderer.max_layers} layers"
    )
    print(
        f"{'size':>9} {'layers':>6} {'render s':>9} {'renders/s':>9} {'core s':>8} {'render/core':>11}"
    )
    for size in args.sizes:
        rng = np.random.default_rng(size)
        image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        radius = np.linspace(-args.max_radius, args.max_radius, size, dtype=np.float32)
        coc = np.repeat(radius[:, None] * 2.0, size, axis=1)
        padded, radii = core_stack(renderer, image, coc)
        t_render, t_core = _timed_pair(
            lambda image=image, coc=coc: renderer.render(image, coc),
            lambda padded=padded, radii=radii: blur_layers(padded, radii),
            args.repeats,
            renderer.device,
        )
        print(
            f"{size:>4}x{size:<4} {radii.numel():>6} {t_render:>9.3f} {1 / t_render:>9.2f} "
            f"{t_core:>8.3f} {t_render / t_core:>11.2f}"
        )


if __name__ == "__main__":
    main()
