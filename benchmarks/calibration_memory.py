"""Calibration memory: peak RSS of ``calibrate`` for 8 and 64 synthetic scenes (target: < 50 MB apart).

Each calibration runs in a fresh child process that reports its own peak RSS, so the two runs
do not share allocations. The plan's "collect all pixels into a flat array" would need
``values x 4 bytes``: printed beside, for scale.

    python benchmarks/calibration_memory.py [--scenes 8 64] [--frames 8] [--size 128 160]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trainset.store import atomic_write_json, atomic_write_npz


def write_scenes(root: Path, n_scenes: int, n_frames: int, shape: tuple[int, int]) -> None:
    """Synthetic depth-only dataset: scene_index.json, depth_maps/depth_XXXX.npz and stats.json."""
    index = {}
    rng = np.random.default_rng(n_scenes)
    for s in range(n_scenes):
        scene_id = f"scene_{s:04d}"
        near, far = rng.uniform(0.5, 2.0), rng.uniform(8.0, 40.0)
        rows = np.linspace(near, far, shape[0], dtype=np.float32)[:, None]
        values = []
        for t in range(n_frames):
            noise = rng.uniform(0.95, 1.05, size=shape).astype(np.float32)
            depth = (rows * noise).astype(np.float16)
            values.append(depth.astype(np.float32))
            atomic_write_npz(
                root / scene_id / "depth_maps" / f"depth_{t:04d}.npz", {"depth": depth}
            )
        stack = np.stack(values)
        atomic_write_json(
            root / scene_id / "depth_maps" / "stats.json",
            {
                "d_min": float(stack.min()),
                "d_max": float(stack.max()),
                "d_median": float(np.median(stack)),
                "d_p5": float(np.percentile(stack, 5)),
                "d_p95": float(np.percentile(stack, 95)),
            },
        )
        index[scene_id] = {
            "frames": [f"frame_{t:04d}.png" for t in range(n_frames)],
            "split": "train",
        }
    atomic_write_json(root / "scene_index.json", index)


def child(root: Path) -> None:
    """Run the calibration and print JSON with the peak RSS of this process."""
    from trainset.focus.calibration import calibrate

    start = time.perf_counter()
    stats = calibrate(root, sample_fraction=1.0, show_progress=False)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "peak_rss_mb": peak_kb / 1024,
                "values": stats["counts"]["values"],
                "seconds": time.perf_counter() - start,
                "p95": stats["p95"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=[128, 160], metavar=("H", "W"))
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="calib_mem_") as tmp:
        for n in args.scenes:
            root = Path(tmp) / f"n{n}"
            write_scenes(root, n, args.frames, tuple(args.size))
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(root)],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append((n, json.loads(done.stdout.strip().splitlines()[-1])))
    base_n, base = results[0]
    print(f"{args.frames} frames of {args.size[0]}x{args.size[1]} per scene, 4 parameter sets")
    print(
        f"{'scenes':>6} {'values':>11} {'peak RSS MB':>11} {'vs base MB':>10} {'flat array MB':>13} {'s':>6}"
    )
    for n, r in results:
        print(
            f"{n:>6} {r['values']:>11} {r['peak_rss_mb']:>11.1f} "
            f"{r['peak_rss_mb'] - base['peak_rss_mb']:>+10.1f} {r['values'] * 4 / 2**20:>13.1f} "
            f"{r['seconds']:>6.1f}"
        )
    spread = max(r["peak_rss_mb"] for _, r in results) - min(r["peak_rss_mb"] for _, r in results)
    verdict = "PASS" if spread < 50 else "FAIL"
    print(f"peak RSS spread {spread:.1f} MB (target < 50 MB, baseline {base_n} scenes): {verdict}")


if __name__ == "__main__":
    main()
