"""Scene stage ``labels``: ground-truth focus maps (``focus_maps/``) and ``metadata.json``.

``run_labels(out_root, scene_id, params)`` follows the ``Stage.run`` signature; ``params``:
``max_coc`` (sensor metres, required), ``n_sets`` (default 4), ``coc_model`` (``plan`` default).
Every focus map is the plan's ``compute_focus_map`` of the stored depth (float16, key
``focus_map``). Frames whose focus-map mean is outside [0.2, 0.8] are logged (plan, Phase 5):
each scene writes its part of ``logs/focus_map_warnings.txt``, which the runner rebuilds after
the stage.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.focus.calibration import check_max_coc
from trainset.focus.layout import (
    FOCUS_DIR,
    depth_frame_count,
    depth_path,
    focus_path,
    metadata_path,
    read_depth_stats,
    set_dir,
)
from trainset.focus.optics import (
    DEFAULT_FOCUS_RANGE,
    DEFAULT_N_SETS,
    check_coc_model,
    check_focus_range,
    compute_focus_map,
    scene_coc_params,
    scene_seed,
)
from trainset.pipeline.dataset_files import write_scene_log
from trainset.store import atomic_write_json, atomic_write_npz, read_json, read_npz_array

LABELS_STAGE = "labels"
LABELS_VERSION = 1
# Plan, Phase 5 sanity check: a focus-map mean outside this range is logged.
FOCUS_MEAN_RANGE = (0.2, 0.8)
WARNINGS_LOG = "focus_map_warnings.txt"
# metadata.json keys owned by the render stage (kept when labels re-run with the same sets).
RENDER_KEYS = (
    "renderer",
    "renderer_version",
    "renderer_params",
    "renderer_sets",
    "sensor_width_m",
)


def labels_params(
    max_coc: float,
    *,
    n_sets: int = DEFAULT_N_SETS,
    coc_model: str = "plan",
    focus_range: str = DEFAULT_FOCUS_RANGE,
) -> dict[str, Any]:
    """Checked parameters of the labels stage (all of them shape the output)."""
    if n_sets < 1:
        raise InputError(
            "need at least one parameter set", key="sets", expected=">= 1", found=n_sets
        )
    return {
        "max_coc": check_max_coc(max_coc),
        "n_sets": int(n_sets),
        "coc_model": check_coc_model(coc_model),
        "focus_range": check_focus_range(focus_range),
    }


def scene_sets(out_root: Path, scene_id: str, params: Mapping[str, Any]) -> list[dict[str, float]]:
    """The scene's ``{f, N, S_focus, max_coc}`` sets for stage ``params``."""
    stats = read_depth_stats(out_root, scene_id)
    sets = scene_coc_params(
        scene_id,
        stats,
        int(params["n_sets"]),
        focus_range=str(params.get("focus_range", DEFAULT_FOCUS_RANGE)),
    )
    return [{**p, "max_coc": float(params["max_coc"])} for p in sets]


def base_metadata(
    scene_id: str, sets: list[dict[str, float]], params: Mapping[str, Any], n_frames: int
) -> dict[str, Any]:
    """The labels part of ``metadata.json``."""
    max_coc = float(params["max_coc"])
    return {
        "scene_id": scene_id,
        "sets": sets,
        "max_coc": max_coc,
        "max_coc_mm": max_coc * 1e3,
        "coc_units": "m (CoC diameter on the sensor)",
        "coc_model": params["coc_model"],
        "focus_range": params.get("focus_range", DEFAULT_FOCUS_RANGE),
        "n_frames": n_frames,
        "seed": scene_seed(scene_id),
        "seed_source": "sha256(scene_id)[:8] mod 2**32",
    }


def write_metadata(
    out_root: Path, scene_id: str, record: Mapping[str, Any], *, keep_render: bool
) -> None:
    """Write ``metadata.json``; with ``keep_render`` keep the render keys of the current file
    when it describes the same parameter sets (the renders still match the labels)."""
    path = metadata_path(out_root, scene_id)
    new = dict(record)
    if keep_render and path.exists():
        try:
            old = read_json(path)
        except InputError:
            old = None
        if (
            isinstance(old, dict)
            and old.get("sets") == new["sets"]
            and old.get("coc_model") == new["coc_model"]
            and old.get("focus_range") == new["focus_range"]
        ):
            new.update({k: old[k] for k in RENDER_KEYS if k in old})
    atomic_write_json(path, new)


def remove_extra_outputs(
    folder_root: Path, n_sets: int, n_frames: int, stem: str, suffix: str
) -> None:
    """Delete set folders beyond ``n_sets`` and files beyond ``n_frames`` left by an older run."""
    if not folder_root.is_dir():
        return
    wanted_sets = {f"set_{s:02d}" for s in range(n_sets)}
    wanted_files = {f"{stem}_{t:04d}{suffix}" for t in range(n_frames)}
    for child in folder_root.iterdir():
        if child.is_dir() and child.name.startswith("set_") and child.name not in wanted_sets:
            shutil.rmtree(child)
        elif child.is_dir() and child.name in wanted_sets:
            for item in child.glob(f"{stem}_*{suffix}"):
                if item.name not in wanted_files:
                    item.unlink()


def run_labels(out_root: Path, scene_id: str, params: Mapping[str, Any]) -> dict[str, int]:
    """Write the focus maps of every set and frame of one scene, then ``metadata.json``.

    Returns counts ``{frames, sets, focus_maps, warnings}``.
    """
    out_root = Path(out_root)
    checked = labels_params(
        float(params["max_coc"]),
        n_sets=int(params.get("n_sets", DEFAULT_N_SETS)),
        coc_model=str(params.get("coc_model", "plan")),
        focus_range=str(params.get("focus_range", DEFAULT_FOCUS_RANGE)),
    )
    sets = scene_sets(out_root, scene_id, checked)
    n_frames = depth_frame_count(out_root, scene_id)
    warnings: list[str] = []
    for t in range(n_frames):
        depth = read_npz_array(depth_path(out_root, scene_id, t), "depth").astype(np.float32)
        for set_idx, lens in enumerate(sets):
            focus_map = compute_focus_map(
                depth,
                lens["f"],
                lens["N"],
                lens["S_focus"],
                checked["max_coc"],
                coc_model=checked["coc_model"],
            )
            atomic_write_npz(focus_path(out_root, scene_id, set_idx, t), {"focus_map": focus_map})
            mean = float(focus_map.astype(np.float32).mean())
            if not FOCUS_MEAN_RANGE[0] <= mean <= FOCUS_MEAN_RANGE[1]:
                warnings.append(
                    f"{scene_id} set_{set_idx:02d} frame {t:04d}: focus_map.mean()={mean:.3f}"
                )
    for set_idx in range(len(sets)):
        set_dir(out_root, scene_id, FOCUS_DIR, set_idx).mkdir(parents=True, exist_ok=True)
    remove_extra_outputs(out_root / scene_id / FOCUS_DIR, len(sets), n_frames, "focus", ".npz")
    write_metadata(
        out_root, scene_id, base_metadata(scene_id, sets, checked, n_frames), keep_render=True
    )
    write_scene_log(out_root, WARNINGS_LOG, scene_id, "".join(f"{w}\n" for w in warnings))
    return {
        "frames": n_frames,
        "sets": len(sets),
        "focus_maps": n_frames * len(sets),
        "warnings": len(warnings),
    }
