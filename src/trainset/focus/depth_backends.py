"""Depth backends: a registry of producers of per-frame metric depth for one scene.

A backend turns a :class:`DepthScene` (sharp frames, raw folder) into an iterator of (H, W)
float32 depth maps in metres, one per frame, in order. The shared depth writer
(:mod:`trainset.focus.depth`) patches, clamps, stores and checks what it yields, so every
backend gets the same output format and checks.

Built in: ``provided`` (known depth shipped with the raw frames). ``vda`` registers itself
when :mod:`trainset.focus.vda` is imported (done lazily by :func:`make_depth_backend`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from trainset.errors import InputError
from trainset.focus.backend_registry import BackendRegistry
from trainset.store.codecs import npz_headers, read_npz_array, read_png

# Where the depth files of the `provided` backend live, relative to raw_root/{scene_id}.
PROVIDED_DEPTH_DIR = "depth"
PROVIDED_DEPTH_EXTS = (".npy", ".npz", ".png")
# 16-bit PNG depth is commonly stored in millimetres (Kinect, TUM, ScanNet): 1000 units per metre.
DEFAULT_DEPTH_SCALE = 1000.0


@dataclass(frozen=True)
class DepthScene:
    """One scene as a depth backend sees it."""

    scene_id: str
    frame_paths: tuple[Path, ...]  # {out_root}/{scene}/frames_sharp/frame_XXXX.png in order
    raw_dir: Path  # {raw_root}/{scene}

    def iter_frames(self) -> Iterator[np.ndarray]:
        """Frames as (H, W, 3) uint8 RGB arrays, one at a time, in order."""
        for path in self.frame_paths:
            yield read_png(path, mode="RGB")


class DepthBackend(Protocol):
    """Produces metric depth for a scene."""

    name: str

    def params(self) -> dict[str, Any]:
        """Everything that shapes the output (goes into the sentinel hash)."""
        ...

    def predict(self, scene: DepthScene) -> Iterator[np.ndarray]:
        """(H, W) float32 depth in metres per frame, in frame order."""
        ...


DepthBackendFactory = Callable[..., DepthBackend]

# Backends whose module registers them on import are imported only when asked for by name.
_REGISTRY: BackendRegistry[DepthBackend] = BackendRegistry(
    "depth", lazy={"vda": "trainset.focus.vda"}
)


def register_depth_backend(name: str, factory: DepthBackendFactory) -> None:
    """Make ``make_depth_backend(name, **options)`` call ``factory(**options)``."""
    _REGISTRY.register(name, factory)


def depth_backend_names() -> list[str]:
    """Names of the registered backends plus those that register on import."""
    return _REGISTRY.names()


def make_depth_backend(name: str, **options: Any) -> DepthBackend:
    """Build the backend ``name`` with ``options``; InputError for an unknown name or option."""
    return _REGISTRY.make(name, **options)


def shared_depth_backend(name: str, **options: Any) -> DepthBackend:
    """:func:`make_depth_backend` built once per process and reused."""
    return _REGISTRY.shared(name, **options)


def load_depth_file(path: Path, *, depth_scale: float = DEFAULT_DEPTH_SCALE) -> np.ndarray:
    """One provided depth map as (H, W) float32 metres.

    ``.npy``: one 2-D array in metres. ``.npz``: key ``depth`` (or its only array) in metres.
    ``.png``: 16-bit single channel, ``depth_scale`` units per metre.
    """
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"unreadable depth file: {exc}", file=path) from exc
    elif suffix == ".npz":
        keys = list(npz_headers(path))
        key = "depth" if "depth" in keys else (keys[0] if len(keys) == 1 else "depth")
        arr = read_npz_array(path, key)
    elif suffix == ".png":
        arr = read_png(path, mode=None)
        if arr.ndim != 2 or arr.dtype not in (np.uint16, np.int32):
            raise InputError(
                "PNG depth must be 16-bit single channel",
                file=path,
                expected="uint16 (H, W)",
                found=f"{arr.dtype} {arr.shape}",
            )
        arr = arr.astype(np.float32) / np.float32(depth_scale)
    else:
        raise InputError(
            "unsupported depth file type", file=path, expected=PROVIDED_DEPTH_EXTS, found=suffix
        )
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(
            "depth must be a 2-D numeric array",
            file=path,
            expected="(H, W) numbers",
            found=f"{arr.shape} {arr.dtype}",
        )
    return arr.astype(np.float32, copy=False)


class ProvidedDepth:
    """Depth shipped with the raw frames: ``raw_root/{scene}/depth/`` with one file per frame.

    Files are taken in sorted name order; their count and (H, W) must match the frames.
    """

    name = "provided"

    def __init__(self, depth_scale: float | str = DEFAULT_DEPTH_SCALE) -> None:
        scale = float(depth_scale)
        if not np.isfinite(scale) or scale <= 0:
            raise InputError(
                "depth scale must be a positive number of units per metre",
                key="--depth-scale",
                expected="> 0",
                found=depth_scale,
            )
        self.depth_scale = scale

    def params(self) -> dict[str, Any]:
        """The depth scale (units per metre of 16-bit PNG depth)."""
        return {"depth_scale": self.depth_scale}

    def depth_files(self, scene: DepthScene) -> list[Path]:
        """The scene's depth files, checked against its frame count."""
        folder = scene.raw_dir / PROVIDED_DEPTH_DIR
        if not folder.is_dir():
            raise InputError(
                "provided depth folder not found",
                file=folder,
                expected=f"{len(scene.frame_paths)} depth files",
                found="no folder",
            )
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file()
            and p.suffix.lower() in PROVIDED_DEPTH_EXTS
            and not p.name.startswith(".")
        )
        if len(files) != len(scene.frame_paths):
            raise InputError(
                "depth file count differs from frame count",
                file=folder,
                expected=len(scene.frame_paths),
                found=len(files),
            )
        return files

    def predict(self, scene: DepthScene) -> Iterator[np.ndarray]:
        """Each provided depth map in metres, shape-checked against its frame."""
        files = self.depth_files(scene)
        for frame_path, depth_path in zip(scene.frame_paths, files):
            with Image.open(frame_path) as img:
                width, height = img.size
            depth = load_depth_file(depth_path, depth_scale=self.depth_scale)
            if depth.shape != (height, width):
                raise InputError(
                    "depth shape differs from its frame",
                    file=depth_path,
                    expected=(height, width),
                    found=depth.shape,
                )
            yield depth


register_depth_backend("provided", ProvidedDepth)
