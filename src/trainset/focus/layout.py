"""Where each file of a focus dataset lives (the plan's "Target Output Per Scene").

```
{out_root}/scene_index.json                      {scene_id: {frames: [...], split}}
{out_root}/{scene}/frames_sharp/frame_XXXX.png
{out_root}/{scene}/depth_maps/depth_XXXX.npz     key 'depth', float16 metres
{out_root}/{scene}/depth_maps/stats.json         {d_min, d_max, d_median, d_p5, d_p95}
{out_root}/{scene}/focus_maps/set_XX/focus_XXXX.npz      key 'focus_map', float16 [0, 1]
{out_root}/{scene}/bokeh_renders/set_XX/bokeh_XXXX.png
{out_root}/{scene}/metadata.json                 sets[*].{f, N, S_focus, max_coc}
{out_root}/{scene}/split.txt                     train | val | test
{out_root}/report/index.html                     `trainset focus report` (+ its image folder)
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainset.errors import InputError
from trainset.pipeline.dataset_files import check_out_root, check_scene_ids
from trainset.store.codecs import read_json

SCENE_INDEX = "scene_index.json"
# Stage folders of a scene (each holds its stage's .done sentinel).
SHARP_DIR = "frames_sharp"
DEPTH_DIR = "depth_maps"
FOCUS_DIR = "focus_maps"
BOKEH_DIR = "bokeh_renders"
SPLIT_FILE = "split.txt"
METADATA_FILE = "metadata.json"

_CACHE: dict[Path, tuple[int, dict[str, Any]]] = {}


def load_scene_index(out_root: str | Path) -> dict[str, Any]:
    """``{out_root}/scene_index.json`` as a dict, its ids checked (:func:`check_scene_ids`);
    re-read only when the file changes."""
    path = check_out_root(out_root) / SCENE_INDEX
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise InputError(
            "scene index not found; run `trainset focus index` first",
            file=path,
            expected=SCENE_INDEX,
            found="nothing",
        ) from None
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    index = read_json(path)
    if not isinstance(index, dict):
        raise InputError(
            "scene index must map scene ids to entries",
            file=path,
            expected="JSON object",
            found=type(index).__name__,
        )
    check_scene_ids(index, path)
    _CACHE[path] = (stamp, index)
    return index


def scene_ids(out_root: str | Path) -> list[str]:
    """Sorted scene ids of the scene index (array task i is scene i)."""
    return sorted(load_scene_index(out_root))


def select_scenes(
    out_root: str | Path, scene: str | None = None, task_index: int | None = None
) -> list[str]:
    """All scenes, one scene by id, or the scene at position ``task_index`` of the sorted index."""
    ids = scene_ids(out_root)
    if scene is not None and task_index is not None:
        raise InputError("give --scene or --task-index, not both", key="--task-index")
    if scene is not None:
        if scene not in ids:
            raise InputError(
                "scene is not in the scene index",
                file=Path(out_root) / SCENE_INDEX,
                key="--scene",
                expected=f"one of {len(ids)} indexed scenes",
                found=scene,
            )
        return [scene]
    if task_index is not None:
        if not 0 <= task_index < len(ids):
            raise InputError(
                "task index out of range",
                file=Path(out_root) / SCENE_INDEX,
                key="--task-index",
                expected=f"0..{len(ids) - 1}",
                found=task_index,
            )
        return [ids[task_index]]
    return ids


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


SPLITS = ("train", "val", "test")


def frame_path(out_root: Path, scene_id: str, t: int) -> Path:
    """Sharp frame ``t`` of a scene."""
    return out_root / scene_id / SHARP_DIR / f"frame_{t:04d}.png"


def depth_path(out_root: Path, scene_id: str, t: int) -> Path:
    """Depth map ``t`` of a scene."""
    return out_root / scene_id / DEPTH_DIR / f"depth_{t:04d}.npz"


def depth_stats_path(out_root: Path, scene_id: str) -> Path:
    """``depth_maps/stats.json`` of a scene."""
    return out_root / scene_id / DEPTH_DIR / "stats.json"


def set_dir(out_root: Path, scene_id: str, kind: str, set_idx: int) -> Path:
    """``focus_maps/set_XX`` or ``bokeh_renders/set_XX`` of a scene."""
    return out_root / scene_id / kind / f"set_{set_idx:02d}"


def focus_path(out_root: Path, scene_id: str, set_idx: int, t: int) -> Path:
    """Focus map ``t`` of parameter set ``set_idx``."""
    return set_dir(out_root, scene_id, FOCUS_DIR, set_idx) / f"focus_{t:04d}.npz"


def bokeh_path(out_root: Path, scene_id: str, set_idx: int, t: int) -> Path:
    """Defocus render ``t`` of parameter set ``set_idx``."""
    return set_dir(out_root, scene_id, BOKEH_DIR, set_idx) / f"bokeh_{t:04d}.png"


def metadata_path(out_root: Path, scene_id: str) -> Path:
    """``metadata.json`` of a scene."""
    return out_root / scene_id / METADATA_FILE


def report_path(out_root: Path) -> Path:
    """Default page of ``trainset focus report`` (its images go in a folder beside it)."""
    return out_root / "report" / "index.html"


def read_scene_index(out_root: Path) -> dict[str, dict[str, Any]]:
    """Read ``scene_index.json``: scene id -> ``{frames: [names], split}``.

    Raises InputError naming the file when it is missing or not of that form.
    """
    path = out_root / SCENE_INDEX
    index = load_scene_index(out_root)
    for scene_id, entry in index.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("frames"), list):
            raise InputError(
                "scene entry has no frame list",
                file=path,
                key=scene_id,
                expected="{frames: [...], split: ...}",
                found=entry,
            )
    return index


def read_depth_stats(out_root: Path, scene_id: str) -> dict[str, Any]:
    """``depth_maps/stats.json`` of a scene (InputError when missing or not an object)."""
    path = depth_stats_path(out_root, scene_id)
    if not path.exists():
        raise InputError("depth statistics missing; run `trainset focus depth` first", file=path)
    stats = read_json(path)
    if not isinstance(stats, dict):
        raise InputError(
            "depth statistics are not a JSON object",
            file=path,
            expected="{d_min, d_max, ...}",
            found=stats,
        )
    return stats


def depth_frame_count(out_root: Path, scene_id: str) -> int:
    """Number of depth maps ``depth_0000.npz .. depth_{n-1}.npz`` of a scene (contiguous).

    Raises InputError when there are none or the numbering has a gap.
    """
    return _numbered_count(out_root, scene_id, DEPTH_DIR, "depth", ".npz", "depth")


def sharp_frame_count(out_root: Path, scene_id: str) -> int:
    """Number of sharp frames ``frame_0000.png .. frame_{n-1}.png`` of a scene (contiguous).

    Raises InputError when there are none or the numbering has a gap.
    """
    return _numbered_count(out_root, scene_id, SHARP_DIR, "frame", ".png", "deblur")


def _numbered_count(
    out_root: Path, scene_id: str, subdir: str, stem: str, suffix: str, stage: str
) -> int:
    """Count ``{subdir}/{stem}_XXXX{suffix}`` of a scene, numbered from 0 without gaps."""
    folder = out_root / scene_id / subdir
    names = sorted(p.name for p in folder.glob(f"{stem}_*{suffix}"))
    expected = [f"{stem}_{t:04d}{suffix}" for t in range(len(names))]
    if not names:
        raise InputError(
            f"scene {scene_id}: no {stem} files; run `trainset focus {stage}` first",
            file=folder,
            expected=f"{stem}_0000{suffix} ...",
            found="none",
        )
    if names != expected:
        missing = sorted(set(expected) - set(names))
        raise InputError(
            f"scene {scene_id}: {stem} files are not numbered contiguously from 0",
            file=folder,
            expected=f"{len(names)} files {stem}_0000..{stem}_{len(names) - 1:04d}",
            found=f"gaps, e.g. missing {missing[:3]}",
        )
    return len(names)
