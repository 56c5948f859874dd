"""A threaded batch loader over a :class:`ShardReader`: reads into recycled buffers.

Threads suit this work: ``preadv`` and numpy copies release the GIL, and threads share one set
of file descriptors and buffers. Batch j is filled by whichever thread takes it, into buffer
``j % ring``; the batches come out in order and are identical for any thread count.

The hand-off costs as little as Python allows, because on a small machine the consuming thread
competes with the readers for the cores: the consumer hands out batch numbers through a
``SimpleQueue`` only once their buffer is free (so a reader never waits on anything but that
queue), and each buffer has a plain lock that its reader releases when the batch is in and the
consumer acquires to take it (one wake-up per batch, no condition variable). D4 codes of a
whole epoch are computed at once, and the byte views of every buffer row are built once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch

from trainset.errors import InputError
from trainset.loading.augment import apply_d4, d4_codes
from trainset.loading.buffers import BatchBuffers, fill_batch, scratch_rows
from trainset.loading.sampler import EpochSampler
from trainset.loading.shards import ReadPlan, ShardReader

Augment = Literal["none", "cpu", "device", "deferred"]
AUGMENT_MODES: tuple[str, ...] = ("none", "cpu", "device", "deferred")


class _Run:
    """Shared state of one pass over an epoch with a ring of ``slots`` buffers."""

    def __init__(self, epoch: int, end: int, slots: int, codes: np.ndarray | None) -> None:
        self.epoch = epoch
        self.end = end
        self.codes = codes
        self.jobs: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        # filled[s] is held until the batch being read into slot s is complete.
        self.filled = [threading.Lock() for _ in range(slots)]
        for lock in self.filled:
            lock.acquire()
        self.errors: list[BaseException | None] = [None] * slots
        self.sizes = [0] * slots
        self.stop = False
        # Read plans of whole batches, worked out a block of batches at a time.
        self.plans: dict[int, list[ReadPlan | None]] = {}
        self.plans_lock = threading.Lock()


# Batches whose read plans are worked out together (see ShardReader.plan_rows).
PLAN_BLOCK = 32


class ThreadedLoader:
    """Iterate batches of (B, 1, H, W) tensors read by ``threads`` threads.

    ``augment``: ``"none"``; ``"cpu"`` (D4 fused into the copy); ``"device"`` (batch moved to
    ``device`` and D4 applied there with one gather); ``"deferred"`` (yields ``(batch, codes)``
    and leaves D4 to the caller, e.g. a LightningModule's ``on_after_batch_transfer``).

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
        threads: int = 2,
        prefetch: int | None = None,
        keep: int = 2,
        augment: Augment = "none",
        device: torch.device | str | None = None,
        readahead: int = 0,
        pin: bool | None = None,
    ) -> None:
        if augment not in AUGMENT_MODES:
            raise InputError("unknown augmentation mode", expected=AUGMENT_MODES, found=augment)
        if threads < 1:
            raise InputError("threads must be >= 1", expected=">= 1", found=threads)
        if keep < 1:
            raise InputError("keep must be >= 1", expected=">= 1", found=keep)
        if sampler.end > len(reader):
            raise InputError(
                "sampler draws records the reader does not have",
                expected=f"indices < {len(reader)}",
                found=sampler.end - 1,
            )
        h, w = reader.record_shape
        if augment != "none" and h != w:
            raise InputError(
                "D4 augmentation needs square records", expected="H == W", found=(h, w)
            )
        self.reader = reader
        self.sampler = sampler
        self.threads = int(threads)
        self.prefetch = max(1, int(prefetch if prefetch is not None else 2 * threads))
        self.keep = int(keep)
        self.augment = augment
        self.device = torch.device(device) if device is not None else None
        self.readahead = int(readahead)
        self._pin = pin
        self._buffers: BatchBuffers | None = None
        self._views: list[list[memoryview]] = []
        self._codes: list[np.ndarray] = []
        self._codes_t: list[torch.Tensor] = []
        self._events: list[Any] = []

    def __len__(self) -> int:
        return len(self.sampler)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and number of batches consumed (resume with :meth:`load_state_dict`)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.sampler.load_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` from its first batch next."""
        self.sampler.set_epoch(epoch)

    # -- internals -----------------------------------------------------------------------------
    def _ring(self) -> BatchBuffers:
        if self._buffers is None:
            cuda = self.device is not None and self.device.type == "cuda"
            pin = self._pin if self._pin is not None else (cuda or None)
            self._buffers = BatchBuffers(
                self.prefetch + self.keep,
                self.sampler.batch_size,
                self.reader.record_shape,
                self.reader.dtype,
                pin=pin,
            )
            self._views = [self.reader.row_views(a) for a in self._buffers.arrays]
            self._codes = [
                np.zeros(self.sampler.batch_size, np.uint8) for _ in self._buffers.arrays
            ]
            self._codes_t = [torch.from_numpy(c) for c in self._codes]
            self._events = [None] * len(self._buffers)
        return self._buffers

    def _work(self, run: _Run, ring: BatchBuffers) -> None:
        scratch: np.ndarray | None = None
        fused = self.augment == "cpu"
        size = self.sampler.batch_size
        while True:
            j = run.jobs.get()
            if j is None or run.stop:
                return
            slot = j % len(ring)
            try:
                ahead = j + self.prefetch
                if self.readahead and ahead < run.end:
                    for k in range(ahead, min(ahead + self.readahead, run.end)):
                        self.reader.advise(self.sampler.batch(run.epoch, k).indices)
                batch = self.sampler.batch(run.epoch, j)
                run.sizes[slot] = len(batch)
                event = self._events[slot]
                if event is not None:
                    event.synchronize()
                out = ring.arrays[slot]
                codes = self._codes[slot][: len(batch)]
                if run.codes is not None:
                    a, z = self.sampler.span(j)
                    codes[:] = run.codes[a:z]
                if fused:
                    if scratch is None:
                        shape = (scratch_rows(self.reader), *self.reader.record_shape)
                        scratch = np.empty(shape, self.reader.dtype)
                    fill_batch(self.reader, batch.indices, out, codes, scratch)
                elif len(batch) == size:
                    self.reader.read_planned(self._plan(run, j), out, views=self._views[slot])
                else:
                    fill_batch(self.reader, batch.indices, out, views=self._views[slot])
            except BaseException as exc:
                run.errors[slot] = exc
            run.filled[slot].release()

    def _plan(self, run: _Run, j: int) -> ReadPlan:
        """The read plan of full batch ``j``, from its block's plans (worked out on first use)."""
        block = j // PLAN_BLOCK
        plans: list[ReadPlan | None]
        with run.plans_lock:
            cached = run.plans.get(block)
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
                rows = order[starts[:, None] + np.arange(size)]
                plans = [None] * len(spans)  # a short batch is read without a block plan
                for k, made in zip(full, self.reader.plan_rows(rows)):
                    plans[k] = made
                run.plans = {b: p for b, p in run.plans.items() if b >= block - 1}
                run.plans[block] = plans
        plan = plans[j - block * PLAN_BLOCK]
        assert plan is not None
        return plan

    def _deliver(self, slot: int, n: int) -> Any:
        ring = self._ring()
        full = n == self.sampler.batch_size
        tensor = ring.tensors[slot] if full else ring.tensors[slot][:n]
        codes = self._codes_t[slot] if full else self._codes_t[slot][:n]
        if self.device is not None and self.device != tensor.device:
            moved = tensor.to(self.device, non_blocking=tensor.is_pinned())
            if self.device.type == "cuda":
                event = torch.cuda.Event()
                event.record()
                self._events[slot] = event
            tensor = moved
        if self.augment == "device":
            return apply_d4(tensor, codes)
        if self.augment == "deferred":
            return tensor, codes
        return tensor

    def __iter__(self) -> Iterator[Any]:
        ring = self._ring()
        epoch = self.sampler.epoch
        start = int(self.sampler.state_dict()["batch"])
        end = len(self.sampler)
        codes = None
        if self.augment != "none":
            codes = d4_codes(self.sampler.seed, epoch, self.sampler.order(epoch))  # by position
        run = _Run(epoch, end, len(ring), codes)
        # A batch number is queued only when its buffer is free: batch j + prefetch reuses the
        # buffer of batch j - keep, handed out keep batches before batch j.
        for j in range(start, min(end, start + self.prefetch)):
            run.jobs.put(j)
        workers = [
            threading.Thread(target=self._work, args=(run, ring), daemon=True)
            for _ in range(self.threads)
        ]
        for t in workers:
            t.start()
        try:
            for j in range(start, end):
                slot = j % len(ring)
                run.filled[slot].acquire()
                error = run.errors[slot]
                if error is not None:
                    raise error
                if j + self.prefetch < end:
                    run.jobs.put(j + self.prefetch)
                self.sampler.resume(epoch, j + 1)
                yield self._deliver(slot, run.sizes[slot])
            self.sampler.set_epoch(epoch + 1)
        finally:
            run.stop = True
            for _ in workers:
                run.jobs.put(None)
            for t in workers:
                t.join()
