"""A map-style dataset over shards for users who keep ``torch.utils.data.DataLoader``.

``__getitems__`` (which torch's DataLoader calls with a whole batch of indices) reads the batch
in one sorted pass into a recycled buffer of this process; :func:`keep_batch` as ``collate_fn``
hands that buffer over without the default collate's copy (the default collate still works: it
stacks the rows into a fresh tensor). Inside a DataLoader worker the
buffers live in shared memory, so the batch crosses to the main process without a copy either.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from trainset.errors import InputError
from trainset.loading.augment import d4_codes
from trainset.loading.buffers import BatchBuffers, fill_batch, scratch_rows
from trainset.loading.sampler import EpochSampler, SampleBatch
from trainset.loading.shards import ShardReader


class BatchRows(list[torch.Tensor]):
    """The (C, H, W) rows of one batch tensor, which stays reachable as :attr:`batch`.

    A list, so torch's default collate still works (it stacks the rows into a fresh tensor);
    :func:`keep_batch` returns :attr:`batch` itself instead. ``codes`` (B,) uint8 are D4 codes
    left for the device to apply (:func:`trainset.loading.apply_d4`), or None.
    """

    def __init__(self, batch: torch.Tensor, codes: torch.Tensor | None = None) -> None:
        super().__init__(batch.unbind(0))
        self.batch = batch
        self.codes = codes


def keep_batch(
    rows: BatchRows | list[torch.Tensor],
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``collate_fn`` for :class:`ShardDataset`: the recycled batch tensor, without a copy
    (``(batch, codes)`` when the dataset leaves D4 to the device)."""
    if isinstance(rows, BatchRows):
        return rows.batch if rows.codes is None else (rows.batch, rows.codes)
    return torch.stack(list(rows))


def copy_batch(
    rows: BatchRows | list[torch.Tensor],
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``collate_fn`` like :func:`keep_batch`, but the batch is a fresh copy (safe to keep)."""
    if isinstance(rows, BatchRows):
        batch = rows.batch.clone()
        return batch if rows.codes is None else (batch, rows.codes.clone())
    return torch.stack(list(rows))


class ShardDataset(Dataset[torch.Tensor]):
    """Items of a :class:`ShardReader` as (C, H, W) tensors, batched reads as (B, C, H, W).

    Item i is records ``i*C .. i*C + C - 1`` (``channels`` = C, 1 by default: stacked bands
    are consecutive records). ``dtype`` converts in the one copy (e.g. float16 shards to
    float32 batches). ``augment`` applies D4 codes drawn from (seed, epoch, item) fused into
    the copy; a :class:`SampleBatch` request brings its own epoch (and its sampler's seed), a
    plain index list uses :attr:`epoch` (:meth:`set_epoch`). ``ring`` buffers per process are
    recycled: a batch from ``__getitems__`` stays intact while the next ``ring - 1`` batches of
    the same process are read (a DataLoader keeps ``prefetch_factor`` batches per worker in
    flight, so keep ``ring >= prefetch_factor + 2``). ``__getitem__`` returns a fresh tensor.
    ``defer`` leaves D4 to the device: batches come unaugmented with their codes
    (:class:`BatchRows` ``.codes``; ``keep_batch`` yields ``(batch, codes)``).
    """

    def __init__(
        self,
        reader: ShardReader,
        *,
        augment: bool = False,
        seed: int = 0,
        ring: int = 6,
        channels: int = 1,
        dtype: np.dtype[Any] | type | None = None,
        defer: bool = False,
    ) -> None:
        h, w = reader.record_shape
        if augment and h != w:
            raise InputError(
                "D4 augmentation needs square records", expected="H == W", found=(h, w)
            )
        if ring < 1:
            raise InputError("ring must hold at least one buffer", expected=">= 1", found=ring)
        if channels < 1 or len(reader) % channels:
            raise InputError(
                "record count is not a multiple of the channels per item",
                expected=f"a multiple of {channels}",
                found=len(reader),
            )
        self.reader = reader
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0
        self.ring = int(ring)
        self.channels = int(channels)
        self.dtype = np.dtype(dtype) if dtype is not None else reader.dtype
        self.defer = bool(defer)
        self._buffers: BatchBuffers | None = None
        self._pid = -1
        self._turn = 0
        self._scratch: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.reader) // self.channels

    def set_epoch(self, epoch: int) -> None:
        """Epoch whose augmentation codes plain index lists get."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_buffers=None, _pid=-1, _turn=0, _scratch=None)
        return state

    def _plan(
        self, items: np.ndarray, seed: int, epoch: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Record indices (B*C,) of ``items`` (B,) and their D4 codes (one per item, repeated)."""
        c = self.channels
        records = (items[:, None] * c + np.arange(c)).ravel() if c > 1 else items
        if not self.augment:
            return records, None
        codes = d4_codes(seed, epoch, items)
        return records, (np.repeat(codes, c) if c > 1 else codes)

    def _slot(self, batch: int) -> int:
        """Index of the next recycled buffer of this process, (re)allocated to hold ``batch``."""
        pid = os.getpid()
        buffers = self._buffers
        if buffers is None or self._pid != pid or buffers.batch_size < batch:
            in_worker = get_worker_info() is not None
            self._buffers = BatchBuffers(
                self.ring,
                batch,
                self.reader.record_shape,
                self.dtype,
                channels=self.channels,
                pin=False if in_worker else None,
                shared=in_worker,
            )
            self._pid = pid
            self._turn = 0
        slot = self._turn % self.ring
        self._turn += 1
        return slot

    def _check(self, items: np.ndarray) -> None:
        n = len(self)
        if items.size and (int(items.min()) < 0 or int(items.max()) >= n):
            bad = int(items[(items < 0) | (items >= n)][0])
            raise IndexError(f"item {bad} out of range [0, {n})")

    def read_batch(
        self, items: np.ndarray, *, seed: int, epoch: int, augment: bool = True
    ) -> torch.Tensor:
        """Items (B,) -> (B, C, H, W) in this process's next recycled buffer (D4 applied when
        the dataset augments, unless ``augment`` is false)."""
        idx = np.asarray(items, dtype=np.int64)
        self._check(idx)
        records, codes = self._plan(idx, seed, epoch)
        if not augment:
            codes = None
        slot = self._slot(len(idx))
        assert self._buffers is not None
        out = self._buffers.arrays[slot]
        staged = codes is not None or self.dtype != self.reader.dtype
        if staged and self._scratch is None:
            shape = (scratch_rows(self.reader), *self.reader.record_shape)
            self._scratch = np.empty(shape, self.reader.dtype)
        fill_batch(self.reader, records, out, codes, self._scratch)
        return self._buffers.tensors[slot][: len(idx)]

    def read_fresh(self, items: np.ndarray, *, seed: int, epoch: int) -> torch.Tensor:
        """Items (B,) -> a new (B, C, H, W) tensor."""
        idx = np.asarray(items, dtype=np.int64)
        self._check(idx)
        records, codes = self._plan(idx, seed, epoch)
        out = np.empty((len(records), *self.reader.record_shape), self.dtype)
        fill_batch(self.reader, records, out, codes)
        return torch.from_numpy(out.reshape(len(idx), self.channels, *self.reader.record_shape))

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.read_fresh(np.array([int(index)]), seed=self.seed, epoch=self.epoch)[0]

    def __getitems__(self, request: SampleBatch | Sequence[int] | np.ndarray) -> BatchRows:
        """Read a whole batch into a recycled (B, C, H, W) buffer (see the class notes)."""
        if isinstance(request, SampleBatch):
            items, seed, epoch = np.asarray(request.indices), request.seed, request.epoch
        else:
            items, seed, epoch = np.asarray(request), self.seed, self.epoch
        if self.augment and self.defer:
            batch = self.read_batch(items, seed=seed, epoch=epoch, augment=False)
            return BatchRows(batch, torch.from_numpy(d4_codes(seed, epoch, items)))
        return BatchRows(self.read_batch(items, seed=seed, epoch=epoch))


def shard_dataloader(
    dataset: ShardDataset,
    sampler: EpochSampler,
    *,
    num_workers: int = 0,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = None,
    persistent_workers: bool = False,
) -> DataLoader[torch.Tensor]:
    """A ``DataLoader`` that hands :class:`ShardDataset` whole batches (``batch_sampler``) and
    keeps its recycled buffers (``collate_fn=keep_batch``)."""
    if sampler.end > len(dataset):
        raise InputError(
            "sampler draws records the dataset does not have",
            expected=f"indices < {len(dataset)}",
            found=sampler.end - 1,
        )
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["prefetch_factor"] = prefetch_factor or 2
        kwargs["persistent_workers"] = persistent_workers
    return DataLoader(
        dataset,
        batch_sampler=cast("Iterable[list[Any]]", sampler),
        collate_fn=cast("Callable[[list[Any]], Any]", keep_batch),
        num_workers=num_workers,
        pin_memory=pin,
        **kwargs,
    )
