"""Phase 1: scan the raw set, validate every scene, write the scene index and the splits.

Raw layout: ``raw_root/{scene_id}/frame_XXXX.{jpg,jpeg,png}`` (extension in any case), an
optional ``depth/`` folder beside the frames. Output: ``{out_root}/scene_index.json``
(``{scene_id: {"frames": [absolute paths], "split": ...}}``), ``{out_root}/{scene_id}/split.txt``,
``logs/rejected_scenes.json`` (every rejected scene and why) and ``logs/ignored_files.json``
(non-image files found in scene folders).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from trainset.errors import InputError
from trainset.focus.config import DEFAULT_MIN_FRAMES, DEFAULT_SPLIT_SEED
from trainset.focus.layout import SCENE_INDEX, SHARP_DIR, SPLIT_FILE
from trainset.pipeline.dataset_files import (
    LOGS_DIR,
    check_out_root,
    out_root_lock,
    record_config,
    safe_text,
    unsafe_reason,
    write_text_if_changed,
)
from trainset.pipeline.runner import pool_start_method
from trainset.store.sentinels import sentinel_path

# The plan's accepted frame extensions (compared lower-cased).
VALID_EXTS = {".jpg", ".jpeg", ".png"}
REJECTED_LOG = "rejected_scenes.json"
IGNORED_LOG = "ignored_files.json"
# Sub-folders of a scene that hold known extra data rather than frames.
KNOWN_SUBDIRS = {"depth"}


def assign_splits(scene_ids: Iterable[str], seed: int = DEFAULT_SPLIT_SEED) -> dict[str, str]:
    """The plan's deterministic 80/10/10 split: sorted ids, ``random.Random(seed).shuffle``."""
    ids = sorted(scene_ids)
    rng = random.Random(seed)
    rng.shuffle(ids)
    n = len(ids)
    splits = {}
    for i, sid in enumerate(ids):
        if i < int(0.8 * n):
            splits[sid] = "train"
        elif i < int(0.9 * n):
            splits[sid] = "val"
        else:
            splits[sid] = "test"
    return splits


def scan_scene(scene_dir: Path) -> tuple[list[Path], list[str]]:
    """Frames of a scene (sorted by name) and the names of other files there (ignored; hidden
    files are skipped without a mention)."""
    frames: list[Path] = []
    ignored: list[str] = []
    for entry in sorted(scene_dir.iterdir()):
        if entry.name.startswith("."):
            continue  # hidden: temp files, records such as .extract.json, .DS_Store
        if entry.is_file() and entry.suffix.lower() in VALID_EXTS:
            frames.append(entry)
        elif not (entry.is_dir() and entry.name in KNOWN_SUBDIRS):
            ignored.append(safe_text(entry.name))
    return frames, ignored


def validate_scene(frames: list[Path], min_frames: int) -> tuple[bool, str]:
    """The plan's checks: enough frames, each decodes (verify and a full decode), one size."""
    if len(frames) < min_frames:
        return False, f"only {len(frames)} frames (minimum {min_frames})"
    sizes: dict[tuple[int, int], str] = {}
    for f in frames:
        try:
            with Image.open(f) as img:
                img.verify()
            # verify() does not notice a truncated JPEG; a full decode does.
            with Image.open(f) as img:
                img.load()
                sizes.setdefault(img.size, f.name)
        except Exception as exc:
            return False, f"corrupt frame {safe_text(f.name)}: {exc}"
    if len(sizes) > 1:
        found = ", ".join(f"{w}x{h} ({name})" for (w, h), name in sorted(sizes.items()))
        return False, f"inconsistent frame sizes: {found}"
    return True, "ok"


@dataclass(frozen=True)
class InspectedScene:
    """One scene folder after scanning and validation."""

    scene_id: str
    frames: list[Path]
    ignored: list[str]
    ok: bool
    reason: str


def inspect_scene(scene_dir: Path, min_frames: int) -> InspectedScene:
    """Scan and validate one scene folder (module level so a process pool can run it)."""
    frames, ignored = scan_scene(scene_dir)
    ok, reason = validate_scene(frames, min_frames)
    return InspectedScene(scene_dir.name, frames, ignored, ok, reason)


def _inspect_all(dirs: list[Path], min_frames: int, workers: int) -> list[InspectedScene]:
    if workers == 1 or len(dirs) < 2:
        return [inspect_scene(d, min_frames) for d in dirs]
    context = multiprocessing.get_context(pool_start_method())
    with ProcessPoolExecutor(max_workers=min(workers, len(dirs)), mp_context=context) as pool:
        return list(pool.map(inspect_scene, dirs, [min_frames] * len(dirs)))


@dataclass
class IndexResult:
    """Accepted scenes with their frames and splits, rejected scenes with reasons."""

    scenes: dict[str, dict[str, object]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, list[str]] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)

    def report(self) -> str:
        """Short summary with one line per rejected scene."""
        splits = [str(entry["split"]) for entry in self.scenes.values()]
        counts = {s: splits.count(s) for s in ("train", "val", "test")}
        lines = [
            f"index: {len(self.scenes)} scenes ({counts['train']} train, {counts['val']} val, "
            f"{counts['test']} test), {len(self.rejected)} rejected, "
            f"{sum(len(v) for v in self.ignored.values())} non-image files ignored"
        ]
        lines += [f"  rejected {sid}: {why}" for sid, why in sorted(self.rejected.items())]
        lines += [
            f"  frames of {sid} changed since the last index: its sharp frames will be redone"
            for sid in self.changed
        ]
        return "\n".join(lines)


def build_index(
    raw_root: str | Path,
    out_root: str | Path,
    *,
    min_frames: int = DEFAULT_MIN_FRAMES,
    seed: int = DEFAULT_SPLIT_SEED,
    workers: int = 1,
) -> IndexResult:
    """Scan, validate and split ``raw_root``; write the index, splits and logs under ``out_root``.

    ``workers`` processes validate scenes in parallel. Files are only rewritten when their
    content changes.
    """
    raw = Path(raw_root)
    if not raw.is_dir():
        found = "a file" if raw.exists() else "nothing"
        raise InputError("raw root is not a folder", file=raw, expected="a folder", found=found)
    check_out_root(out_root)
    if min_frames < 1:
        raise InputError(
            "minimum frame count must be positive",
            key="--min-frames",
            expected=">= 1",
            found=min_frames,
        )
    result = IndexResult()
    accepted: dict[str, list[Path]] = {}
    candidates: list[Path] = []
    for entry in sorted(raw.iterdir()):
        if not entry.is_dir():
            result.ignored.setdefault(".", []).append(safe_text(entry.name))
            continue
        reason = unsafe_reason(entry.name)
        if reason is not None:
            result.rejected[safe_text(entry.name)] = reason
            continue
        candidates.append(entry)
    for inspected in _inspect_all(candidates, min_frames, workers):
        if inspected.ignored:
            result.ignored[inspected.scene_id] = inspected.ignored
        if inspected.ok:
            accepted[inspected.scene_id] = inspected.frames
        else:
            result.rejected[inspected.scene_id] = inspected.reason
    if not accepted:
        raise InputError(
            "no usable scene in the raw root",
            file=raw,
            expected=f"folders with >= {min_frames} valid frames",
            found=f"{len(result.rejected)} rejected: {dict(sorted(result.rejected.items()))}",
        )
    splits = assign_splits(accepted, seed)
    for sid in sorted(accepted):
        result.scenes[sid] = {
            # Absolute, not resolved: a symlinked frame keeps its scene (its depth/ folder).
            "frames": [os.path.abspath(f) for f in accepted[sid]],
            "split": splits[sid],
        }
    _write_index(Path(out_root), result)
    record_config(
        out_root,
        "index",
        {"raw_root": str(raw.resolve()), "min_frames": min_frames, "seed": seed},
    )
    return result


def _invalidate_changed_scenes(out: Path, scenes: dict[str, dict[str, object]]) -> list[str]:
    """Remove the deblur sentinel of scenes whose frame list differs from the previous index,
    so the next ``deblur`` redoes them (and ``depth`` after it); return their ids."""
    path = out / SCENE_INDEX
    if not path.exists():
        return []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict):
        return []
    changed = []
    for sid, entry in scenes.items():
        previous = old.get(sid)
        if isinstance(previous, dict) and previous.get("frames") != entry["frames"]:
            sentinel_path(out / sid / SHARP_DIR).unlink(missing_ok=True)
            changed.append(sid)
    return changed


def _write_index(out: Path, result: IndexResult) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with out_root_lock(out):
        result.changed = _invalidate_changed_scenes(out, result.scenes)
        for sid, entry in result.scenes.items():
            write_text_if_changed(out / sid / SPLIT_FILE, str(entry["split"]))
        write_text_if_changed(out / SCENE_INDEX, json.dumps(result.scenes, indent=2) + "\n")
        logs = out / LOGS_DIR
        write_text_if_changed(
            logs / REJECTED_LOG, json.dumps(dict(sorted(result.rejected.items())), indent=2) + "\n"
        )
        write_text_if_changed(logs / IGNORED_LOG, json.dumps(result.ignored, indent=2) + "\n")
