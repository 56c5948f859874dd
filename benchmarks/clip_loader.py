"""Clip loader throughput: the plan's per-frame files against the packed layout.

Reads random clips (all four modalities by default), interleaved round by round:

- plan files: ``FocusClipDataset(packed=False)`` under a ``DataLoader`` (batches of
  ``--batch``, ``ClipSampler`` order, ``collate_fn``, 0 workers): a PNG decode or NPZ inflate
  per frame and modality, what the plan's loader does (the baseline)
- packed items: ``FocusClipDataset`` item by item from ``trainset focus pack``'s memory maps
- focus/dm: ``FocusDataModule(root, batch_size=--batch, clip_len=...)``'s train loader from
  the packs, every other argument its default (threads chosen from the machine)

and checks first that all three give identical tensors. Ratios are computed within each round
(both sides measured back to back) and reported as median [min, max] over rounds.

``--root`` points at a focus dataset (e.g. the demo's output); it is packed in place (a
``packed/`` folder per scene) if it is not already. Without ``--root`` a synthetic set in the
plan's layout is written to a temporary folder (``--scenes``, ``--frames``, ``--size``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from trainset.focus.clips import MODALITIES, ClipSampler, FocusClipDataset, collate_fn
from trainset.focus.datamodule import FocusDataModule
from trainset.focus.pack import pack_dataset
from trainset.loading import default_threads
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


def batch_rate(loader: Iterable[dict[str, Any]], seconds: float) -> float:
    """Clips per second drawn from ``loader`` (passes repeated) for about ``seconds``."""
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        it = iter(loader)
        for batch in it:
            n += len(batch["scene_id"])
            if time.perf_counter() - t0 >= seconds:
                break
        close = getattr(it, "close", None)
        if close is not None:
            close()
    return n / (time.perf_counter() - t0)


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(
        torch.equal(v, b[k]) if isinstance(v, torch.Tensor) else v == b[k] for k, v in a.items()
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="focus dataset (packed in place)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--clip-len", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4, help="clips per batch")
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
            assert same(files[int(i)], packed[int(i)]), f"clip {i}: packed differs from files"
        print(
            f"{len(files)} clips of {args.clip_len} frames, modalities {mods}: "
            "packed == plan files on 8 clips"
        )
        dm = FocusDataModule(root, batch_size=args.batch, clip_len=args.clip_len, modalities=mods)
        dm_loader = dm.train_dataloader()
        plan = FocusClipDataset(root, args.split, clip_len=args.clip_len, modalities=mods,
                                packed=False)  # fmt: skip
        plan_loader = DataLoader(
            plan,
            batch_size=args.batch,
            sampler=ClipSampler(plan, seed=dm.seed),
            collate_fn=collate_fn,
            drop_last=True,
        )
        first = next(iter(dm_loader))
        want = collate_fn([plan[int(i)] for i in dm_loader.batch_sampler.batch(0, 0).indices])
        assert same(want, first), "FocusDataModule differs from the plan's files"
        print(f"focus/dm ({default_threads()} threads) == plan files on its first batch")
        rounds: dict[str, list[float]] = {"plan files": [], "packed items": [], "focus/dm": []}
        for r in range(args.rounds):
            steps = [
                ("plan files", lambda: batch_rate(plan_loader, args.seconds)),
                ("packed items", lambda: rate(packed, order, args.seconds)),
                ("focus/dm", lambda: batch_rate(dm_loader, args.seconds)),
            ]
            for name, fn in steps if r % 2 == 0 else steps[::-1]:
                rounds[name].append(fn())
            line = " | ".join(f"{k} {v[-1]:8.1f}" for k, v in rounds.items())
            dm_ratio = rounds["focus/dm"][-1] / rounds["plan files"][-1]
            print(f"round {r + 1}: {line} clips/s; focus/dm {dm_ratio:.1f}x plan files", flush=True)
        med = {k: float(np.median(v)) for k, v in rounds.items()}
        ratio = [d / p for d, p in zip(rounds["focus/dm"], rounds["plan files"])]
        items = [d / p for d, p in zip(rounds["packed items"], rounds["plan files"])]
        print("\nmedian clips/s: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()))
        print(
            f"packed items {np.median(items):.1f}x plan files [{min(items):.1f}, {max(items):.1f}]"
        )
        print(
            f"acceptance: focus/dm from packs {np.median(ratio):.1f}x the plan's files "
            f"[{min(ratio):.1f}, {max(ratio):.1f}] (>= 5); load {os.getloadavg()[0]:.2f}"
        )
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
