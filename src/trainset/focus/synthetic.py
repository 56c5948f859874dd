"""Synthetic raw scenes with known metric depth, in the plan's raw layout.

Each scene is a textured background (a receding plane: far at the top row, nearer at the
bottom) and foreground objects (discs and rectangles, each at one depth) seen by a pinhole
camera translating sideways, so objects shift against the background by parallax
(``focal_px * tx / depth`` pixels) and occlude it with sharp depth edges. Indoor-like scenes
span 0.5-8 m, outdoor-like 2-80 m. Written as ``raw_root/{scene}/frame_XXXX.png`` (or
``.jpg``) and ``raw_root/{scene}/depth/depth_XXXX.npy`` (float32 metres). The same seed gives
the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import zoom

from trainset.errors import InputError
from trainset.pipeline.seeds import derive_seed
from trainset.store.atomic import atomic_write_bytes, atomic_write_npy, atomic_write_png

# Depth ranges (metres): indoor-like rooms and outdoor-like streets/landscapes.
DEPTH_RANGES_M = {"indoor": (0.5, 8.0), "outdoor": (2.0, 80.0)}


@dataclass(frozen=True)
class _Object:
    depth_m: float
    cx: float
    cy: float
    r: float
    disc: bool
    tex: np.ndarray


@dataclass(frozen=True)
class SyntheticScene:
    """One generated scene: its id, kind, and the files written."""

    scene_id: str
    kind: str
    frame_paths: tuple[Path, ...]
    depth_paths: tuple[Path, ...]


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(height, width, 3) float32 colour texture 0..255: smooth blobs plus fine grain."""
    cell = 8
    coarse = rng.random((height // cell + 2, width // cell + 2, 3), dtype=np.float32)
    smooth = zoom(coarse, (cell, cell, 1), order=1)[:height, :width]
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    grain = rng.normal(0.0, 12.0, size=(height, width, 3)).astype(np.float32)
    return np.clip(base + (smooth - 0.5) * 120.0 + grain, 0, 255)


def render_scene(
    n_frames: int, height: int, width: int, kind: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and depth (T, H, W) float32 metres of one synthetic scene."""
    if kind not in DEPTH_RANGES_M:
        raise InputError(
            "unknown scene kind", key="kind", expected=sorted(DEPTH_RANGES_M), found=kind
        )
    near, far = DEPTH_RANGES_M[kind]
    rng = np.random.default_rng(seed)
    focal_px = float(width)
    # Background plane: inverse depth linear in the row, from 1/far (top) to 1/(far/3) (bottom).
    inv = np.linspace(1.0 / far, 3.0 / far, height, dtype=np.float64)
    bg_depth = (1.0 / inv).astype(np.float32)
    # Objects, drawn far to near; depths within [near, far/3] so they stand before the plane.
    n_objects = 3
    obj_depths = np.sort(rng.uniform(near, far / 3.0, size=n_objects))[::-1]
    objects = []
    for d in obj_depths:
        objects.append(
            _Object(
                depth_m=float(np.float32(d)),
                cx=float(rng.uniform(0.2, 0.8) * width),
                cy=float(rng.uniform(0.25, 0.75) * height),
                r=float(rng.uniform(0.08, 0.2) * min(height, width)),
                disc=bool(rng.random() < 0.5),
                tex=_texture(rng, height, width),
            )
        )
    # Camera translation per frame: the nearest object moves about 1.5 px per frame.
    step_m = 1.5 * float(obj_depths.min()) / focal_px
    margin = int(np.ceil(focal_px * step_m * n_frames / float(bg_depth.min()))) + 2
    bg_tex = _texture(rng, height, width + margin)
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    yy, xx = np.mgrid[0:height, 0:width]

    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    depth = np.empty((n_frames, height, width), dtype=np.float32)
    for t in range(n_frames):
        tx = t * step_m
        shift = np.round(focal_px * tx / bg_depth.astype(np.float64)).astype(np.int64)
        img = bg_tex[rows, cols + shift[:, None]]
        dep = np.broadcast_to(bg_depth[:, None], (height, width)).copy()
        for obj in objects:
            dx = -focal_px * tx / obj.depth_m
            cx = obj.cx + dx
            if obj.disc:
                mask = (xx - cx) ** 2 + (yy - obj.cy) ** 2 <= obj.r**2
            else:
                mask = (np.abs(xx - cx) <= obj.r) & (np.abs(yy - obj.cy) <= 0.7 * obj.r)
            src_x = np.clip(np.round(xx - dx).astype(np.int64), 0, width - 1)
            img = np.where(mask[..., None], obj.tex[yy, src_x], img)
            dep[mask] = obj.depth_m
        frames[t] = np.round(img).astype(np.uint8)
        depth[t] = dep
    return frames, depth


def generate_scenes(
    raw_root: str | Path,
    *,
    n_scenes: int = 6,
    n_frames: int = 24,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    image_format: str = "png",
) -> list[SyntheticScene]:
    """Write ``n_scenes`` scenes (``scene_000``...; even indoor, odd outdoor) under ``raw_root``.

    ``size`` is (height, width) in pixels; ``image_format`` ``png`` or ``jpg`` (quality 95).
    """
    if image_format not in ("png", "jpg"):
        raise InputError("image format must be png or jpg", key="image_format", found=image_format)
    if n_scenes < 1 or n_frames < 1 or min(size) < 8:
        raise InputError(
            "need at least 1 scene, 1 frame and 8x8 pixels",
            expected="n_scenes >= 1, n_frames >= 1, size >= (8, 8)",
            found=(n_scenes, n_frames, size),
        )
    root = Path(raw_root)
    scenes = []
    for i in range(n_scenes):
        scene_id = f"scene_{i:03d}"
        kind = "indoor" if i % 2 == 0 else "outdoor"
        frames, depth = render_scene(n_frames, size[0], size[1], kind, derive_seed(seed, scene_id))
        frame_paths = []
        depth_paths = []
        for t in range(n_frames):
            frame_path = root / scene_id / f"frame_{t:04d}.{image_format}"
            if image_format == "png":
                atomic_write_png(frame_path, frames[t], compress_level=1)
            else:
                buf = io.BytesIO()
                Image.fromarray(frames[t]).save(buf, format="JPEG", quality=95)
                atomic_write_bytes(frame_path, buf.getvalue())
            depth_path = root / scene_id / "depth" / f"depth_{t:04d}.npy"
            atomic_write_npy(depth_path, depth[t])
            frame_paths.append(frame_path)
            depth_paths.append(depth_path)
        scenes.append(SyntheticScene(scene_id, kind, tuple(frame_paths), tuple(depth_paths)))
    return scenes
