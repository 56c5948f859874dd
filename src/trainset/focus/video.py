"""`trainset focus extract`: video files -> scenes of the plan's raw layout (PyAV).

Each video becomes ``raw_root/{scene_id}/frame_XXXX.png`` (lossless PNG of the decoded RGB
frames, every ``every``-th frame, at most ``max_frames``), with the scene id made from the file
name. A scene is decoded into a hidden folder beside it and published with a rename, so a killed
extraction leaves no half scene (the next run removes the hidden folder). A record
``.extract.json`` in the scene (video path, size, modification time, sha256, options, frame
count) makes a second run skip videos already extracted with the same options. One video that
cannot be decoded fails alone; the others are extracted.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainset.errors import InputError
from trainset.pipeline.dataset_files import unsafe_reason
from trainset.pipeline.progress import Progress
from trainset.store import atomic_write_json, atomic_write_png, read_json
from trainset.store.hashing import sha256_file

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")
RECORD = ".extract.json"
_TEMP_TAG = ".extract-"  # hidden working folder: .{scene_id}.extract-{pid}
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def scene_id_for(video: Path) -> str:
    """The scene id of a video: its file name without extension, every run of characters other
    than letters, digits, ``.``, ``_``, ``-`` replaced by ``_``, leading dots and ``_`` dropped."""
    stem = _UNSAFE_CHARS.sub("_", video.stem).lstrip("._")
    stem = stem.replace("..", "_")
    if not stem or unsafe_reason(stem) is not None:
        raise InputError(
            "no usable scene id in the video's file name",
            file=video,
            expected="letters, digits, '.', '_' or '-'",
            found=repr(video.stem),
        )
    return stem


def plan_scene_ids(videos: Sequence[Path]) -> dict[Path, str]:
    """Video -> scene id for every video; InputError when two videos give the same id."""
    ids: dict[str, Path] = {}
    for video in videos:
        if video.suffix.lower() not in VIDEO_EXTS:
            raise InputError(
                "not a video file name",
                file=video,
                expected=" ".join(VIDEO_EXTS),
                found=video.suffix,
            )
        scene_id = scene_id_for(video)
        if scene_id in ids:
            raise InputError(
                f"two videos give the scene id '{scene_id}'; rename one",
                file=video,
                expected="distinct scene ids",
                found=f"{ids[scene_id]} and {video}",
            )
        ids[scene_id] = video
    return {video: scene_id for scene_id, video in ids.items()}


@dataclass(frozen=True)
class Extracted:
    """What happened to one video: ``extracted``, ``current`` (already done) or ``failed``."""

    video: Path
    scene_id: str
    status: str
    frames: int = 0
    message: str = ""


def _record(video: Path, every: int, max_frames: int | None) -> dict[str, Any]:
    info = video.stat()
    return {
        "video": str(video.resolve()),
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "every": every,
        "max_frames": max_frames,
    }


def _is_current(scene_dir: Path, wanted: dict[str, Any]) -> bool:
    path = scene_dir / RECORD
    if not path.is_file():
        return False
    try:
        found = read_json(path)
    except InputError:
        return False
    return isinstance(found, dict) and all(found.get(k) == v for k, v in wanted.items())


def remove_dead_temps(raw_root: Path) -> int:
    """Remove hidden working folders of extractions whose process is gone; return how many."""
    removed = 0
    for folder in raw_root.glob(f".*{_TEMP_TAG}*"):
        pid_text = folder.name.rsplit(_TEMP_TAG, 1)[-1]
        if not folder.is_dir() or not pid_text.isdigit():
            continue
        if int(pid_text) != os.getpid() and _alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def decode_frames(video: Path, every: int, max_frames: int | None, out_dir: Path) -> int:
    """Decode ``video``'s first video stream into ``out_dir/frame_XXXX.png``; return the count.

    InputError names the file when the container or a packet cannot be decoded.
    """
    import av

    t = 0
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise InputError("no video stream", file=video, expected="a video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            total = int(stream.frames or 0)
            estimate = total // every if total else 0
            if max_frames is not None:
                estimate = min(estimate, max_frames) if estimate else max_frames
            with Progress(estimate, f"extract {video.name}") as bar:
                for i, frame in enumerate(container.decode(stream)):
                    if i % every:
                        continue
                    rgb = frame.to_ndarray(format="rgb24")
                    atomic_write_png(out_dir / f"frame_{t:04d}.png", rgb, compress_level=1)
                    t += 1
                    bar.update(1)
                    if max_frames is not None and t >= max_frames:
                        break
    except av.FFmpegError as exc:
        raise InputError(f"cannot decode video: {exc}", file=video) from exc
    if t == 0:
        raise InputError("no frame could be decoded", file=video, expected=">= 1 frame", found=0)
    return t


def extract_video(
    video: Path,
    raw_root: Path,
    scene_id: str,
    *,
    every: int = 1,
    max_frames: int | None = None,
    force: bool = False,
) -> Extracted:
    """Extract one video to ``raw_root/scene_id``; failures come back as a ``failed`` result.

    A scene folder that exists without an extraction record is someone else's: refused.
    """
    scene_dir = raw_root / scene_id
    wanted = _record(video, every, max_frames)
    if scene_dir.exists() and not (scene_dir / RECORD).is_file():
        message = f"{scene_dir} exists and was not written by `trainset focus extract`; move it"
        return Extracted(video, scene_id, "failed", message=message)
    if not force and _is_current(scene_dir, wanted):
        frames = int(read_json(scene_dir / RECORD).get("frames", 0))
        return Extracted(video, scene_id, "current", frames)
    work = raw_root / f".{scene_id}{_TEMP_TAG}{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        frames = decode_frames(video, every, max_frames, work)
        atomic_write_json(work / RECORD, {**wanted, "sha256": sha256_file(video), "frames": frames})
        if scene_dir.exists():  # an older extraction of this video: replaced whole
            old = raw_root / f".{scene_id}{_TEMP_TAG}{os.getpid()}-old"
            scene_dir.rename(old)
            work.rename(scene_dir)
            shutil.rmtree(old)
        else:
            work.rename(scene_dir)
    except (InputError, OSError) as exc:
        shutil.rmtree(work, ignore_errors=True)
        return Extracted(video, scene_id, "failed", message=str(exc))
    return Extracted(video, scene_id, "extracted", frames)


def extract_videos(
    videos: Sequence[str | os.PathLike[str]],
    raw_root: str | os.PathLike[str],
    *,
    every: int = 1,
    max_frames: int | None = None,
    force: bool = False,
) -> list[Extracted]:
    """Extract every video (see the module docstring); the result per video, in order.

    InputError (nothing written) for options out of range, missing files, names that are not
    videos and two videos giving one scene id.
    """
    if every < 1:
        raise InputError("--every must be at least 1", key="--every", expected=">= 1", found=every)
    if max_frames is not None and max_frames < 1:
        raise InputError(
            "--max-frames must be at least 1", key="--max-frames", expected=">= 1", found=max_frames
        )
    paths = [Path(v) for v in videos]
    for path in paths:
        if not path.is_file():
            raise InputError("video file not found", file=path, expected="a file", found="nothing")
    ids = plan_scene_ids(paths)
    try:
        import av  # noqa: F401
    except ImportError as exc:
        raise InputError(
            "video extraction needs PyAV: pip install 'trainset[video]' (or pip install av)",
            key="av",
        ) from exc
    root = Path(raw_root)
    if root.exists() and not root.is_dir():
        raise InputError("raw root is not a folder", file=root, expected="a folder", found="a file")
    root.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(root)
    results = []
    with Progress(len(paths), "extract") as bar:
        for path in paths:
            result = extract_video(
                path, root, ids[path], every=every, max_frames=max_frames, force=force
            )
            results.append(result)
            bar.update(1, result.scene_id)
    return results


def describe(results: Sequence[Extracted]) -> str:
    """A summary line, then one line per failed video."""
    count = {s: sum(r.status == s for r in results) for s in ("extracted", "current", "failed")}
    lines = [
        f"extract: {count['extracted']} extracted, {count['current']} already extracted, "
        f"{count['failed']} failed"
    ]
    lines += [f"  {r.scene_id}: {r.frames} frames from {r.video}" for r in results if r.frames]
    lines += [f"  failed {r.video}: {r.message}" for r in results if r.status == "failed"]
    return "\n".join(lines)
