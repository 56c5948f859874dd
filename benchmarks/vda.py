"""Video-Depth-Anything speed: milliseconds per 32-frame window, random weights.

On a CUDA GPU: vits and vitl at 32x518x518 in fp32 and fp16 autocast, beside the official A100
figures. On CPU: a small input size (default 56; 518 takes minutes per window on a laptop CPU),
said in the output. Ratios are against vits fp32 measured in the same process, plus the overhead
of the streaming pipeline (preprocessing, cross-fade, resize) over the bare model.

    PYTHONPATH=src python benchmarks/vda.py [--device auto] [--input-size N] [--repeats N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from trainset.focus.vda.backend import resolve_device
from trainset.focus.vda.inference import WINDOW, ModelWindowPredictor, stream_video_depth
from trainset.focus.vda.model import VideoDepthAnything
from trainset.focus.vda.motion import sinusoidal_encoding

# Official per-window latency on an A100 (Video-Depth-Anything README), 32 x 518 x 518.
OFFICIAL_A100_MS = {("vits", "fp32"): 9.0, ("vitl", "fp32"): 67.0, ("vitl", "fp16"): 14.0}


def random_model(encoder: str, device: torch.device) -> VideoDepthAnything:
    """Random-weight model built without a CPU initialisation pass (meta, then filled on device)."""
    with torch.device("meta"):
        model = VideoDepthAnything(encoder)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("pos_encoder.pe"):
                tensor.copy_(sinusoidal_encoding(tensor.shape[1], tensor.shape[2]))
            elif name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "gamma")):
                tensor.fill_(1.0)
            else:
                tensor.normal_(0.0, 0.02, generator=generator)
    return model.eval()


def timed_ms(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``run`` in milliseconds after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--input-size", type=int, default=None, help="square side (multiple of 14)")
    parser.add_argument("--encoders", default="vits,vitl")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (3 CUDA, 1 CPU)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    size = args.input_size or (518 if cuda else 56)
    repeats = args.repeats or (3 if cuda else 1)
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"device {name}; window {WINDOW} x 3 x {size} x {size}; random weights")
    if not cuda:
        print(
            f"CPU run at input size {size} (not 518): figures are not comparable to the A100 ones"
        )
    x = torch.randn(1, WINDOW, 3, size, size, device=device)
    precisions = ["fp32", "fp16"] if cuda else ["fp32"]
    baseline = None
    for encoder in args.encoders.split(","):
        model = random_model(encoder, device)
        for precision in precisions:

            def run(model: VideoDepthAnything = model, precision: str = precision) -> object:
                with (
                    torch.inference_mode(),
                    torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16"),
                ):
                    return model(x)

            ms = timed_ms(run, device, repeats)
            baseline = baseline or ms
            official = OFFICIAL_A100_MS.get((encoder, precision))
            beside = f"; official A100 {official:.0f} ms" if official and size == 518 else ""
            print(
                f"{encoder} {precision}: {ms:9.1f} ms/window ({ms / WINDOW:.2f} ms/frame), "
                f"x{ms / baseline:.2f} vs vits fp32{beside}"
            )
        if encoder == "vits":
            frames = [np.full((size, size, 3), f, dtype=np.uint8) for f in range(2 * 22 + 10)]
            predictor = ModelWindowPredictor(model, device)

            def stream(p: ModelWindowPredictor = predictor, f: list[np.ndarray] = frames) -> object:
                return list(stream_video_depth(f, p, size, device))

            model_ms = timed_ms(partial(predictor, x), device, repeats)
            stream_ms = timed_ms(stream, device, repeats)
            per_window = stream_ms / 3  # 54 frames = 3 windows
            print(
                f"vits streaming pipeline ({'fp16 autocast' if cuda else 'fp32'}): "
                f"{per_window:.1f} ms/window, x{per_window / model_ms:.2f} vs the bare model"
            )
        del model
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
