"""A small demo-like focus data set with one scene that fails at depth (for report tests).

``build_set_with_failed_scene(root)`` writes synthetic raw scenes with known depth, truncates
one depth file of ``FAILED_SCENE`` and runs index, deblur, depth (that scene fails),
calibrate (on every scene with depth), render and validate through the CLI, in this process.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from trainset.cli import main
from trainset.focus.synthetic import generate_scenes

FAILED_SCENE = "scene_001"
BROKEN_FILE = "depth_0002.npy"


def build_set_with_failed_scene(root: Path, *, n_scenes: int = 4, n_frames: int = 4) -> Path:
    """Raw scenes under ``root/raw``, the data set under ``root/out`` (returned)."""
    raw, out = root / "raw", root / "out"
    generate_scenes(raw, n_scenes=n_scenes, n_frames=n_frames, size=(24, 32), seed=1)
    broken = raw / FAILED_SCENE / "depth" / BROKEN_FILE
    broken.write_bytes(broken.read_bytes()[:100])  # a truncated .npy
    steps = [
        ["index", "--raw-root", str(raw), "--min-frames", str(n_frames)],
        ["deblur"],
        ["depth"],
        ["calibrate", "--sample-fraction", "1"],
        ["render", "--max-coc", "from-stats"],
        ["validate"],
    ]
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        for step in steps:
            main(["focus", step[0], "--out-root", str(out), *step[1:]])
    return out
