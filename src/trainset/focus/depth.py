"""Phase 3: metric depth per scene, written and checked the same way for every backend.

Output per scene: ``depth_maps/depth_XXXX.npz`` (key ``depth``, float16, metres) and
``depth_maps/stats.json`` (``d_min, d_max, d_median, d_p5, d_p95`` of the valid pixels, plus
``valid_fraction``). A backend may yield masked arrays whose mask marks "no measurement" (the
``provided`` backend masks sensor codes and values outside ``--depth-range``). Before storing,
masked, NaN, Inf and non-positive pixels are replaced by the scene median of the valid pixels
(the plan's NaN rule), and values outside the positive float16 range are clamped to it; all are
counted in ``logs/depth_nan_patches.csv`` (masked ones in their own ``invalid`` column). A scene
in which some frame has fewer than ``min_valid_fraction`` valid pixels fails: most of that
frame's depth would be invented. The plan's checks go to ``logs/depth_sanity_warnings.txt``
(median depth outside the expected range) and ``logs/depth_consistency_warnings.txt``
(``mean|d[t+1] - d[t]| / mean(d[t]) > 0.15`` for some t).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainset.errors import InputError
from trainset.focus.config import (
    DEFAULT_CONSISTENCY_THRESHOLD,
    DEFAULT_MEDIAN_RANGE_M,
    DEFAULT_MIN_VALID_FRACTION,
)
from trainset.focus.deblur import frame_name
from trainset.focus.depth_backends import DepthBackend, DepthScene, shared_depth_backend
from trainset.focus.layout import DEPTH_DIR, SHARP_DIR, scene_frames
from trainset.pipeline.dataset_files import write_scene_log
from trainset.store.atomic import atomic_write_json, atomic_write_npz
from trainset.store.codecs import encode_csv

STATS_FILE = "stats.json"
PATCH_LOG = "depth_nan_patches.csv"
SANITY_LOG = "depth_sanity_warnings.txt"
CONSISTENCY_LOG = "depth_consistency_warnings.txt"
# Largest finite float16: larger depths are clamped to it (65504 m).
FLOAT16_MAX = float(np.finfo(np.float16).max)
# Smallest normal float16 (6.1e-5 m): smaller positive depths would round towards 0.
FLOAT16_MIN_POSITIVE = float(np.finfo(np.float16).tiny)


def depth_name(t: int) -> str:
    """``depth_XXXX.npz`` for frame index ``t``."""
    return f"depth_{t:04d}.npz"


def patch_invalid(
    depth: np.ndarray, fill_m: float, invalid: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Replace masked, NaN, Inf and non-positive pixels by ``fill_m``; clamp to the positive
    float16 range.

    ``depth``: (H, W) metres; ``invalid``: (H, W) mask of "no measurement" (sensor codes, out of
    range). Returns float32 (H, W) and counts ``invalid`` (masked), ``nan``, ``inf``,
    ``nonpositive`` (finite <= 0) and ``clamped``, each pixel counted once (in that order).
    """
    arr = np.asarray(depth, dtype=np.float32)
    masked = np.zeros(arr.shape, dtype=bool) if invalid is None else np.asarray(invalid, bool)
    nan = np.isnan(arr) & ~masked
    inf = np.isinf(arr) & ~masked
    nonpositive = np.isfinite(arr) & (arr <= 0) & ~masked
    out = np.where(masked | nan | inf | nonpositive, np.float32(fill_m), arr)
    high = out > FLOAT16_MAX
    low = out < FLOAT16_MIN_POSITIVE
    out = np.clip(out, FLOAT16_MIN_POSITIVE, FLOAT16_MAX).astype(np.float32)
    counts = {
        "invalid": int(masked.sum()),
        "nan": int(nan.sum()),
        "inf": int(inf.sum()),
        "nonpositive": int(nonpositive.sum()),
        "clamped": int(high.sum() + low.sum()),
    }
    return out, counts


def valid_mask(depth: np.ndarray, invalid: np.ndarray | None = None) -> np.ndarray:
    """Pixels that hold a measurement: not masked, finite and positive."""
    ok = np.isfinite(depth) & (depth > 0)
    return ok if invalid is None else ok & ~invalid


def depth_stats(maps: Iterable[np.ndarray]) -> dict[str, float]:
    """The plan's ``stats.json``: min, max, median, 5th and 95th percentile over all pixels (m)."""
    values = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return {
        "d_min": float(values.min()),
        "d_max": float(values.max()),
        "d_median": float(median),
        "d_p5": float(p5),
        "d_p95": float(p95),
    }


def temporal_change(maps: list[np.ndarray]) -> list[float]:
    """``mean|d[t+1] - d[t]| / mean(d[t])`` for each consecutive pair (T - 1 values)."""
    out = []
    for prev, nxt in itertools.pairwise(maps):
        a = prev.astype(np.float64)
        out.append(float(np.abs(nxt.astype(np.float64) - a).mean() / a.mean()))
    return out


def depth_backend_for(params: Mapping[str, Any]) -> DepthBackend:
    """The backend named by ``params['backend']`` with ``params['options']`` (one per process)."""
    return shared_depth_backend(str(params["backend"]), **dict(params.get("options", {})))


def run_depth_scene(out_root: Path, scene_id: str, params: Mapping[str, Any]) -> dict[str, int]:
    """Stage function: depth maps, stats and warnings for one scene.

    ``params``: ``backend``, ``options`` (backend options), ``median_range_m`` (low, high),
    ``consistency_threshold``; other keys (the backend's own params) only feed the hash.
    """
    root = Path(out_root)
    n_frames = len(scene_frames(root, scene_id))
    sharp_dir = root / scene_id / SHARP_DIR
    frame_paths = tuple(sharp_dir / frame_name(t) for t in range(n_frames))
    with Image.open(frame_paths[0]) as img:
        width, height = img.size
    scene = DepthScene(scene_id, frame_paths, scene_frames(root, scene_id)[0].parent)
    backend = depth_backend_for(params)

    maps: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    for t, depth in enumerate(backend.predict(scene)):
        if t >= n_frames:
            raise InputError(
                f"depth backend '{backend.name}' gave too many maps", expected=n_frames, found=t + 1
            )
        arr = np.ma.getdata(depth)
        if arr.shape != (height, width):
            raise InputError(
                f"depth backend '{backend.name}' map {t} has the wrong shape",
                file=frame_paths[t],
                expected=(height, width),
                found=arr.shape,
            )
        if arr.dtype.kind not in "uif":
            raise InputError(
                f"depth backend '{backend.name}' map {t} is not real-valued",
                file=frame_paths[t],
                expected="float or integer metres",
                found=arr.dtype,
            )
        maps.append(arr.astype(np.float32, copy=False))
        masks.append(np.ma.getmaskarray(depth) if np.ma.isMaskedArray(depth) else None)
    if len(maps) != n_frames:
        raise InputError(
            f"depth backend '{backend.name}' gave the wrong number of maps",
            expected=n_frames,
            found=len(maps),
        )

    min_valid = float(params.get("min_valid_fraction", DEFAULT_MIN_VALID_FRACTION))
    valid = [valid_mask(m, mask) for m, mask in zip(maps, masks)]
    fractions = [float(v.mean()) for v in valid]
    worst = int(np.argmin(fractions))
    if fractions[worst] < min_valid:
        raise InputError(
            f"scene {scene_id}: too few valid depth pixels in frame {worst} (sensor codes, "
            "out of range, NaN, <= 0); its depth would be mostly filled in",
            file=frame_paths[worst],
            key="min_valid_fraction",
            expected=f">= {min_valid:g} of the pixels valid",
            found=f"{fractions[worst]:.3f}",
        )
    fill = float(np.median(np.concatenate([m[v] for m, v in zip(maps, valid)])))

    out_dir = root / scene_id / DEPTH_DIR
    stored: list[np.ndarray] = []
    patch_rows: list[list[Any]] = []
    totals = {"patched_pixels": 0, "invalid_pixels": 0, "clamped_pixels": 0}
    for t, (depth, mask) in enumerate(zip(maps, masks)):
        patched, counts = patch_invalid(depth, fill, mask)
        half = patched.astype(np.float16)
        atomic_write_npz(out_dir / depth_name(t), {"depth": half})
        stored.append(half)
        n_patched = counts["nan"] + counts["inf"] + counts["nonpositive"]
        totals["patched_pixels"] += n_patched
        totals["invalid_pixels"] += counts["invalid"]
        totals["clamped_pixels"] += counts["clamped"]
        if n_patched or counts["clamped"] or counts["invalid"]:
            patch_rows.append(
                [
                    scene_id,
                    depth_name(t),
                    counts["nan"],
                    counts["inf"],
                    counts["nonpositive"],
                    counts["clamped"],
                    f"{fill:.6g}",
                    counts["invalid"],
                ]
            )
    keep = {depth_name(t) for t in range(n_frames)}
    for stale in out_dir.glob("depth_*.npz"):
        if stale.name not in keep:
            stale.unlink()

    stats: dict[str, float] = depth_stats(half[ok] for half, ok in zip(stored, valid))
    stats["valid_fraction"] = float(sum(int(v.sum()) for v in valid) / sum(v.size for v in valid))
    atomic_write_json(out_dir / STATS_FILE, stats)

    low, high = (float(v) for v in params.get("median_range_m", DEFAULT_MEDIAN_RANGE_M))
    sanity = ""
    if not low <= stats["d_median"] <= high:
        sanity = (
            f"{scene_id}: median depth {stats['d_median']:.3f} m outside {low:g}-{high:g} m "
            f"(d_min {stats['d_min']:.3f}, d_max {stats['d_max']:.3f})\n"
        )
    threshold = float(params.get("consistency_threshold", DEFAULT_CONSISTENCY_THRESHOLD))
    changes = temporal_change(stored)
    consistency = ""
    above = [t for t, c in enumerate(changes) if c > threshold]
    if above:
        worst = max(above, key=lambda t: changes[t])
        consistency = (
            f"{scene_id}: temporal change {changes[worst]:.3f} > {threshold:g} between "
            f"{depth_name(worst)} and {depth_name(worst + 1)} "
            f"({len(above)} of {len(changes)} frame pairs above)\n"
        )
    write_scene_log(
        root,
        PATCH_LOG,
        scene_id,
        encode_csv(
            ["scene_id", "frame", "nan", "inf", "nonpositive", "clamped", "fill_m", "invalid"],
            patch_rows,
        ),
    )
    write_scene_log(root, SANITY_LOG, scene_id, sanity)
    write_scene_log(root, CONSISTENCY_LOG, scene_id, consistency)
    return {
        "frames": n_frames,
        **totals,
        "sanity_warnings": int(bool(sanity)),
        "consistency_warnings": int(bool(consistency)),
    }
