"""Depth backends: a registry of producers of per-frame metric depth for one scene.

A backend turns a :class:`DepthScene` (sharp frames, raw folder) into an iterator of (H, W)
float32 depth maps in metres, one per frame, in order. The shared depth writer
(:mod:`trainset.focus.depth`) patches, clamps, stores and checks what it yields, so every
backend gets the same output format and checks.

Built in: ``provided`` (known depth shipped with the raw frames). ``vda`` registers itself
when :mod:`trainset.focus.vda` is imported (done lazily by :func:`make_depth_backend`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
# 16-bit PNG depth is commonly stored in millimetres (Kinect, 7-Scenes, ScanNet): 1000 units per
# metre (TUM RGB-D uses 5000).
DEFAULT_DEPTH_SCALE = 1000.0
# Metres outside which provided depth is "no measurement" (--depth-range): 1 mm is closer than any
# lens focuses and 10 km farther than defocus can tell from infinity, so no real scene is cut;
# narrow it to a sensor's range (e.g. 0.3,8 for a Kinect) to drop its stray far values too.
DEFAULT_DEPTH_RANGE_M = (1e-3, 1e4)


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


def parse_invalid_codes(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``--depth-invalid``: None (the default codes: 0 and the dtype's maximum), ``none`` (no
    code), or integers as a comma list (``0,65535``) or a sequence."""
    if value is None or isinstance(value, (list, tuple)):
        codes = value
    elif str(value).strip().lower() == "default":
        return None
    elif str(value).strip().lower() == "none":
        return ()
    else:
        try:
            codes = [int(part) for part in str(value).split(",") if part.strip()]
        except ValueError as exc:
            raise InputError(
                "invalid depth codes must be integers",
                key="--depth-invalid",
                expected="e.g. 0,65535 or none",
                found=value,
            ) from exc
    return None if codes is None else tuple(int(c) for c in codes)


def parse_depth_range(value: str | Sequence[float] | None) -> tuple[float, float]:
    """``--depth-range MIN,MAX`` in metres (default :data:`DEFAULT_DEPTH_RANGE_M`)."""
    if value is None:
        return DEFAULT_DEPTH_RANGE_M
    parts: Sequence[Any] = str(value).split(",") if isinstance(value, str) else value
    try:
        low, high = (float(v) for v in parts)
    except (TypeError, ValueError) as exc:
        raise InputError(
            "depth range must be two numbers MIN,MAX in metres",
            key="--depth-range",
            expected="e.g. 0.3,8",
            found=value,
        ) from exc
    if not (np.isfinite(low) and np.isfinite(high) and 0 < low < high):
        raise InputError(
            "depth range must be 0 < MIN < MAX metres",
            key="--depth-range",
            expected="0 < MIN < MAX",
            found=f"{low},{high}",
        )
    return (low, high)


def _read_depth_array(path: Path) -> np.ndarray:
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
        if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)  # PIL mode "I" for a 16-bit PNG
        if arr.ndim != 2 or arr.dtype != np.uint16:
            raise InputError(
                "PNG depth must be 16-bit single channel",
                file=path,
                expected="uint16 (H, W)",
                found=f"{arr.dtype} {arr.shape}",
            )
    else:
        raise InputError(
            "unsupported depth file type", file=path, expected=PROVIDED_DEPTH_EXTS, found=suffix
        )
    if arr.ndim != 2 or arr.dtype.kind not in "uif":
        raise InputError(
            "depth must be a 2-D array of real numbers",
            file=path,
            expected="(H, W) integer or float",
            found=f"{arr.shape} {arr.dtype}",
        )
    return arr


def read_depth_file(
    path: Path,
    *,
    depth_scale: float = DEFAULT_DEPTH_SCALE,
    invalid_codes: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One provided depth map: (H, W) float32 metres and the (H, W) mask of "no measurement".

    Float files (``.npy``, ``.npz`` key ``depth`` or their only array) hold metres. Integer
    files (16-bit PNG, integer ``.npy``/``.npz``) hold sensor units, ``depth_scale`` per metre;
    their pixels equal to one of ``invalid_codes`` (default: 0 and the dtype's maximum, the
    codes depth sensors write where they measured nothing) are masked. Complex or non-numeric
    arrays are refused.
    """
    arr = _read_depth_array(path)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32, copy=False), np.zeros(arr.shape, dtype=bool)
    codes = (0, int(np.iinfo(arr.dtype).max)) if invalid_codes is None else tuple(invalid_codes)
    invalid = (
        np.isin(arr, np.asarray(codes, dtype=np.int64)) if codes else np.zeros(arr.shape, bool)
    )
    return arr.astype(np.float32) / np.float32(depth_scale), invalid


class ProvidedDepth:
    """Depth shipped with the raw frames: ``raw_root/{scene}/depth/`` with one file per frame.

    Files are taken in sorted name order; their count and (H, W) must match the frames. Each map
    is yielded as a masked array whose mask marks "no measurement": sensor codes of integer
    files (``invalid_codes``, default 0 and the dtype's maximum) and values outside
    ``depth_range`` metres (default :data:`DEFAULT_DEPTH_RANGE_M`); the depth writer fills and
    counts them.
    """

    name = "provided"

    def __init__(
        self,
        depth_scale: float | str = DEFAULT_DEPTH_SCALE,
        invalid_codes: str | Sequence[int] | None = None,
        depth_range: str | Sequence[float] | None = None,
    ) -> None:
        scale = float(depth_scale)
        if not np.isfinite(scale) or scale <= 0:
            raise InputError(
                "depth scale must be a positive number of units per metre",
                key="--depth-scale",
                expected="> 0",
                found=depth_scale,
            )
        self.depth_scale = scale
        self.invalid_codes = parse_invalid_codes(invalid_codes)
        self.depth_range = parse_depth_range(depth_range)

    def params(self) -> dict[str, Any]:
        """Depth scale (units per metre of integer depth), invalid codes, valid range."""
        return {
            "depth_scale": self.depth_scale,
            "invalid_codes": "default" if self.invalid_codes is None else list(self.invalid_codes),
            "depth_range_m": list(self.depth_range),
        }

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
        """Each provided depth map in metres (masked where not measured), shape-checked."""
        files = self.depth_files(scene)
        low, high = self.depth_range
        for frame_path, depth_path in zip(scene.frame_paths, files):
            with Image.open(frame_path) as img:
                width, height = img.size
            depth, invalid = read_depth_file(
                depth_path, depth_scale=self.depth_scale, invalid_codes=self.invalid_codes
            )
            if depth.shape != (height, width):
                raise InputError(
                    "depth shape differs from its frame",
                    file=depth_path,
                    expected=(height, width),
                    found=depth.shape,
                )
            # NaN, Inf and <= 0 keep their own columns in the patch log; a positive value out of
            # the plausible range is "no measurement" like a sensor code.
            with np.errstate(invalid="ignore"):
                outside = np.isfinite(depth) & (depth > 0) & ((depth < low) | (depth > high))
            yield np.ma.MaskedArray(depth, mask=invalid | outside)


register_depth_backend("provided", ProvidedDepth)
