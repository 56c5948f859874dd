"""Clip loader throughput: the plan's per-frame files against the packed layout.

Reads random clips (all four modalities by default) with ``FocusClipDataset`` from the plan's
files (a PNG decode or NPZ inflate per frame and modality) and from ``trainset focus pack``'s
memory-mapped arrays, interleaved round by round, and checks that both give identical tensors.

``--root`` points at a focus dataset (e.g. the demo's output); it is packed in place (a
``packed/`` folder per scene) if it is not already. Without ``--root`` a synthetic set in the
plan's layout is written to a temporary folder (``--scenes``, ``--frames``, ``--size``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainset.focus.clips import MODALITIES, FocusClipDataset
from trainset.focus.pack import pack_dataset
from trainset.store import atomic_write_json, atomic_write_npz, atomic_write_png, atomic_write_text

N_SETS = 4


def smooth_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random image in [0, 1] (bilinear upsampling of a coarse grid)."""
    coarse = rng.random((h // 32 + 2, w // 32 + 2))
    ys = np.linspace(0, coarse.shape[0] - 1.001, h)
    xs = np.linspace(0, coarse.shape[1] - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    c = coarse
    return (
        c[y0][:, x0] * (1 - fy) * (1 - fx)
        + c[y0 + 1][:, x0] * fy * (1 - fx)
        + c[y0][:, x0 + 1] * (1 - fy) * fx
        + c[y0 + 1][:, x0 + 1] * fy * fx
    )


def build_set(root: Path, scenes: int, frames: int, size: int) -> None:
    """Synthetic scenes in the plan's layout (and scene_index.json): textured frames, smooth
    depth, 4 sets."""
    rng = np.random.default_rng(0)
    index = {}
    for k in range(scenes):
        d = root / f"scene_{k:03d}"
        index[d.name] = {"frames": [f"frame_{t:04d}.png" for t in range(frames)], "split": "train"}
        base = smooth_field(rng, size, size)
        depth = (1.0 + 9.0 * smooth_field(rng, size, size)).astype(np.float32)
        sets = [
            {"f": 0.05, "N": 2.0 + s, "S_focus": 2.0 + s, "max_coc": 4e-4} for s in range(N_SETS)
        ]
        for t in range(frames):
            shift = np.roll(base, t, axis=1)
            noise = rng.normal(0, 0.02, (size, size, 3))
            rgb = np.clip(shift[..., None] * [1.0, 0.8, 0.6] + noise, 0, 1)
            atomic_write_png(
                d / "frames_sharp" / f"frame_{t:04d}.png", (rgb * 255).astype(np.uint8)
            )
            atomic_write_npz(
                d / "depth_maps" / f"depth_{t:04d}.npz", {"depth": depth.astype(np.float16)}
            )
            for s, p in enumerate(sets):
                coc = (p["f"] ** 2 / (p["N"] * p["S_focus"])) * np.abs(depth - p["S_focus"]) / depth
                focus = (1.0 - np.clip(coc / p["max_coc"], 0, 1)).astype(np.float16)
                atomic_write_npz(
                    d / "focus_maps" / f"set_{s:02d}" / f"focus_{t:04d}.npz", {"focus_map": focus}
                )
                blur = np.clip(rgb * (0.5 + 0.5 * focus.astype(np.float32)[..., None]), 0, 1)
                atomic_write_png(
                    d / "bokeh_renders" / f"set_{s:02d}" / f"bokeh_{t:04d}.png",
                    (blur * 255).astype(np.uint8),
                )
        atomic_write_json(d / "metadata.json", {"scene_id": d.name, "sets": sets})
        atomic_write_text(d / "split.txt", "train\n")
    atomic_write_json(root / "scene_index.json", index)


def rate(ds: FocusClipDataset, order: np.ndarray, seconds: float) -> float:
    """Clips per second reading ``order`` (cycled) for about ``seconds``."""
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ds[int(order[n % len(order)])]
        n += 1
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="focus dataset (packed in place)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--clip-len", type=int, default=8)
    ap.add_argument("--modalities", default=",".join(MODALITIES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args(argv)
    own = args.root is None
    root = Path(tempfile.mkdtemp(prefix="trainset-clip-bench-")) if own else args.root
    try:
        if own:
            t0 = time.perf_counter()
            build_set(root, args.scenes, args.frames, args.size)
            print(
                f"synthetic set: {args.scenes} scenes x {args.frames} frames of {args.size}^2, "
                f"{N_SETS} sets, written in {time.perf_counter() - t0:.1f} s"
            )
        t0 = time.perf_counter()
        result = pack_dataset(root)
        print(
            f"pack: {len(result.packed)} packed, {len(result.current)} current, "
            f"{len(result.failed)} failed in {time.perf_counter() - t0:.1f} s"
        )
        mods = [m for m in args.modalities.split(",") if m]
        kw = {"clip_len": args.clip_len, "stride": 1, "modalities": mods}
        files = FocusClipDataset(root, args.split, packed=False, **kw)
        packed = FocusClipDataset(root, args.split, packed=True, **kw)
        order = np.random.default_rng(0).permutation(len(files))
        for i in order[:8]:
            a, b = files[int(i)], packed[int(i)]
            for key, value in a.items():
                same = (
                    torch.equal(value, b[key])
                    if isinstance(value, torch.Tensor)
                    else value == b[key]
                )
                assert same, f"clip {i} {key}: packed differs from the plan's files"
        print(
            f"{len(files)} clips of {args.clip_len} frames, modalities {mods}: "
            "packed == plan files on 8 clips"
        )
        r_files, r_packed = [], []
        for r in range(args.rounds):
            r_files.append(rate(files, order, args.seconds))
            r_packed.append(rate(packed, order, args.seconds))
            print(
                f"round {r + 1}: plan files {r_files[-1]:8.1f} clips/s | packed {r_packed[-1]:8.1f} clips/s",
                flush=True,
            )
        a, b = float(np.median(r_files)), float(np.median(r_packed))
        print(
            f"\nmedian: plan files {a:.1f} clips/s, packed {b:.1f} clips/s: packed {b / a:.1f}x (>= 5)"
        )
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
