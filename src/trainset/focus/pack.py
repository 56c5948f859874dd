"""A packed, memory-mappable copy of each scene for training, beside the plan's files.

The plan's per-frame files (a PNG per frame, an NPZ per map) cost a PNG decode or a zip inflate
per frame and modality: the clip loader spends its time there. ``pack`` writes, per scene::

    {scene}/packed/frames.npy   (T, 3, H, W) uint8       frames_sharp/frame_XXXX.png
    {scene}/packed/depth.npy    (T, H, W) float16        depth_maps/depth_XXXX.npz 'depth'
    {scene}/packed/focus.npy    (S, T, H, W) float16     focus_maps/set_XX/focus_XXXX.npz 'focus_map'
    {scene}/packed/bokeh.npy    (S, T, 3, H, W) uint8    bokeh_renders/set_XX/bokeh_XXXX.png
    {scene}/packed/pack.json    what was packed, from which sources, sha256 of each file

Raw ``.npy`` with 4096-byte headers, channels first, so a clip is one contiguous slice of a
memory map and needs only a dtype conversion (measured: ``benchmarks/clip_loader.py``). The
values are bit-identical to the plan's files. ``pack.json`` is written last; it records a
fingerprint of the scene's ``metadata.json`` and stage sentinels, and a pack whose fingerprint no
longer matches (a stage re-ran) is ignored by the reader until packed again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.focus.layout import (
    BOKEH_DIR,
    DEPTH_DIR,
    FOCUS_DIR,
    METADATA_FILE,
    SHARP_DIR,
    bokeh_path,
    depth_path,
    focus_path,
    frame_path,
    metadata_path,
    scene_ids,
    sharp_frame_count,
)
from trainset.pipeline.dataset_files import scene_lock
from trainset.store import (
    NPY_ALIGN,
    atomic_path,
    atomic_write_json,
    read_json,
    read_npz_array,
    read_png,
    remove_stale_temps,
    sha256_file,
)
from trainset.store.codecs import npy_header_bytes

PACK_DIR = "packed"
PACK_FILE = "pack.json"
PACK_FORMAT = "trainset.focus.packed"
PACK_VERSION = 1
# Stage folders whose sentinels (with metadata.json) say whether the sources changed.
SOURCE_DIRS = (SHARP_DIR, DEPTH_DIR, FOCUS_DIR, BOKEH_DIR)
MODALITIES = ("frames", "depth", "focus", "bokeh")


# -- the plan's files (paths from trainset.focus.layout) ----------------------------------------
def frame_count(scene_dir: Path) -> int:
    """Number of sharp frames ``frame_0000.png ..`` (must be numbered without gaps)."""
    return sharp_frame_count(scene_dir.parent, scene_dir.name)


def read_sets(scene_dir: Path) -> list[dict[str, float]]:
    """``metadata.json`` ``sets[*]`` as ``{f, N, S_focus, max_coc}`` floats."""
    path = metadata_path(scene_dir.parent, scene_dir.name)
    meta = read_json(path)
    sets = meta.get("sets") if isinstance(meta, dict) else None
    if not isinstance(sets, list):
        raise InputError(
            f"scene {scene_dir.name}: metadata has no parameter sets",
            file=path,
            key="sets",
            expected="list of {f, N, S_focus, max_coc}",
            found=type(sets).__name__,
        )
    out = []
    for i, entry in enumerate(sets):
        try:
            out.append({k: float(entry[k]) for k in ("f", "N", "S_focus", "max_coc")})
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"scene {scene_dir.name}: parameter set {i} is incomplete",
                file=path,
                key=f"sets[{i}]",
                expected="numbers f, N, S_focus, max_coc",
                found=entry,
            ) from exc
    return out


def load_frame(scene_dir: Path, t: int) -> np.ndarray:
    """Sharp frame ``t`` as (3, H, W) uint8."""
    return _chw(frame_path(scene_dir.parent, scene_dir.name, t))


def load_bokeh(scene_dir: Path, s: int, t: int) -> np.ndarray:
    """Render ``t`` of set ``s`` as (3, H, W) uint8."""
    return _chw(bokeh_path(scene_dir.parent, scene_dir.name, s, t))


def load_depth(scene_dir: Path, t: int) -> np.ndarray:
    """Depth map ``t`` (H, W) as stored (float16 metres)."""
    path = depth_path(scene_dir.parent, scene_dir.name, t)
    return _map(path, "depth", scene_dir.name, "depth", t)


def load_focus(scene_dir: Path, s: int, t: int) -> np.ndarray:
    """Focus map ``t`` of set ``s`` (H, W) as stored (float16 in [0, 1])."""
    path = focus_path(scene_dir.parent, scene_dir.name, s, t)
    return _map(path, "focus_map", scene_dir.name, f"set {s} focus", t)


def _chw(path: Path) -> np.ndarray:
    """The image at ``path`` as (3, H, W) uint8 RGB (``read_png`` converts any mode to RGB)."""
    return np.ascontiguousarray(read_png(path).transpose(2, 0, 1))


def _map(path: Path, key: str, scene_id: str, what: str, t: int) -> np.ndarray:
    """Array ``key`` of the NPZ at ``path``, which must be 2-D float."""
    arr = read_npz_array(path, key)
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise InputError(
            f"scene {scene_id} frame {t}: {what} map is not a 2-D float array",
            file=path,
            key=key,
            expected="(H, W) float16",
            found=f"{arr.shape} {arr.dtype}",
        )
    return arr


def source_fingerprint(scene_dir: Path) -> str:
    """sha256 over ``metadata.json``, the stage sentinels and the frame count of a scene."""
    h = hashlib.sha256()
    for rel in [METADATA_FILE, *(f"{d}/.done" for d in SOURCE_DIRS)]:
        p = scene_dir / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.is_file() else b"<absent>")
    h.update(str(frame_count(scene_dir)).encode())
    return h.hexdigest()


# -- writing ---------------------------------------------------------------------------------
def _stream_npy(
    path: Path,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    chunks: Iterable[np.ndarray],
) -> str:
    """Write an aligned ``.npy`` of ``shape`` from ``chunks`` (in C order); return its sha256."""
    digest = hashlib.sha256()
    want = int(np.prod(shape)) * dtype.itemsize
    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        header = npy_header_bytes(shape, dtype, align=NPY_ALIGN)
        fh.write(header)
        digest.update(header)
        for chunk in chunks:
            data = np.ascontiguousarray(chunk, dtype=dtype).data.cast("B")
            fh.write(data)
            digest.update(data)
            written += len(data)
        if written != want:
            raise InputError(f"packed {path.name} has the wrong size", expected=want, found=written)
    return digest.hexdigest()


def pack_scene(out_root: str | os.PathLike[str], scene_id: str) -> dict[str, Any]:
    """Pack one scene (every modality that exists) into ``{scene}/packed/``; returns pack.json.

    Sources that disagree in (H, W) or dtype are refused with an error naming the scene and
    frame. The previous ``pack.json`` is removed first, so a pack killed midway is never used.
    """
    root = Path(out_root)
    scene_dir = root / scene_id
    if not scene_dir.is_dir():
        raise InputError(f"scene {scene_id} not found", file=scene_dir)
    with scene_lock(root, scene_id):
        return _pack_locked(root, scene_id)


def _pack_locked(root: Path, scene_id: str) -> dict[str, Any]:
    scene_dir = root / scene_id
    out = scene_dir / PACK_DIR
    out.mkdir(exist_ok=True)
    remove_stale_temps(out)  # what a killed pack left (a live writer's temps are kept)
    (out / PACK_FILE).unlink(missing_ok=True)
    fingerprint = source_fingerprint(scene_dir)
    n = frame_count(scene_dir)
    first = load_frame(scene_dir, 0)
    _, h, w = first.shape
    u8 = np.dtype(np.uint8)
    files: dict[str, dict[str, Any]] = {}

    def add(
        name: str, shape: tuple[int, ...], dtype: np.dtype[Any], chunks: Iterator[np.ndarray]
    ) -> None:
        sha = _stream_npy(out / f"{name}.npy", shape, dtype, chunks)
        files[name] = {
            "file": f"{name}.npy",
            "shape": list(shape),
            "dtype": dtype.str,
            "sha256": sha,
        }

    add(
        "frames",
        (n, 3, h, w),
        u8,
        _per_frame((load_frame(scene_dir, t) for t in range(n)), (3, h, w), u8, "frame", scene_id),
    )
    if depth_path(root, scene_id, 0).exists():
        d0 = load_depth(scene_dir, 0)
        add(
            "depth",
            (n, h, w),
            d0.dtype,
            _per_frame(
                (load_depth(scene_dir, t) for t in range(n)), (h, w), d0.dtype, "depth", scene_id
            ),
        )
    sets = read_sets(scene_dir) if metadata_path(root, scene_id).exists() else []
    n_sets = len(sets)
    if n_sets and focus_path(root, scene_id, 0, 0).exists():
        f0 = load_focus(scene_dir, 0, 0)
        maps = (load_focus(scene_dir, s, t) for s in range(n_sets) for t in range(n))
        add(
            "focus",
            (n_sets, n, h, w),
            f0.dtype,
            _per_frame(maps, (h, w), f0.dtype, "focus", scene_id, n),
        )
    if n_sets and bokeh_path(root, scene_id, 0, 0).exists():
        renders = (load_bokeh(scene_dir, s, t) for s in range(n_sets) for t in range(n))
        add(
            "bokeh",
            (n_sets, n, 3, h, w),
            u8,
            _per_frame(renders, (3, h, w), u8, "bokeh", scene_id, n),
        )
    record = {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "scene_id": scene_id,
        "n_frames": n,
        "height": int(h),
        "width": int(w),
        "sets": sets,
        "files": files,
        "fingerprint": fingerprint,
    }
    atomic_write_json(out / PACK_FILE, record)
    return record


def _per_frame(
    arrays: Iterator[np.ndarray],
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    what: str,
    scene: str,
    n_frames: int = 0,
) -> Iterator[np.ndarray]:
    """Pass arrays through, refusing one whose shape or dtype differs from the scene's first."""
    for k, arr in enumerate(arrays):
        if arr.shape != shape or arr.dtype != dtype:
            t = k % n_frames if n_frames else k
            where = f"set {k // n_frames} " if n_frames else ""
            raise InputError(
                f"scene {scene} frame {t}: {where}{what} differs from the scene's first frame",
                expected=f"{shape} {dtype}",
                found=f"{arr.shape} {arr.dtype}",
            )
        yield arr


@dataclass
class PackResult:
    """What `pack` did: scenes packed, already current, and failed (scene -> reason)."""

    packed: list[str]
    current: list[str]
    failed: dict[str, str]


def pack_dataset(
    out_root: str | os.PathLike[str],
    *,
    scenes: Iterable[str] | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> PackResult:
    """Pack every scene of ``scene_index.json`` (or ``scenes``) whose pack is missing or stale.

    ``force`` re-packs current scenes too. ``progress`` is called with each scene id. A scene
    whose files cannot be read (a truncated PNG, a corrupt NPZ, an image too large to decode)
    fails alone, with the reason; the others are packed.
    """
    result = PackResult([], [], {})
    for scene_id in scenes if scenes is not None else scene_ids(Path(out_root)):
        if progress is not None:
            progress(scene_id)
        if not force and open_packed(Path(out_root) / scene_id) is not None:
            result.current.append(scene_id)
            continue
        try:
            pack_scene(out_root, scene_id)
        except (InputError, OSError) as exc:
            result.failed[scene_id] = str(exc)
            continue
        result.packed.append(scene_id)
    return result


# -- reading ---------------------------------------------------------------------------------
@dataclass
class PackedScene:
    """Memory maps of one scene's packed arrays (absent modalities are None)."""

    scene_id: str
    record: dict[str, Any]
    frames: np.ndarray
    depth: np.ndarray | None
    focus: np.ndarray | None
    bokeh: np.ndarray | None


def read_pack_record(scene_dir: Path) -> dict[str, Any] | None:
    """``packed/pack.json`` of a scene when present and of this format, else None."""
    path = scene_dir / PACK_DIR / PACK_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except InputError:
        return None
    if not isinstance(record, dict) or record.get("format") != PACK_FORMAT:
        return None
    if record.get("version") != PACK_VERSION:
        return None
    return record


def open_packed(scene_dir: Path) -> PackedScene | None:
    """Memory-map a scene's pack when it exists and its sources have not changed since."""
    record = read_pack_record(scene_dir)
    if record is None:
        return None
    try:
        if record.get("fingerprint") != source_fingerprint(scene_dir):
            return None
    except InputError:
        return None
    arrays: dict[str, np.ndarray | None] = dict.fromkeys(MODALITIES)
    for name, entry in record.get("files", {}).items():
        if name not in arrays:
            continue
        path = scene_dir / PACK_DIR / str(entry["file"])
        try:
            # Copy-on-write: shared with the page cache like "r" (nothing here writes), but
            # writable, so torch can convert straight out of the map (clips.read_into).
            arr = np.load(path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"scene {scene_dir.name}: packed {name} unreadable: {exc}", file=path
            ) from exc
        if list(arr.shape) != list(entry["shape"]) or arr.dtype.str != entry["dtype"]:
            raise InputError(
                f"scene {scene_dir.name}: packed {name} does not match pack.json",
                file=path,
                expected=f"{tuple(entry['shape'])} {entry['dtype']}",
                found=f"{arr.shape} {arr.dtype.str}",
            )
        arrays[name] = arr
    frames = arrays["frames"]
    if frames is None:
        return None
    return PackedScene(
        scene_dir.name, record, frames, arrays["depth"], arrays["focus"], arrays["bokeh"]
    )


def check_packed_scene(out_root: str | os.PathLike[str], scene_id: str) -> list[tuple[str, str]]:
    """Compare a scene's pack with the plan's files; returns (check, reason) per failure.

    No pack is no failure (packing is optional). Checks: pack.json readable and current, each
    file's sha256, and every packed frame and map equal to the file it was packed from.
    """
    scene_dir = Path(out_root) / scene_id
    path = scene_dir / PACK_DIR / PACK_FILE
    if not path.exists():
        return []
    record = read_pack_record(scene_dir)
    if record is None:
        return [("packed", f"{path} is not a {PACK_FORMAT} v{PACK_VERSION} record; run pack again")]
    failures: list[tuple[str, str]] = []
    try:
        if record.get("fingerprint") != source_fingerprint(scene_dir):
            failures.append(("packed", "pack is stale: a stage re-ran since; run pack again"))
            return failures
    except InputError as exc:
        return [("packed", str(exc))]
    for name, entry in record.get("files", {}).items():
        file = scene_dir / PACK_DIR / str(entry.get("file"))
        if not file.is_file():
            failures.append((f"packed/{name}", f"{file.name} missing"))
        elif sha256_file(file) != entry.get("sha256"):
            failures.append((f"packed/{name}", f"{file.name} sha256 differs from pack.json"))
    if failures:
        return failures
    try:
        packed = open_packed(scene_dir)
    except InputError as exc:
        return [("packed", str(exc))]
    if packed is None:
        return [("packed", "pack could not be opened")]
    n = int(record["n_frames"])
    n_sets = len(record.get("sets", []))
    loaders: list[tuple[str, np.ndarray | None, Callable[[int, int], np.ndarray], int]] = [
        ("frames", packed.frames, lambda s, t: load_frame(scene_dir, t), 1),
        ("depth", packed.depth, lambda s, t: load_depth(scene_dir, t), 1),
        ("focus", packed.focus, lambda s, t: load_focus(scene_dir, s, t), n_sets),
        ("bokeh", packed.bokeh, lambda s, t: load_bokeh(scene_dir, s, t), n_sets),
    ]
    for name, arr, load, sets in loaders:
        if arr is None:
            continue
        for s in range(sets):
            for t in range(n):
                got = arr[t] if name in ("frames", "depth") else arr[s, t]
                try:
                    want = load(s, t)
                except InputError as exc:
                    failures.append((f"packed/{name}", str(exc)))
                    continue
                if (
                    want.shape != got.shape
                    or want.dtype != got.dtype
                    or want.tobytes() != got.tobytes()
                ):
                    where = f"set {s} " if name in ("focus", "bokeh") else ""
                    failures.append(
                        (f"packed/{name}", f"{where}frame {t} differs from the plan's file")
                    )
    return failures
