"""A threaded batch loader over a :class:`ShardReader`: reads into recycled buffers.

Threads suit this work: ``preadv`` and numpy copies release the GIL, and threads share one set
of file descriptors and buffers. Batch j is filled by whichever thread takes it, into buffer
``j % ring``; the batches come out in order and are identical for any thread count.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch

from trainset.errors import InputError
from trainset.loading.augment import apply_d4
from trainset.loading.buffers import BatchBuffers, fill_batch, scratch_rows
from trainset.loading.sampler import EpochSampler
from trainset.loading.shards import ShardReader

Augment = Literal["none", "cpu", "device", "deferred"]
AUGMENT_MODES: tuple[str, ...] = ("none", "cpu", "device", "deferred")


class _Run:
    """Shared state of one pass over an epoch."""

    def __init__(self, epoch: int, start: int, end: int) -> None:
        self.epoch = epoch
        self.end = end
        self.next_take = start
        self.handed = start
        self.done: dict[int, tuple[int, int, np.ndarray | None]] = {}
        self.error: BaseException | None = None
        self.stop = False
        self.cond = threading.Condition()


class ThreadedLoader:
    """Iterate batches of (B, 1, H, W) tensors read by ``threads`` threads.

    ``augment``: ``"none"``; ``"cpu"`` (D4 fused into the copy); ``"device"`` (batch moved to
    ``device`` and D4 applied there with one gather); ``"deferred"`` (yields ``(batch, codes)``
    and leaves D4 to the caller, e.g. a LightningModule's ``on_after_batch_transfer``).

    Up to ``prefetch`` batches are read ahead. A yielded CPU batch lives in a recycled buffer and
    stays intact while the next ``keep - 1`` batches are handed out; copy it to keep it longer.
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
            self._events = [None] * len(self._buffers)
        return self._buffers

    def _work(self, run: _Run, ring: BatchBuffers) -> None:
        scratch: np.ndarray | None = None
        fused = self.augment == "cpu"
        want_codes = self.augment != "none"
        while True:
            with run.cond:
                while (
                    not run.stop
                    and run.next_take < run.end
                    and run.next_take >= run.handed + self.prefetch
                ):
                    run.cond.wait()
                if run.stop or run.next_take >= run.end:
                    return
                j = run.next_take
                run.next_take += 1
            try:
                ahead = j + self.prefetch
                if self.readahead and ahead < run.end:
                    for k in range(ahead, min(ahead + self.readahead, run.end)):
                        self.reader.advise(self.sampler.batch(run.epoch, k).indices)
                batch = self.sampler.batch(run.epoch, j)
                slot = j % len(ring)
                event = self._events[slot]
                if event is not None:
                    event.synchronize()
                codes = batch.codes() if want_codes else None
                out = ring.arrays[slot]
                if fused:
                    assert codes is not None
                    if scratch is None:
                        shape = (scratch_rows(self.reader), *self.reader.record_shape)
                        scratch = np.empty(shape, self.reader.dtype)
                    fill_batch(self.reader, batch.indices, out, codes, scratch)
                else:
                    fill_batch(self.reader, batch.indices, out)
            except BaseException as exc:
                with run.cond:
                    run.error = exc
                    run.cond.notify_all()
                return
            with run.cond:
                run.done[j] = (slot, len(batch), codes)
                run.cond.notify_all()

    def _deliver(self, tensor: torch.Tensor, slot: int, codes: np.ndarray | None) -> Any:
        if self.device is not None and self.device != tensor.device:
            moved = tensor.to(self.device, non_blocking=tensor.is_pinned())
            if self.device.type == "cuda":
                event = torch.cuda.Event()
                event.record()
                self._events[slot] = event
            tensor = moved
        if self.augment == "device":
            assert codes is not None
            return apply_d4(tensor, codes)
        if self.augment == "deferred":
            return tensor, torch.from_numpy(codes if codes is not None else np.zeros(0, np.uint8))
        return tensor

    def __iter__(self) -> Iterator[Any]:
        ring = self._ring()
        epoch = self.sampler.epoch
        start = int(self.sampler.state_dict()["batch"])
        run = _Run(epoch, start, len(self.sampler))
        workers = [
            threading.Thread(target=self._work, args=(run, ring), daemon=True)
            for _ in range(self.threads)
        ]
        for t in workers:
            t.start()
        try:
            for j in range(start, run.end):
                with run.cond:
                    while j not in run.done and run.error is None:
                        run.cond.wait()
                    if run.error is not None:
                        raise run.error
                    slot, n, codes = run.done.pop(j)
                    run.handed = j + 1
                    run.cond.notify_all()
                self.sampler.resume(epoch, j + 1)
                yield self._deliver(ring.tensors[slot][:n], slot, codes)
            self.sampler.set_epoch(epoch + 1)
        finally:
            with run.cond:
                run.stop = True
                run.cond.notify_all()
            for t in workers:
                t.join()
