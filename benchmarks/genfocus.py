"""GenFocus backends on the CPU with a tiny random FLUX: time per frame, against ``layered``.

Writes a tiny FLUX.1-dev-layout folder, both LoRA files and the cached prompts
(trainset.testing.genfocus_models) to a temp dir, builds the deblur backend and the renderer the
way `trainset focus deblur --backend genfocus` and `render --renderer genfocus` do (default
options: 28 steps, tiling from 512 px), and times ``sharpen`` and ``render`` per frame at each
size. In the same process the ``layered`` renderer renders the same frame and CoC map. Prints
ms/frame and the ratio genfocus render / layered render. The tiny transformer has ~80K
parameters, FLUX.1-dev 12B: these figures time the pipeline around the model, not the model.

    python benchmarks/genfocus.py [--sizes 64 256 512] [--frames 4] [--steps 28]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainset.focus.genfocus.backends import (
    BOKEH_PROMPT,
    DEBLUR_PROMPT,
    GenFocusDeblur,
    GenFocusRenderer,
)
from trainset.focus.render import LayeredRenderer
from trainset.testing.genfocus_models import write_prompt, write_tiny_flux, write_tiny_lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--frames", type=int, default=4, help="frames per deblur call")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        transformer = write_tiny_flux(root / "flux")
        common = {"flux_dir": str(root / "flux"), "cache_dir": str(root / "cache")}
        common["steps"] = str(args.steps)
        for prompt in (DEBLUR_PROMPT, BOKEH_PROMPT):
            write_prompt(root / "flux", prompt, root / "cache")
        deblur = GenFocusDeblur(
            lora=str(write_tiny_lora(root / "d.safetensors", transformer)), **common
        )
        bokeh = GenFocusRenderer(
            lora=str(write_tiny_lora(root / "b.safetensors", transformer)), **common
        )
        layered = LayeredRenderer(device="cpu")
        rng = np.random.default_rng(0)
        print(f"tiny FLUX ({sum(p.numel() for p in transformer.parameters())} parameters), "
              f"{args.steps} steps, {torch.get_num_threads()} torch thread(s), CPU")  # fmt: skip
        print(f"{'size':>9} {'deblur ms/frame':>16} {'bokeh ms/frame':>15} "
              f"{'layered ms/frame':>17} {'bokeh / layered':>16}")  # fmt: skip
        for size in args.sizes:
            frames = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(2)]
            coc = np.linspace(-12, 12, size * size, dtype=np.float32).reshape(size, size)
            deblur.sharpen(frames[:1], scene_id="warm-up")  # loads the model once
            bokeh.render(frames[0], coc)
            start = time.perf_counter()
            list(deblur.sharpen([frames[0]] * args.frames, scene_id="bench"))
            t_deblur = (time.perf_counter() - start) / args.frames
            start = time.perf_counter()
            bokeh.render(frames[1], coc)
            t_bokeh = time.perf_counter() - start
            layered.render(frames[1], coc)
            start = time.perf_counter()
            layered.render(frames[1], coc)
            t_layered = time.perf_counter() - start
            print(f"{size:>4}x{size:<4} {t_deblur * 1e3:>16.0f} {t_bokeh * 1e3:>15.0f} "
                  f"{t_layered * 1e3:>17.1f} {t_bokeh / t_layered:>16.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
