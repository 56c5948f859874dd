"""Write small per-scene focus outputs in the plan's layout, with values that name their source.

Each scene is also entered in ``root/scene_index.json``. Frame t of a scene has R = t, G = 10 + t, B = pixel column; depth t = 1 + t/8 + col/64 m
(float16); focus of set s at frame t = (s + 1) / 8 + t / 64 (float16); bokeh of set s, frame t
has R = 100 + 10*s + t.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainset.store import atomic_write_json, atomic_write_npz, atomic_write_png, atomic_write_text

SETS = [
    {"f": 0.05, "N": 2.0, "S_focus": 3.0, "max_coc": 0.0004},
    {"f": 0.035, "N": 4.0, "S_focus": 1.5, "max_coc": 0.0004},
]


def frame_rgb(t: int, h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = t
    img[..., 1] = 10 + t
    img[..., 2] = np.arange(w, dtype=np.uint8)[None, :]
    return img


def depth_map(t: int, h: int, w: int) -> np.ndarray:
    cols = np.arange(w, dtype=np.float32)[None, :] / 64
    return np.broadcast_to(1 + t / 8 + cols, (h, w)).astype(np.float16)


def focus_value(s: int, t: int) -> float:
    return (s + 1) / 8 + t / 64


def bokeh_rgb(s: int, t: int, h: int, w: int) -> np.ndarray:
    img = frame_rgb(t, h, w)
    img[..., 0] = 100 + 10 * s + t
    return img


def write_scene(
    root: Path,
    scene_id: str,
    split: str = "train",
    n_frames: int = 6,
    h: int = 8,
    w: int = 12,
    sets: list[dict[str, float]] = SETS,
    bokeh: bool = True,
) -> Path:
    d = root / scene_id
    for t in range(n_frames):
        atomic_write_png(d / "frames_sharp" / f"frame_{t:04d}.png", frame_rgb(t, h, w))
        atomic_write_npz(d / "depth_maps" / f"depth_{t:04d}.npz", {"depth": depth_map(t, h, w)})
        for s in range(len(sets)):
            focus = np.full((h, w), focus_value(s, t), np.float16)
            atomic_write_npz(
                d / "focus_maps" / f"set_{s:02d}" / f"focus_{t:04d}.npz", {"focus_map": focus}
            )
            if bokeh:
                atomic_write_png(
                    d / "bokeh_renders" / f"set_{s:02d}" / f"bokeh_{t:04d}.png",
                    bokeh_rgb(s, t, h, w),
                )
    atomic_write_json(d / "metadata.json", {"scene_id": scene_id, "sets": sets})
    atomic_write_text(d / "split.txt", split + "\n")
    index_path = root / "scene_index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index[scene_id] = {"frames": [f"frame_{t:04d}.png" for t in range(n_frames)], "split": split}
    atomic_write_json(index_path, index)
    return d
