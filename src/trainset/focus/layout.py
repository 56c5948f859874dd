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
from trainset.focus.scenes import load_scene_index
from trainset.store.codecs import read_json

SCENE_INDEX = "scene_index.json"
SPLITS = ("train", "val", "test")


def frame_path(out_root: Path, scene_id: str, t: int) -> Path:
    """Sharp frame ``t`` of a scene."""
    return out_root / scene_id / "frames_sharp" / f"frame_{t:04d}.png"


def depth_path(out_root: Path, scene_id: str, t: int) -> Path:
    """Depth map ``t`` of a scene."""
    return out_root / scene_id / "depth_maps" / f"depth_{t:04d}.npz"


def depth_stats_path(out_root: Path, scene_id: str) -> Path:
    """``depth_maps/stats.json`` of a scene."""
    return out_root / scene_id / "depth_maps" / "stats.json"


def set_dir(out_root: Path, scene_id: str, kind: str, set_idx: int) -> Path:
    """``focus_maps/set_XX`` or ``bokeh_renders/set_XX`` of a scene."""
    return out_root / scene_id / kind / f"set_{set_idx:02d}"


def focus_path(out_root: Path, scene_id: str, set_idx: int, t: int) -> Path:
    """Focus map ``t`` of parameter set ``set_idx``."""
    return set_dir(out_root, scene_id, "focus_maps", set_idx) / f"focus_{t:04d}.npz"


def bokeh_path(out_root: Path, scene_id: str, set_idx: int, t: int) -> Path:
    """Defocus render ``t`` of parameter set ``set_idx``."""
    return set_dir(out_root, scene_id, "bokeh_renders", set_idx) / f"bokeh_{t:04d}.png"


def metadata_path(out_root: Path, scene_id: str) -> Path:
    """``metadata.json`` of a scene."""
    return out_root / scene_id / "metadata.json"


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
    return _numbered_count(out_root, scene_id, "depth_maps", "depth", ".npz", "depth")


def sharp_frame_count(out_root: Path, scene_id: str) -> int:
    """Number of sharp frames ``frame_0000.png .. frame_{n-1}.png`` of a scene (contiguous).

    Raises InputError when there are none or the numbering has a gap.
    """
    return _numbered_count(out_root, scene_id, "frames_sharp", "frame", ".png", "deblur")


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
