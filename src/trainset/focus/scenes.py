"""Reading a scene's entry of ``{out_root}/scene_index.json`` (cached per process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainset.errors import InputError
from trainset.pipeline.dataset_files import check_scene_ids
from trainset.pipeline.runner import SCENE_INDEX
from trainset.store.codecs import read_json

_CACHE: dict[Path, tuple[int, dict[str, Any]]] = {}


def load_scene_index(out_root: str | Path) -> dict[str, Any]:
    """The scene index as a dict; re-read only when the file changes."""
    path = Path(out_root) / SCENE_INDEX
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise InputError(
            "scene index not found; run `trainset focus index` first", file=path
        ) from None
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    index = read_json(path)
    if not isinstance(index, dict):
        raise InputError("scene index must be a JSON object", file=path, found=type(index).__name__)
    check_scene_ids(index, path)
    _CACHE[path] = (stamp, index)
    return index


def scene_frames(out_root: str | Path, scene_id: str) -> list[Path]:
    """Raw frame paths of ``scene_id`` in order, as recorded by ``trainset focus index``."""
    index = load_scene_index(out_root)
    entry = index.get(scene_id)
    frames = entry.get("frames") if isinstance(entry, dict) else None
    if not isinstance(frames, list) or not frames:
        raise InputError(
            "scene has no frame list in the index",
            file=Path(out_root) / SCENE_INDEX,
            key=scene_id,
            expected="{'frames': [...], 'split': ...}",
            found=entry,
        )
    return [Path(f) for f in frames]


def raw_scene_dir(out_root: str | Path, scene_id: str) -> Path:
    """``raw_root/{scene_id}``: the folder holding the scene's raw frames."""
    return scene_frames(out_root, scene_id)[0].parent
