"""Phase 6: check every scene's outputs and say which stage to re-run for each failure.

Checks per scene (the plan's table, each failure tied to the stage that makes the file):

| check | pass criterion | stage |
|---|---|---|
| ``split.txt`` | one of train, val, test | index |
| ``frames_sharp/`` | PNG count == raw frame count, readable, one (H, W) | deblur |
| ``depth_maps/`` | NPZ count == raw frame count; ``depth`` loadable, finite, > 0, (H, W) | depth |
| ``focus_maps/set_XX/`` | NPZ count == raw frames per set (x N_sets); ``focus_map`` in [0, 1], (H, W) | labels |
| ``bokeh_renders/set_XX/`` | PNG count == raw frames per set (x N_sets); readable, (H, W) | renders |
| ``metadata.json`` | valid JSON with ``sets[*].{f, N, S_focus, max_coc}``, N_sets sets | labels |
| sentinels | ``.done`` present in each stage folder | that stage |

A failing stage also invalidates the stages computed from its output: deblur -> depth ->
labels, renders; the report lists them all under ``rerun_stages`` and :func:`requeue` re-runs
exactly those.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainset.errors import InputError
from trainset.focus.layout import (
    BOKEH_DIR,
    DEPTH_DIR,
    FOCUS_DIR,
    SHARP_DIR,
    SPLIT_FILE,
    SPLITS,
    metadata_path,
    read_scene_index,
    set_dir,
)
from trainset.focus.optics import DEFAULT_N_SETS
from trainset.focus.pack import PACK_DIR, PACK_FILE, check_packed_scene, pack_dataset
from trainset.focus.stages import FOCUS_STAGES
from trainset.pipeline.dataset_files import read_config
from trainset.pipeline.stage import Stage
from trainset.store import atomic_write_json, atomic_write_text, read_json, read_npz_array
from trainset.store.sentinels import read_sentinel, sentinel_path


def _downstream(stages: tuple[Stage, ...]) -> dict[str, tuple[str, ...]]:
    """Stage name -> the stages computed from its output, directly or further down."""
    found: dict[str, set[str]] = {s.name: set() for s in stages}
    changed = True
    while changed:
        changed = False
        for stage in stages:
            for name in stage.requires:
                new = {stage.name} | found[stage.name]
                if not new <= found[name]:
                    found[name] |= new
                    changed = True
    return {name: tuple(s.name for s in stages if s.name in below) for name, below in found.items()}


# Derived from the declared stages (trainset.focus.stages): pipeline order of the per-scene work
# ('index' writes split.txt; 'pack' copies the stages' files), the stages each one invalidates,
# and each stage's folder.
STAGE_ORDER = ("index", *(s.name for s in FOCUS_STAGES), "pack")
DOWNSTREAM: dict[str, tuple[str, ...]] = {"index": (), **_downstream(FOCUS_STAGES), "pack": ()}
STAGE_DIRS = {s.name: s.sentinel_dir for s in FOCUS_STAGES}
REPORT_FILE = Path("logs") / "validation_report.json"


@dataclass
class SceneCheck:
    """Failures of one scene: (check, reason, stage) triples."""

    scene_id: str
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    # The scene has a pack, which must be packed again after any stage whose files it copies.
    packed: bool = False

    def fail(self, check: str, reason: str, stage: str) -> None:
        self.failures.append((check, reason, stage))

    def rerun_stages(self) -> list[str]:
        """The failing stages plus their downstream stages (the pack, when the scene has one,
        after any stage whose files it copies), in pipeline order."""
        needed: set[str] = set()
        for _, _, stage in self.failures:
            needed.add(stage)
            needed.update(DOWNSTREAM[stage])
        if self.packed and needed & set(STAGE_DIRS):
            needed.add("pack")
        return [s for s in STAGE_ORDER if s in needed]


def _image_size(path: Path) -> tuple[int, int] | str:
    """(H, W) of a readable image, else the reason it is not."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            img.verify()
    except Exception as exc:  # PIL raises many types for corrupt files
        return f"{type(exc).__name__}: {exc}"
    return (height, width)


def _numbered(folder: Path, stem: str, suffix: str) -> list[str]:
    return sorted(p.name for p in folder.glob(f"{stem}_*{suffix}")) if folder.is_dir() else []


def _count_check(
    scene: SceneCheck, folder: Path, stem: str, suffix: str, n_frames: int, what: str, stage: str
) -> list[Path]:
    """Check that ``stem_0000..stem_{n-1}`` exist; return the paths that do."""
    expected = [f"{stem}_{t:04d}{suffix}" for t in range(n_frames)]
    present = set(_numbered(folder, stem, suffix))
    missing = [name for name in expected if name not in present]
    if missing:
        scene.fail(
            f"{what} count",
            f"{what} missing: {len(missing)} files in {folder.name} (first {missing[0]})",
            stage,
        )
    extra = sorted(present - set(expected))
    if extra:
        scene.fail(f"{what} count", f"{len(extra)} unexpected {what} files in {folder.name}", stage)
    return [folder / name for name in expected if name in present]


def _check_frames(scene: SceneCheck, root: Path, n_frames: int) -> tuple[int, int] | None:
    paths = _count_check(
        scene, root / SHARP_DIR, "frame", ".png", n_frames, "sharp frame", "deblur"
    )
    sizes: set[tuple[int, int]] = set()
    for path in paths:
        size = _image_size(path)
        if isinstance(size, str):
            scene.fail("frame loadable", f"{path.name} unreadable: {size}", "deblur")
        else:
            sizes.add(size)
    if len(sizes) > 1:
        scene.fail(
            "frame (H,W) consistency", f"frames_sharp has several sizes {sorted(sizes)}", "deblur"
        )
        return None
    return next(iter(sizes)) if sizes else None


def _check_arrays(
    scene: SceneCheck,
    paths: list[Path],
    key: str,
    hw: tuple[int, int] | None,
    stage: str,
    valid: Callable[[np.ndarray], str | None],
) -> None:
    for path in paths:
        try:
            arr = read_npz_array(path, key)
        except InputError as exc:
            scene.fail(f"{key} loadable", f"{path.parent.name}/{path.name}: {exc}", stage)
            continue
        if arr.ndim != 2 or (hw is not None and tuple(arr.shape) != hw):
            scene.fail(
                "(H,W) consistency",
                f"{path.parent.name}/{path.name}: shape {arr.shape}, frames are {hw}",
                stage,
            )
            continue
        problem = valid(arr)
        if problem:
            scene.fail(f"{key} range", f"{path.parent.name}/{path.name}: {problem}", stage)


def _depth_problem(arr: np.ndarray) -> str | None:
    values = arr.astype(np.float32)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        return f"{bad} NaN/Inf values"
    if values.size and float(values.min()) <= 0:
        return f"min depth {float(values.min()):.4g} <= 0"
    return None


def _focus_problem(arr: np.ndarray) -> str | None:
    values = arr.astype(np.float32)
    if not np.all(np.isfinite(values)):
        return "NaN/Inf values"
    if values.size and (float(values.min()) < 0 or float(values.max()) > 1):
        return (
            f"values outside [0, 1]: min {float(values.min()):.4g}, max {float(values.max()):.4g}"
        )
    return None


def _check_metadata(
    scene: SceneCheck, root: Path, scene_id: str, n_sets: int, max_coc: float | None
) -> None:
    path = metadata_path(root, scene_id)
    if not path.exists():
        scene.fail("metadata.json", "metadata.json missing", "labels")
        return
    try:
        meta = read_json(path)
    except InputError as exc:
        scene.fail("metadata.json", f"metadata.json invalid: {exc}", "labels")
        return
    sets = meta.get("sets") if isinstance(meta, dict) else None
    if not isinstance(sets, list):
        scene.fail("metadata.json", "metadata.json has no 'sets' list", "labels")
        return
    if len(sets) != n_sets:
        scene.fail(
            "metadata.json", f"metadata.json has {len(sets)} sets, expected {n_sets}", "labels"
        )
    for i, entry in enumerate(sets):
        keys = ("f", "N", "S_focus", "max_coc")
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), (int, float)) and math.isfinite(entry[k]) for k in keys
        ):
            scene.fail(
                "metadata.json",
                f"metadata.json sets[{i}] lacks numbers f, N, S_focus, max_coc",
                "labels",
            )
        elif max_coc is not None and entry["max_coc"] != max_coc:
            scene.fail(
                "metadata.json",
                f"metadata.json sets[{i}].max_coc = {entry['max_coc']}, config.yaml says {max_coc}",
                "labels",
            )


def check_scene(
    out_root: Path, scene_id: str, n_frames: int, n_sets: int, max_coc: float | None = None
) -> SceneCheck:
    """Run every check on one scene; ``n_frames`` is its raw frame count."""
    scene = SceneCheck(scene_id)
    root = out_root / scene_id
    split_file = root / SPLIT_FILE
    raw_split = split_file.read_bytes()[:64] if split_file.is_file() else None
    split = None if raw_split is None else raw_split.decode("utf-8", "backslashreplace").strip()
    if split not in SPLITS:
        reason = "split.txt missing" if split is None else f"split.txt holds {split!r}"
        scene.fail("split.txt", f"{reason}, expected one of {', '.join(SPLITS)}", "index")
    hw = _check_frames(scene, root, n_frames)
    depth = _count_check(scene, root / DEPTH_DIR, "depth", ".npz", n_frames, "depth map", "depth")
    _check_arrays(scene, depth, "depth", hw, "depth", _depth_problem)
    for s in range(n_sets):
        folder = set_dir(out_root, scene_id, FOCUS_DIR, s)
        focus = _count_check(scene, folder, "focus", ".npz", n_frames, "focus_map NPZ", "labels")
        _check_arrays(scene, focus, "focus_map", hw, "labels", _focus_problem)
        folder = set_dir(out_root, scene_id, BOKEH_DIR, s)
        for path in _count_check(scene, folder, "bokeh", ".png", n_frames, "bokeh PNG", "renders"):
            size = _image_size(path)
            if isinstance(size, str):
                scene.fail(
                    "bokeh loadable", f"{folder.name}/{path.name} unreadable: {size}", "renders"
                )
            elif hw is not None and size != hw:
                scene.fail(
                    "(H,W) consistency",
                    f"{folder.name}/{path.name}: size {size}, frames are {hw}",
                    "renders",
                )
    _check_metadata(scene, out_root, scene_id, n_sets, max_coc)
    scene.packed = (root / PACK_DIR / PACK_FILE).exists()
    for check, reason in check_packed_scene(out_root, scene_id):
        scene.fail(check, reason, "pack")
    for stage, folder_name in STAGE_DIRS.items():
        if read_sentinel(root / folder_name) is None:
            scene.fail("sentinel", f"{folder_name}/.done missing or unreadable", stage)
    return scene


def expected_labels(out_root: Path) -> tuple[int | None, float | None]:
    """``n_sets`` and ``max_coc`` of the labels stage as recorded in ``config.yaml``
    (section ``labels``, written by the runner), or None where not recorded."""
    section = read_config(out_root).get("labels")
    if not isinstance(section, dict):
        return None, None
    n_sets = section.get("n_sets")
    max_coc = section.get("max_coc")
    return (
        int(n_sets) if isinstance(n_sets, int) else None,
        float(max_coc) if isinstance(max_coc, (int, float)) else None,
    )


def disk_bytes(root: Path) -> int:
    """Bytes of every file under ``root`` (links not followed)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def validate_dataset(out_root: Path, *, n_sets: int | None = None) -> dict[str, Any]:
    """Check every scene of ``scene_index.json``; return the report (plan's fields plus
    ``failures`` (check, reason, stage per failure) and ``rerun_stages`` per failed scene)."""
    out_root = Path(out_root)
    index = read_scene_index(out_root)
    recorded_sets, max_coc = expected_labels(out_root)
    sets = n_sets or recorded_sets or DEFAULT_N_SETS
    failures: dict[str, list[dict[str, str]]] = {}
    rerun: dict[str, list[str]] = {}
    split_counts = {name: 0 for name in SPLITS}
    total_frames = 0
    for scene_id in sorted(index):
        entry = index[scene_id]
        n_frames = len(entry["frames"])
        total_frames += n_frames
        if entry.get("split") in split_counts:
            split_counts[entry["split"]] += 1
        result = check_scene(out_root, scene_id, n_frames, sets, max_coc)
        if result.failures:
            failures[scene_id] = [
                {"check": c, "reason": r, "stage": s} for c, r, s in result.failures
            ]
            rerun[scene_id] = result.rerun_stages()
    return {
        "total_scenes": len(index),
        "passing_scenes": len(index) - len(failures),
        "failed_scenes": sorted(failures),
        "failure_reasons": {s: "; ".join(f["reason"] for f in fs) for s, fs in failures.items()},
        "split_counts": split_counts,
        "total_frames": total_frames,
        "total_gb_on_disk": round(disk_bytes(out_root) / 1e9, 6),
        "n_sets": sets,
        "failures": failures,
        "rerun_stages": rerun,
    }


def write_report(report: Mapping[str, Any], path: Path) -> Path:
    """Write the validation report as JSON (atomically)."""
    return atomic_write_json(path, dict(report))


def requeue(
    out_root: Path,
    report: Mapping[str, Any],
    run_stage: Callable[[str, list[str]], object],
) -> dict[str, list[str]]:
    """Re-run exactly the stages the report lists for each failed scene, in pipeline order.

    ``split.txt`` is rewritten from ``scene_index.json``; for other stages the scene's sentinel
    is removed (so the runner does not skip it) and ``run_stage(stage, scene_ids)`` is called.
    Returns the scenes re-run per stage.
    """
    out_root = Path(out_root)
    plan: Mapping[str, list[str]] = report.get("rerun_stages", {})
    done: dict[str, list[str]] = {}
    for stage in STAGE_ORDER:
        scenes = sorted(s for s, stages in plan.items() if stage in stages)
        if not scenes:
            continue
        if stage == "index":
            index = read_scene_index(out_root)
            for scene_id in scenes:
                split = index.get(scene_id, {}).get("split")
                if split not in SPLITS:
                    raise InputError(
                        "scene index has no valid split for the scene",
                        file=out_root / "scene_index.json",
                        key=scene_id,
                        expected=" | ".join(SPLITS),
                        found=split,
                    )
                atomic_write_text(out_root / scene_id / SPLIT_FILE, split)
        elif stage == "pack":
            pack_dataset(out_root, scenes=scenes, force=True)
        else:
            for scene_id in scenes:
                sentinel_path(out_root / scene_id / STAGE_DIRS[stage]).unlink(missing_ok=True)
            run_stage(stage, scenes)
        done[stage] = scenes
    return done
