"""A threaded batch loader over a :class:`ShardReader`: reads into recycled buffers.

The threads, the ring and the hand-off are :class:`trainset.loading.ring.RingLoader`'s; this
module says what a batch of shard records is. Read plans of whole batches are worked out a
block of batches at a time, D4 codes once per epoch, and the byte views of every buffer row
once, so that what remains per record is one ``preadv``.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import numpy as np
import torch

from trainset.errors import InputError
from trainset.loading.augment import apply_d4, d4_codes
from trainset.loading.buffers import BatchBuffers, fill_batch, scratch_rows
from trainset.loading.ring import RingLoader, Run
from trainset.loading.sampler import EpochSampler
from trainset.loading.shards import ReadPlan, ShardReader

Augment = Literal["none", "cpu", "device", "deferred"]
AUGMENT_MODES: tuple[str, ...] = ("none", "cpu", "device", "deferred")

# Batches whose read plans are worked out together (see ShardReader.plan_rows).
PLAN_BLOCK = 32


class ThreadedLoader(RingLoader):
    """Iterate batches of (B, C, H, W) tensors read by ``threads`` threads.

    The sampler draws items; item i is records ``i*C .. i*C + C - 1`` of the reader
    (``channels`` = C, 1 by default: stacked bands are consecutive records). ``dtype``
    converts in the one copy (float16 shards to float32 batches); by default batches keep the
    shards' dtype. ``threads=None`` takes :func:`trainset.loading.ring.default_threads`.

    ``augment``: ``"none"``; ``"cpu"`` (D4 fused into the copy); ``"device"`` (batch moved to
    ``device`` and D4 applied there with one gather); ``"deferred"`` (yields ``(batch, codes)``
    and leaves D4 to the caller, e.g. a LightningModule's ``on_after_batch_transfer``). The
    code of item i in epoch e is ``d4_codes(sampler.seed, e, [i])``, the same for every channel.

    Up to ``prefetch`` batches are read ahead. A yielded CPU batch (and in ``"deferred"`` mode its
    codes) lives in a recycled buffer and stays intact while the next ``keep - 1`` batches are
    handed out; copy it to keep it longer.
    ``readahead`` batches beyond the ones being read are announced to the kernel with
    ``posix_fadvise(WILLNEED)`` (for data larger than memory). Iteration continues from
    :meth:`state_dict`'s position and moves to the next epoch when one ends.
    """

    def __init__(
        self,
        reader: ShardReader,
        sampler: EpochSampler,
        *,
        threads: int | None = 2,
        prefetch: int | None = None,
        keep: int = 2,
        augment: Augment = "none",
        device: torch.device | str | None = None,
        readahead: int = 0,
        pin: bool | None = None,
        channels: int = 1,
        dtype: np.dtype[Any] | type | str | None = None,
    ) -> None:
        super().__init__(sampler, threads=threads, prefetch=prefetch, keep=keep, device=device)
        if augment not in AUGMENT_MODES:
            raise InputError("unknown augmentation mode", expected=AUGMENT_MODES, found=augment)
        if channels < 1 or len(reader) % channels:
            raise InputError(
                "record count is not a multiple of the channels per item",
                key="channels",
                expected=f"a multiple of {channels}",
                found=len(reader),
            )
        items = len(reader) // channels
        if sampler.end > items:
            raise InputError(
                "sampler draws records the reader does not have",
                expected=f"indices < {items}",
                found=sampler.end - 1,
            )
        h, w = reader.record_shape
        if augment != "none" and h != w:
            raise InputError(
                "D4 augmentation needs square records", expected="H == W", found=(h, w)
            )
        self.reader = reader
        self.sampler: EpochSampler = sampler
        self.augment = augment
        self.readahead = int(readahead)
        self.channels = int(channels)
        self.dtype = np.dtype(dtype) if dtype is not None else reader.dtype
        self._pin = pin
        self._buffers: BatchBuffers | None = None
        self._views: list[list[memoryview]] = []
        self._codes: list[np.ndarray] = []
        self._codes_t: list[torch.Tensor] = []
        self._local = threading.local()

    # -- what a batch of records is --------------------------------------------------------------
    def _allocate(self) -> None:
        cuda = self.device is not None and self.device.type == "cuda"
        pin = self._pin if self._pin is not None else (cuda or None)
        self._buffers = BatchBuffers(
            self.slots,
            self.sampler.batch_size,
            self.reader.record_shape,
            self.dtype,
            channels=self.channels,
            pin=pin,
        )
        self._views = [self.reader.row_views(a) for a in self._buffers.arrays]
        self._codes = [np.zeros(self.sampler.batch_size, np.uint8) for _ in range(self.slots)]
        self._codes_t = [torch.from_numpy(c) for c in self._codes]

    def _records(self, items: np.ndarray) -> np.ndarray:
        """Record indices of ``items`` (..., B) -> (..., B*C), channels of an item together."""
        c = self.channels
        if c == 1:
            return items
        recs = items[..., None] * c + np.arange(c)
        return recs.reshape(*items.shape[:-1], items.shape[-1] * c)

    def _begin(self, run: Run) -> None:
        if self.augment != "none":  # by position in the epoch's order
            order = self.sampler.order(run.epoch)
            run.state["codes"] = d4_codes(self.sampler.seed, run.epoch, order)
        run.state["plans"] = {}

    def _fill(self, run: Run, j: int, slot: int) -> int:
        assert self._buffers is not None
        ahead = j + self.prefetch
        if self.readahead and ahead < run.end:
            for k in range(ahead, min(ahead + self.readahead, run.end)):
                self.reader.advise(self._records(self.sampler.batch(run.epoch, k).indices))
        batch = self.sampler.batch(run.epoch, j)
        out = self._buffers.arrays[slot]
        codes = self._codes[slot][: len(batch)]
        epoch_codes = run.state.get("codes")
        if epoch_codes is not None:
            a, z = self.sampler.span(j)
            codes[:] = epoch_codes[a:z]
        same = self.dtype == self.reader.dtype
        if self.augment == "cpu" or not same:
            fused = codes if self.augment == "cpu" else None
            if fused is not None and self.channels > 1:
                fused = np.repeat(fused, self.channels)
            scratch = getattr(self._local, "scratch", None)
            if scratch is None:  # one per thread: a few records read and transformed at once
                shape = (scratch_rows(self.reader), *self.reader.record_shape)
                scratch = self._local.scratch = np.empty(shape, self.reader.dtype)
            fill_batch(self.reader, self._records(batch.indices), out, fused, scratch)
        elif len(batch) == self.sampler.batch_size:
            self.reader.read_planned(self._plan(run, j), out, views=self._views[slot])
        else:
            recs = self._records(batch.indices)
            fill_batch(self.reader, recs, out, views=self._views[slot])
        return len(batch)

    def _plan(self, run: Run, j: int) -> ReadPlan:
        """The read plan of full batch ``j``, from its block's plans (worked out on first use)."""
        block = j // PLAN_BLOCK
        plans: list[ReadPlan | None]
        with run.lock:
            cache: dict[int, list[ReadPlan | None]] = run.state["plans"]
            cached = cache.get(block)
            if cached is not None:
                plans = cached
            else:
                first = block * PLAN_BLOCK
                size = self.sampler.batch_size
                spans = [self.sampler.span(k) for k in range(first, first + PLAN_BLOCK)
                         if k < len(self.sampler)]  # fmt: skip
                full = [k for k, (a, z) in enumerate(spans) if z - a == size]
                starts = np.array([spans[k][0] for k in full], dtype=np.int64)
                order = self.sampler.order(run.epoch)
                rows = self._records(order[starts[:, None] + np.arange(size)])
                plans = [None] * len(spans)  # a short batch is read without a block plan
                for k, made in zip(full, self.reader.plan_rows(rows)):
                    plans[k] = made
                for old in [b for b in cache if b < block - 1]:
                    del cache[old]
                cache[block] = plans
        plan = plans[j - block * PLAN_BLOCK]
        assert plan is not None
        return plan

    def _deliver(self, slot: int, n: int) -> Any:
        assert self._buffers is not None
        full = n == self.sampler.batch_size
        tensor = self._buffers.tensors[slot] if full else self._buffers.tensors[slot][:n]
        codes = self._codes_t[slot] if full else self._codes_t[slot][:n]
        tensor = self._to_device(tensor, slot)
        if self.augment == "device":
            return apply_d4(tensor, codes)
        if self.augment == "deferred":
            return tensor, codes
        return tensor
