"""PyTorch datasets of SAR patches: the plan's ``SARPatchDataset`` and ``LazyPatchDataset``.

``SARPatchDataset`` wraps an in-memory (N, H, W) array. ``LazyPatchDataset`` reads patches
from the shards of a ``manifest.json`` (or, with ``trust_pickle``, the plan's pickled
``metadata.npy``) through :mod:`trainset.loading`: files are opened once per process (again
after a fork, never per item), and ``__getitems__`` reads a whole batch in one sorted pass
straight into a recycled batch buffer of the process. Items are (C, H, W) float32 tensors in
[0, 1] (C = 1 unless bands were stacked).

Augmentation is the plan's distribution: horizontal flip with p = 0.5, vertical flip with
p = 0.5, then a rotation by k * 90 degrees, k uniform in 0..3, which is the uniform
distribution over the 8 flips/rotations (D4). ``SARPatchDataset`` and :func:`augment_patches`
draw from torch's generator (``torch.manual_seed`` makes them reproducible).
``LazyPatchDataset`` draws a D4 code per patch from (aug_seed, epoch, patch id)
(:func:`trainset.loading.d4_codes`), the same for any number of workers and after a resume,
and applies it inside the one copy from the shard.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from trainset.errors import InputError
from trainset.loading import BatchRows, SampleBatch, ShardDataset
from trainset.sar.legacy import is_pickled_npy, legacy_manifest, load_legacy_metadata
from trainset.sar.manifest import Manifest

Transform = Callable[[torch.Tensor], torch.Tensor]


def augment_patches(batch: np.ndarray) -> np.ndarray:
    """Apply the plan's random flips and 90-degree rotations to each item of (B, C, H, W).

    Returns a new C-contiguous array (square patches keep their shape).
    """
    n = batch.shape[0]
    draws = torch.randint(0, 4, (n, 3)).numpy()
    out = np.empty_like(batch)
    for i in range(n):
        item = batch[i]
        if draws[i, 0] % 2:
            item = item[..., ::-1]
        if draws[i, 1] % 2:
            item = item[..., ::-1, :]
        out[i] = np.rot90(item, k=int(draws[i, 2]), axes=(-2, -1))
    return out


def _to_items(batch: np.ndarray, augment: bool, transform: Transform | None) -> list[torch.Tensor]:
    """(B, C, H, W) float32 -> list of (C, H, W) tensors (views of one batch tensor)."""
    if augment:
        batch = augment_patches(batch)
    tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    items = list(tensor.unbind(0))
    if transform is not None:
        items = [transform(item) for item in items]
    return items


class SARPatchDataset(Dataset[torch.Tensor]):
    """In-memory patches (N, H, W) in [0, 1] -> (1, H, W) float32 tensors (for small subsets)."""

    def __init__(
        self, patches: np.ndarray, augment: bool = True, transform: Transform | None = None
    ) -> None:
        arr = np.asarray(patches)
        if arr.ndim != 3:
            raise InputError(
                "patches must be 3-D", key="patches", expected="(N, H, W)", found=arr.shape
            )
        arr = arr if arr.dtype == np.float32 else arr.astype(np.float32)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
            raise InputError(
                "patch values must lie in [0, 1]",
                key="patches",
                expected="[0, 1]",
                found=f"[{lo}, {hi}]",
            )
        self.patches = arr
        self.augment = augment
        self.transform = transform

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, idx: int) -> torch.Tensor:
        return self.__getitems__([idx])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """A whole batch: list of (1, H, W) tensors."""
        batch = np.array(self.patches[np.asarray(indices, dtype=np.int64)])[:, None]
        return _to_items(batch, self.augment, self.transform)

    def _augment(self, patch: np.ndarray) -> np.ndarray:
        """The plan's augmentation of one (H, W) patch (a new array)."""
        return augment_patches(patch[None, None])[0, 0]


def open_patch_set(
    metadata_path: str | os.PathLike[str], *, trust_pickle: bool = False
) -> Manifest:
    """A manifest from ``manifest.json``/its directory, or from a legacy pickled
    ``metadata.npy`` when ``trust_pickle`` is true (shard sha256 are not computed)."""
    p = Path(metadata_path)
    if p.suffix == ".npy" and is_pickled_npy(p):
        meta = load_legacy_metadata(p, trust_pickle=trust_pickle)
        return legacy_manifest(p, p.resolve().parent, meta, hash_shards=False)
    return Manifest.open(p)


class LazyPatchDataset(Dataset[torch.Tensor]):
    """Patches read lazily from ``.npy`` shards -> (C, H, W) float32 tensors in [0, 1].

    ``metadata_path``: ``manifest.json`` (or its directory), or the plan's ``metadata.npy`` with
    ``trust_pickle=True``. ``shuffle_seed`` fixes a permutation of the items (None keeps shard
    order), as in the plan. ``indices`` restricts the dataset to those global patch indices
    (used for train/val splits); ``max_samples`` keeps the first items. ``aug_seed`` and the
    epoch (:meth:`set_epoch`, or the epoch a :class:`trainset.loading.SampleBatch` carries)
    decide the augmentation; ``defer_augment`` leaves it to the device (batches from
    ``__getitems__`` carry their codes, and ``keep_batch`` yields ``(batch, codes)``). ``__getitems__`` returns the rows of a recycled batch buffer that
    stays intact while the next ``ring - 1`` batches of the process are read; ``__getitem__``
    returns a fresh tensor.
    """

    def __init__(
        self,
        metadata_path: str | os.PathLike[str],
        augment: bool = True,
        shuffle_seed: int | None = 42,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        max_samples: int | None = None,
        transform: Transform | None = None,
        trust_pickle: bool = False,
        aug_seed: int = 0,
        ring: int = 6,
        defer_augment: bool = False,
    ) -> None:
        if defer_augment and transform is not None:
            raise InputError(
                "a transform needs the augmentation done first; drop defer_augment or transform",
                key="defer_augment",
                expected="transform=None",
                found=transform,
            )
        self.manifest = open_patch_set(metadata_path, trust_pickle=trust_pickle)
        self.reader = self.manifest.open_reader()
        # The plan's attributes: [(path, patches)] per shard and their cumulative sum.
        counts = self.manifest.patch_counts()
        self.file_index = [(str(p), c) for p, c in zip(self.manifest.shard_paths(), counts)]
        self.cumsum = [0, *np.cumsum(counts).tolist()]
        total = self.manifest.num_patches
        ids = np.arange(total, dtype=np.int64) if indices is None else np.asarray(indices)
        if ids.size and (ids.min() < 0 or ids.max() >= total):
            raise InputError(
                "patch index out of range", key="indices", expected=f"[0, {total})", found=ids
            )
        if shuffle_seed is not None:
            ids = ids[np.random.default_rng(shuffle_seed).permutation(len(ids))]
        if max_samples is not None:
            ids = ids[: max(int(max_samples), 0)]
        self.patch_indices = ids.astype(np.int64)
        self.shuffle_idx = self.patch_indices
        self.total = len(ids)
        self.transform = transform
        self.channels = self.manifest.channels
        self.aug_seed = int(aug_seed)
        self.epoch = 0
        self._patches = ShardDataset(
            self.reader,
            augment=augment,
            seed=self.aug_seed,
            ring=ring,
            channels=self.channels,
            dtype=np.float32,
            defer=defer_augment,
        )

    def __len__(self) -> int:
        return self.total

    @property
    def augment(self) -> bool:
        """Whether items get a random flip/rotation."""
        return self._patches.augment

    @augment.setter
    def augment(self, value: bool) -> None:
        self._patches.augment = bool(value)

    def set_epoch(self, epoch: int) -> None:
        """Epoch whose augmentation plain index lists get (a SampleBatch brings its own)."""
        self.epoch = int(epoch)

    @property
    def preprocessing_params(self) -> dict[str, Any] | None:
        """``{"vmin", "vmax", "units"}`` (dB bounds) for the inverse transform, or None."""
        if self.manifest.vmin is None or self.manifest.vmax is None:
            return None
        return {
            "vmin": self.manifest.vmin,
            "vmax": self.manifest.vmax,
            "units": self.manifest.units,
        }

    def read_patches(self, patch_ids: np.ndarray) -> np.ndarray:
        """Global patch ids (B,) -> (B, C, H, W) float32, read in one sorted pass."""
        ids = np.asarray(patch_ids, dtype=np.int64)
        records = (ids[:, None] * self.channels + np.arange(self.channels)).ravel()
        raw = self.reader.read(records)
        h, w = self.reader.record_shape
        return raw.reshape(len(ids), self.channels, h, w).astype(np.float32, copy=False)

    def _patch_ids(self, positions: np.ndarray) -> np.ndarray:
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < -self.total or pos.max() >= self.total):
            raise IndexError(f"index out of range for {self.total} patches")
        return self.patch_indices[pos]

    def __getitem__(self, idx: int) -> torch.Tensor:
        ids = self._patch_ids(np.array([idx]))
        item = self._patches.read_fresh(ids, seed=self.aug_seed, epoch=self.epoch)[0]
        return self.transform(item) if self.transform is not None else item

    def __getitems__(
        self, indices: Sequence[int] | np.ndarray | SampleBatch
    ) -> BatchRows | list[torch.Tensor]:
        """A whole batch of dataset positions: the (C, H, W) rows of one recycled tensor."""
        if isinstance(indices, SampleBatch):
            ids = self._patch_ids(indices.indices)
            seed, epoch = indices.seed, indices.epoch
        else:
            ids = self._patch_ids(np.asarray(indices))
            seed, epoch = self.aug_seed, self.epoch
        if self.transform is not None:
            batch = self._patches.read_batch(ids, seed=seed, epoch=epoch)
            return [self.transform(item) for item in batch.unbind(0)]
        return self._patches.__getitems__(SampleBatch(ids, epoch, 0, seed))

    def _augment(self, patch: np.ndarray) -> np.ndarray:
        """The plan's augmentation of one (H, W) patch (a new array)."""
        return augment_patches(patch[None, None])[0, 0]

    def sources(self) -> np.ndarray:
        """(len,) source index of each item, in dataset order."""
        return self.manifest.source_of_patches()[self.patch_indices]
