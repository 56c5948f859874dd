"""Clips for training: the reader side of the plan's "Interfaces to focus_dataset.py".

A clip is ``clip_len`` consecutive frames of one scene under one CoC parameter set. Per clip
:class:`FocusClipDataset` returns (T, C, H, W) float32 tensors:

| key | from | value |
|---|---|---|
| ``frames`` | ``frames_sharp/frame_XXXX.png`` | RGB in [0, 1], C = 3 |
| ``focus``  | ``focus_maps/set_XX/focus_XXXX.npz`` ``focus_map`` | [0, 1], C = 1 |
| ``depth``  | ``depth_maps/depth_XXXX.npz`` ``depth`` | metres, C = 1 |
| ``bokeh``  | ``bokeh_renders/set_XX/bokeh_XXXX.png`` | RGB in [0, 1], C = 3 |
| ``roi``    | training-time box | (4,) ``[x0, y0, x1, y1]`` as fractions of W and H |
| ``f``, ``N``, ``S_focus``, ``max_coc`` | ``metadata.json`` ``sets[i]`` | 0-d float32 (metres, f-number) |

plus ``scene_id`` (str), ``set`` and ``start`` (int). A scene's pack (``trainset focus pack``)
is read instead of the per-frame files when it is present and current: same values, no decode.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from trainset.errors import InputError
from trainset.focus.layout import METADATA_FILE, SPLIT_FILE, SPLITS, scene_ids
from trainset.focus.pack import (
    PackedScene,
    frame_count,
    load_bokeh,
    load_depth,
    load_focus,
    load_frame,
    open_packed,
    read_sets,
)
from trainset.loading.sampler import SampleBatch, checked_rank
from trainset.pipeline.seeds import derive_seed

MODALITIES = ("frames", "focus", "depth", "bokeh")
ROI_MODES = ("full", "random")
# Smallest side of a random ROI box, as a fraction of the frame side.
ROI_MIN_FRACTION = 0.25
PARAM_KEYS = ("f", "N", "S_focus", "max_coc")
# Channels per frame of each modality.
CHANNELS = {"frames": 3, "focus": 1, "depth": 1, "bokeh": 3}
# uint8 images map to [0, 1] by division by 255.
_U8_MAX = np.float32(255)


@dataclass(frozen=True)
class _Scene:
    scene_id: str
    path: Path
    n_frames: int
    sets: tuple[dict[str, float], ...]


class FocusClipDataset(Dataset[dict[str, Any]]):
    """Clips of ``clip_len`` frames every ``stride`` frames, for every scene of ``split`` and
    every CoC set in ``coc_sets`` (all sets by default). Scenes are those of
    ``scene_index.json``; each scene's ``split.txt`` says its split.

    ``modalities`` picks what is read (any of frames, focus, depth, bokeh). ``roi``: ``"full"``
    gives ``[0, 0, 1, 1]``; ``"random"`` a box with sides in [0.25, 1] drawn from (seed, epoch,
    clip), the same in every process. ``packed``: None uses a scene's pack when current, True
    requires one, False never uses it.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        clip_len: int = 8,
        stride: int | None = None,
        coc_sets: Sequence[int] | None = None,
        modalities: Sequence[str] = MODALITIES,
        roi: str = "full",
        seed: int = 0,
        packed: bool | None = None,
    ) -> None:
        self.root = Path(root)
        if split not in SPLITS:
            raise InputError("unknown split", expected=SPLITS, found=split)
        if clip_len < 1:
            raise InputError("clip length must be >= 1", expected=">= 1", found=clip_len)
        step = clip_len if stride is None else int(stride)
        if step < 1:
            raise InputError("stride must be >= 1", expected=">= 1", found=stride)
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise InputError("unknown modality", expected=MODALITIES, found=list(modalities))
        if roi not in ROI_MODES:
            raise InputError("unknown roi mode", expected=ROI_MODES, found=roi)
        self.split = split
        self.clip_len = int(clip_len)
        self.stride = step
        self.modalities = tuple(modalities)
        self.roi = roi
        self.seed = int(seed)
        self.epoch = 0
        self.packed = packed
        self.scenes: list[_Scene] = []
        rows: list[tuple[int, int, int]] = []
        for scene_id in scene_ids(self.root):
            path = self.root / scene_id
            if _read_split(path) != split:
                continue
            scene = _Scene(scene_id, path, frame_count(path), tuple(read_sets(path)))
            chosen = range(len(scene.sets)) if coc_sets is None else [int(s) for s in coc_sets]
            for s in chosen:
                if not 0 <= s < len(scene.sets):
                    raise InputError(
                        f"scene {scene_id}: CoC set {s} does not exist",
                        file=path / METADATA_FILE,
                        expected=f"0..{len(scene.sets) - 1}",
                        found=s,
                    )
            k = len(self.scenes)
            self.scenes.append(scene)
            for s in chosen:
                for start in range(0, scene.n_frames - self.clip_len + 1, self.stride):
                    rows.append((k, s, start))
        self.clips = np.array(rows, dtype=np.int64).reshape(-1, 3)
        self._packs: dict[int, PackedScene | None] = {}
        self._pid = -1
        if packed:
            for k, scene in enumerate(self.scenes):
                if self._pack(k) is None:
                    raise InputError(
                        f"scene {scene.scene_id}: no current pack; run `trainset focus pack`",
                        file=scene.path / "packed",
                    )

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        """Epoch whose random ROI boxes the clips get."""
        self.epoch = int(epoch)

    def scene_of(self, index: int) -> str:
        """Scene id of clip ``index``."""
        return self.scenes[int(self.clips[index, 0])].scene_id

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_packs={}, _pid=-1)
        return state

    def _pack(self, k: int) -> PackedScene | None:
        if self.packed is False:
            return None
        if self._pid != os.getpid():
            self._packs = {}
            self._pid = os.getpid()
        if k not in self._packs:
            self._packs[k] = open_packed(self.scenes[k].path)
        return self._packs[k]

    def roi_box(self, index: int, epoch: int | None = None) -> np.ndarray:
        """(4,) float32 ``[x0, y0, x1, y1]`` of clip ``index`` in ``epoch`` (default
        :attr:`epoch`), as fractions of W and H."""
        if self.roi == "full":
            return np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32)
        k, s, start = (int(v) for v in self.clips[index])
        e = self.epoch if epoch is None else int(epoch)
        name = f"roi/{self.scenes[k].scene_id}/{s}/{start}/{e}"
        rng = np.random.default_rng(derive_seed(self.seed, name))
        w, h = rng.uniform(ROI_MIN_FRACTION, 1.0, size=2)
        x0 = rng.uniform(0.0, 1.0 - w)
        y0 = rng.uniform(0.0, 1.0 - h)
        return np.array([x0, y0, x0 + w, y0 + h], dtype=np.float32)

    def clip_shapes(self, index: int) -> dict[str, tuple[int, int, int, int]]:
        """(T, C, H, W) of every modality of clip ``index`` (one frame is read to learn H, W)."""
        k, _, start = (int(v) for v in self.clips[index])
        pack = self._pack(k)
        h, w = (
            pack.frames.shape[-2:]
            if pack is not None
            else load_frame(self.scenes[k].path, start).shape[-2:]
        )
        return {m: (self.clip_len, CHANNELS[m], int(h), int(w)) for m in self.modalities}

    def read_into(
        self, index: int, out: dict[str, np.ndarray], epoch: int | None = None
    ) -> dict[str, Any]:
        """Write clip ``index`` into ``out`` (modality -> (T, C, H, W) float32, e.g. rows of a
        batch buffer) and return the rest of its item (roi, parameters, scene_id, set, start).

        One conversion per modality, straight out of the pack's memory map when the scene is
        packed. A clip whose size differs from ``out`` is refused, naming it.
        """
        arrays = self._arrays(index)
        k, _, start = (int(v) for v in self.clips[index])
        for m in self.modalities:
            arr, dst = arrays[m], out[m]
            if dst.shape[-2:] != arr.shape[-2:]:
                raise InputError(
                    f"scene {self.scenes[k].scene_id} frame {start}: clip size differs from "
                    "the batch's (scenes of one batch must share H, W)",
                    expected=dst.shape[-2:],
                    found=arr.shape[-2:],
                )
            # One pass each, out of the memory map too (numpy's casting divide is ~5x torch's
            # to() + div_() here, with the same float32 result).
            if m in ("frames", "bokeh"):
                np.divide(arr, _U8_MAX, out=dst, dtype=np.float32)
            else:
                _to_float32(arr, dst[:, 0])
        return self._rest(index, epoch)

    def _arrays(self, index: int) -> dict[str, np.ndarray]:
        """Every modality of clip ``index`` as stored (uint8 images, float16 maps), checked to
        share one (H, W)."""
        k, s, start = (int(v) for v in self.clips[index])
        scene = self.scenes[k]
        frames = range(start, start + self.clip_len)
        pack = self._pack(k)
        arrays = (
            self._from_pack(pack, s, start)
            if pack is not None
            else {m: self._from_files(scene, m, s, frames) for m in self.modalities}
        )
        first = arrays[self.modalities[0]].shape[-2:]
        for m in self.modalities:
            if arrays[m].shape[-2:] != first:
                raise InputError(
                    f"scene {scene.scene_id} frame {start}: {m} size differs from {self.modalities[0]}",
                    expected=first,
                    found=arrays[m].shape[-2:],
                )
        return arrays

    def _rest(self, index: int, epoch: int | None) -> dict[str, Any]:
        """The item's entries besides the modalities."""
        k, s, start = (int(v) for v in self.clips[index])
        scene = self.scenes[k]
        item: dict[str, Any] = {"roi": torch.from_numpy(self.roi_box(index, epoch))}
        for key in PARAM_KEYS:
            item[key] = torch.tensor(scene.sets[s][key], dtype=torch.float32)
        item.update(scene_id=scene.scene_id, set=s, start=start)
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._item(index, self.epoch)

    def __getitems__(self, request: SampleBatch | Sequence[int]) -> list[dict[str, Any]]:
        """Items of a batch; a :class:`trainset.loading.SampleBatch` brings its own epoch."""
        if isinstance(request, SampleBatch):
            return [self._item(int(i), request.epoch) for i in request.indices]
        return [self._item(int(i), self.epoch) for i in request]

    def _item(self, index: int, epoch: int) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for m, arr in self._arrays(index).items():
            if m in ("frames", "bokeh"):
                item[m] = torch.from_numpy(np.divide(arr, _U8_MAX, dtype=np.float32))
            else:
                item[m] = torch.from_numpy(arr.astype(np.float32)).unsqueeze(1)
        return {**item, **self._rest(index, epoch)}

    def _from_pack(self, pack: PackedScene, s: int, start: int) -> dict[str, np.ndarray]:
        sl = slice(start, start + self.clip_len)
        out: dict[str, np.ndarray] = {}
        for m in self.modalities:
            arr = getattr(pack, m)
            if arr is None:
                raise InputError(
                    f"scene {pack.scene_id}: the pack has no {m}; pack again after that stage",
                    file=self.root / pack.scene_id / "packed",
                )
            out[m] = arr[sl] if m in ("frames", "depth") else arr[s, sl]
        return out

    def _from_files(self, scene: _Scene, m: str, s: int, frames: range) -> np.ndarray:
        p = scene.path
        if m == "frames":
            arrays = [load_frame(p, t) for t in frames]
        elif m == "bokeh":
            arrays = [load_bokeh(p, s, t) for t in frames]
        elif m == "depth":
            arrays = [load_depth(p, t) for t in frames]
        else:
            arrays = [load_focus(p, s, t) for t in frames]
        for t, arr in zip(frames, arrays):
            if arr.shape != arrays[0].shape or arr.dtype != arrays[0].dtype:
                raise InputError(
                    f"scene {scene.scene_id} frame {t}: {m} differs from frame {frames[0]}",
                    expected=f"{arrays[0].shape} {arrays[0].dtype}",
                    found=f"{arr.shape} {arr.dtype}",
                )
        return np.stack(arrays)


def _to_float32(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst[...] = src`` converted to float32 (exact from float16). torch's vectorised
    float16 conversion is ~10x numpy's; a read-only source (which torch would warn about) goes
    through numpy."""
    if src.flags.writeable:
        torch.from_numpy(dst).copy_(torch.from_numpy(src))
    else:
        np.copyto(dst, src)


def _read_split(scene_dir: Path) -> str:
    """The scene's ``split.txt`` (train, val or test)."""
    path = scene_dir / SPLIT_FILE
    try:
        split = path.read_text(encoding="utf-8").strip()
    except OSError:
        split = None
    if split not in SPLITS:
        raise InputError(
            f"scene {scene_dir.name}: no valid split.txt; run `trainset focus validate --requeue`",
            file=path,
            expected=" | ".join(SPLITS),
            found=split if split is not None else "no file",
        )
    return split


class ClipSampler(Sampler[int]):
    """Clip indices of a :class:`FocusClipDataset`, shuffled by (seed, epoch).

    ``clips_per_scene`` draws at most that many clips of each scene per epoch (long scenes do
    not dominate); the choice, too, depends only on (seed, epoch). Iterating moves on to the
    next epoch when one ends; :meth:`set_epoch` picks one.

    ``rank`` and ``world_size`` shard an epoch for plain ``torch.distributed`` training: every
    rank takes clips ``rank, rank + world_size, ...`` of the same order, padded by wrapping
    around so that all ranks get the same count (as ``DistributedSampler`` does). Leave them
    alone under Lightning, which wraps any sampler in its own ``DistributedSamplerWrapper``.
    """

    def __init__(
        self,
        dataset: FocusClipDataset,
        *,
        shuffle: bool = True,
        seed: int = 0,
        clips_per_scene: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if clips_per_scene is not None and clips_per_scene < 1:
            raise InputError("clips_per_scene must be >= 1", expected=">= 1", found=clips_per_scene)
        self.rank, self.world_size = checked_rank(rank, world_size)
        self.scene_of = dataset.clips[:, 0].copy()
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.clips_per_scene = clips_per_scene
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` next."""
        self.epoch = int(epoch)

    def for_rank(self, rank: int, world_size: int) -> ClipSampler:
        """The same sampler for rank ``rank`` of ``world_size``."""
        other = copy.copy(self)
        other.rank, other.world_size = checked_rank(rank, world_size)
        return other

    def order(self, epoch: int) -> np.ndarray:
        """Clip indices of ``epoch`` (of this rank)."""
        full = self._order_all_ranks(epoch)
        if self.world_size == 1 or len(full) == 0:
            return full
        total = -(-len(full) // self.world_size) * self.world_size
        padded = np.resize(full, total)  # wraps around to the start, as DistributedSampler pads
        return padded[self.rank :: self.world_size]

    def _order_all_ranks(self, epoch: int) -> np.ndarray:
        """Clip indices of ``epoch`` over all ranks: a function of (seed, epoch) alone."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
        idx = np.arange(len(self.scene_of), dtype=np.int64)
        if self.clips_per_scene is not None:
            keep = []
            for k in np.unique(self.scene_of):
                mine = idx[self.scene_of == k]
                if len(mine) > self.clips_per_scene:
                    mine = np.sort(rng.choice(mine, self.clips_per_scene, replace=False))
                keep.append(mine)
            idx = np.concatenate(keep) if keep else idx
        return rng.permutation(idx) if self.shuffle else idx

    def __len__(self) -> int:
        if self.clips_per_scene is None:
            n = len(self.scene_of)
        else:
            _, per = np.unique(self.scene_of, return_counts=True)
            n = int(np.minimum(per, self.clips_per_scene).sum())
        return -(-n // self.world_size)

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        yield from (int(i) for i in self.order(epoch))
        self.epoch = epoch + 1


def collate_fn(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack clips into a batch: tensors gain a leading B, ``scene_id`` becomes a list,
    ``set`` and ``start`` int64 tensors. Clips of different (H, W) are refused (naming them)."""
    if not items:
        raise InputError("cannot collate an empty batch", expected=">= 1 clip", found=0)
    out: dict[str, Any] = {}
    for key, first in items[0].items():
        values = [it[key] for it in items]
        if isinstance(first, torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                found = [f"{it['scene_id']}@{it['start']}: {tuple(it[key].shape)}" for it in items]
                raise InputError(
                    f"clips of different sizes in one batch ({key})",
                    expected="one (T, C, H, W) per batch",
                    found=found,
                )
            out[key] = torch.stack(values)
        elif isinstance(first, str):
            out[key] = list(values)
        else:
            out[key] = torch.tensor(values, dtype=torch.int64)
    return out
