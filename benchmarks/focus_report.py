"""Focus report: peak RSS and time of `trainset focus report` showing 8 and 64 scenes.

A small synthetic data set is made once with the demo pipeline, then its scenes are repeated
(hard links) to build sets of each size. Each report runs in a fresh child process that prints
its own peak RSS and time, and, as the baseline, the time to just decode the same files the
report reads (PNG frames and renders, NPZ depth and focus maps of the shown frames). Targets:
peak RSS independent of the number of scenes shown (< 50 MB apart: one scene's arrays at a
time), and a report time within a small factor of the baseline decode.

    python benchmarks/focus_report.py [--scenes 8 64] [--frames 2] [--size 270 480]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from trainset.focus.demo import run_focus_demo
from trainset.focus.layout import bokeh_path, depth_path, focus_path, frame_path
from trainset.focus.report import FocusReportOptions, build_focus_report
from trainset.focus.report_scene import pick_frames
from trainset.store import read_json, read_npz_array

BASE_SCENES = 2
FRAMES_PER_SCENE = 8
SETS = 4


def make_set(base: Path, out: Path, n_scenes: int) -> None:
    """``n_scenes`` scenes, each a hard-linked copy of a scene of ``base``."""
    index = read_json(base / "scene_index.json")
    ids = sorted(index)
    new_index = {}
    for i in range(n_scenes):
        source = ids[i % len(ids)]
        scene = f"scene_{i:04d}"
        shutil.copytree(base / source, out / scene, copy_function=os.link)
        new_index[scene] = index[source]
    for name in ("logs", "config.yaml"):
        if (base / name).is_dir():
            shutil.copytree(base / name, out / name, copy_function=os.link)
        else:
            os.link(base / name, out / name)
    (out / "scene_index.json").write_text(json.dumps(new_index))


def decode_shown(root: Path, frames: int) -> float:
    """Seconds to decode the files a report of every scene reads (the baseline)."""
    start = time.perf_counter()
    for scene, entry in read_json(root / "scene_index.json").items():
        for t in pick_frames(len(entry["frames"]), frames):
            with Image.open(frame_path(root, scene, t)) as img:
                np.asarray(img.convert("RGB"))
            read_npz_array(depth_path(root, scene, t), "depth")
            for s in range(SETS):
                read_npz_array(focus_path(root, scene, s, t), "focus_map")
                with Image.open(bokeh_path(root, scene, s, t)) as img:
                    np.asarray(img.convert("RGB"))
    return time.perf_counter() - start


def child(root: Path, frames: int) -> None:
    """Build the report of every scene of ``root``; print JSON with time and peak RSS."""
    n = len(read_json(root / "scene_index.json"))
    baseline = decode_shown(root, frames)
    start = time.perf_counter()
    report = build_focus_report(
        root, FocusReportOptions(scenes=n, frames=frames), stream=io.StringIO()
    )
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "baseline": baseline,
                "peak_rss_mb": peak_kb / 1024,
                "bytes": report.size_bytes,
                "images": report.images,
                "shown": len(report.scenes_shown),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--frames", type=int, default=2, help="frames shown per scene")
    parser.add_argument("--size", type=int, nargs=2, default=[270, 480], metavar=("H", "W"))
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.frames)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="focus_report_") as tmp:
        with open(os.devnull, "w") as quiet:
            stdout, stderr = sys.stdout, sys.stderr
            sys.stdout = sys.stderr = quiet
            try:
                demo = run_focus_demo(
                    Path(tmp) / "base",
                    n_scenes=BASE_SCENES,
                    n_frames=FRAMES_PER_SCENE,
                    size=tuple(args.size),
                )
            finally:
                sys.stdout, sys.stderr = stdout, stderr
        for n in args.scenes:
            root = Path(tmp) / f"n{n}"
            root.mkdir()
            make_set(demo.out_root, root, n)
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(root), "--frames", str(args.frames)],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append((n, json.loads(done.stdout.strip().splitlines()[-1])))
    h, w = args.size
    print(f"{h}x{w} frames, {SETS} sets, {args.frames} frames shown per scene, every scene shown")
    print(
        f"{'scenes':>6} {'images':>6} {'report MB':>9} {'kB/scene':>8} {'peak RSS MB':>11} "
        f"{'report s':>8} {'decode s':>8} {'ratio':>6}"
    )
    for n, r in results:
        print(
            f"{n:>6} {r['images']:>6} {r['bytes'] / 1e6:>9.2f} {r['bytes'] / n / 1e3:>8.1f} "
            f"{r['peak_rss_mb']:>11.1f} {r['seconds']:>8.2f} {r['baseline']:>8.2f} "
            f"{r['seconds'] / r['baseline']:>6.2f}"
        )
    spread = max(r["peak_rss_mb"] for _, r in results) - min(r["peak_rss_mb"] for _, r in results)
    verdict = "PASS" if spread < 50 else "FAIL"
    print(f"peak RSS spread {spread:.1f} MB over {args.scenes} scenes (target < 50 MB): {verdict}")


if __name__ == "__main__":
    main()
