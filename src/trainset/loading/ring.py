"""The engine of the threaded loaders: threads fill a ring of recycled batch buffers in order.

Threads suit this work: ``preadv``, numpy copies and dtype conversions release the GIL, and
threads share one set of file descriptors and buffers. Batch j is filled by whichever thread
takes it, into buffer ``j % ring``; the batches come out in order and are identical for any
thread count.

The hand-off costs as little as Python allows, because on a small machine the consuming thread
competes with the readers for the cores: the consumer hands out batch numbers through a
``SimpleQueue`` only once their buffer is free (so a reader never waits on anything but that
queue), and each buffer has a plain lock that its reader releases when the batch is in and the
consumer acquires to take it (one wake-up per batch, no condition variable).

A subclass says what a batch is: :meth:`RingLoader._allocate` makes the buffers,
:meth:`RingLoader._fill` fills one, :meth:`RingLoader._deliver` hands it out.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Generator
from typing import Any, Protocol

import torch

from trainset.errors import InputError

# Reading threads per process when the caller does not say: enough to saturate page-cache reads
# on the machines measured (docs/loading.md), few enough not to crowd out the training loop.
MAX_DEFAULT_THREADS = 8


def default_threads() -> int:
    """Reading threads for this process: the CPUs it may use, shared among the processes of
    this node (``LOCAL_WORLD_SIZE`` under torchrun and Lightning), between 2 and 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(2, min(MAX_DEFAULT_THREADS, cpus // local))


class BatchPlan(Protocol):
    """What a ring loader needs from its sampler (:class:`EpochSampler` is one)."""

    batch_size: int

    def __len__(self) -> int: ...

    @property
    def epoch(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def resume(self, epoch: int, batch: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def start(self) -> int: ...


class Run:
    """Shared state of one pass over an epoch with a ring of ``slots`` buffers."""

    def __init__(self, epoch: int, end: int, slots: int) -> None:
        self.epoch = epoch
        self.end = end
        self.jobs: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        # filled[s] is held until the batch being read into slot s is complete.
        self.filled = [threading.Lock() for _ in range(slots)]
        for lock in self.filled:
            lock.acquire()
        self.errors: list[BaseException | None] = [None] * slots
        self.sizes = [0] * slots
        self.stop = False
        self.workers: list[threading.Thread] = []
        # Whatever the subclass works out once per pass (D4 codes, read plans).
        self.state: dict[str, Any] = {}
        self.lock = threading.Lock()

    def halt(self) -> None:
        """Stop the reading threads of this pass and wait for them (idempotent)."""
        if not self.stop:
            self.stop = True
            for _ in self.workers:
                self.jobs.put(None)
        for t in self.workers:
            if t is not threading.current_thread():
                t.join()


class RingLoader:
    """Batches of ``sampler`` filled by ``threads`` threads into ``prefetch + keep`` recycled
    buffers, handed out in order.

    Up to ``prefetch`` batches are read ahead. A yielded batch lives in a recycled buffer and
    stays intact while the next ``keep - 1`` batches are handed out; copy it to keep it longer.
    Iteration continues from :meth:`state_dict`'s position and moves to the next epoch when one
    ends. One pass at a time: starting a new iteration ends the threads of the previous one,
    whose iterator then stops. ``device``: batches are moved there (from pinned buffers with
    CUDA); a buffer is refilled only after its copy to the device has completed.
    """

    def __init__(
        self,
        sampler: BatchPlan,
        *,
        threads: int | None = None,
        prefetch: int | None = None,
        keep: int = 2,
        device: torch.device | str | None = None,
    ) -> None:
        threads = default_threads() if threads is None else threads
        if threads < 1:
            raise InputError("threads must be >= 1", key="threads", expected=">= 1", found=threads)
        if keep < 1:
            raise InputError("keep must be >= 1", key="keep", expected=">= 1", found=keep)
        self.sampler = sampler
        self.threads = int(threads)
        self.prefetch = max(1, int(prefetch if prefetch is not None else 2 * threads))
        self.keep = int(keep)
        self.device = torch.device(device) if device is not None else None
        self.slots = self.prefetch + self.keep
        self._allocated = False
        self._events: list[Any] = [None] * self.slots
        self._live: Run | None = None

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def batch_size(self) -> int:
        """Items per full batch."""
        return int(self.sampler.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and number of batches consumed (resume with :meth:`load_state_dict`)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.sampler.load_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` from its first batch next."""
        self.sampler.set_epoch(epoch)

    # -- what a subclass provides ------------------------------------------------------------
    def _allocate(self) -> None:
        """Make ``self.slots`` batch buffers (called once, before the first pass)."""
        raise TypeError(f"{type(self).__name__} does not say how to allocate its buffers")

    def _begin(self, run: Run) -> None:
        """Work out what a whole pass needs (in ``run.state``) before the threads start."""

    def _fill(self, run: Run, j: int, slot: int) -> int:
        """Fill buffer ``slot`` with batch ``j`` of ``run.epoch``; returns its number of items."""
        raise TypeError(f"{type(self).__name__} does not say how to fill a batch")

    def _deliver(self, slot: int, n: int) -> Any:
        """The batch of ``n`` items in buffer ``slot``, as the consumer gets it."""
        raise TypeError(f"{type(self).__name__} does not say how to deliver a batch")

    # -- shared by subclasses --------------------------------------------------------------------
    def _to_device(self, tensor: torch.Tensor, slot: int) -> torch.Tensor:
        """``tensor`` (a view of buffer ``slot``) on :attr:`device`; with CUDA an event marks
        the copy, and the buffer is not refilled before it has completed."""
        if self.device is None or self.device == tensor.device:
            return tensor
        moved = tensor.to(self.device, non_blocking=tensor.is_pinned())
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
            self._events[slot] = event
        return moved

    # -- the engine ------------------------------------------------------------------------------
    def _work(self, run: Run) -> None:
        while True:
            j = run.jobs.get()
            if j is None or run.stop:
                return
            slot = j % self.slots
            try:
                event = self._events[slot]
                if event is not None:
                    event.synchronize()
                    self._events[slot] = None
                run.sizes[slot] = self._fill(run, j, slot)
            except BaseException as exc:
                run.errors[slot] = exc
            run.filled[slot].release()

    def __iter__(self) -> Generator[Any, None, None]:
        # A generator: nothing happens before the first batch is asked for, so a trainer may
        # still move the position (load_state_dict, set_epoch) after calling iter().
        if self._live is not None:
            self._live.halt()  # one pass at a time: the ring is shared
        if not self._allocated:
            self._allocate()
            self._allocated = True
        epoch = self.sampler.epoch
        start = self.sampler.start()
        end = len(self.sampler)
        run = Run(epoch, end, self.slots)
        self._begin(run)
        # A batch number is queued only when its buffer is free: batch j + prefetch reuses the
        # buffer of batch j - keep, handed out keep batches before batch j.
        for j in range(start, min(end, start + self.prefetch)):
            run.jobs.put(j)
        run.workers = [
            threading.Thread(target=self._work, args=(run,), daemon=True)
            for _ in range(self.threads)
        ]
        for t in run.workers:
            t.start()
        self._live = run
        try:
            for j in range(start, end):
                slot = j % self.slots
                if run.stop:
                    return  # a newer pass took over the ring
                run.filled[slot].acquire()
                error = run.errors[slot]
                if error is not None:
                    raise error
                if j + self.prefetch < end:
                    run.jobs.put(j + self.prefetch)
                self.sampler.resume(epoch, j + 1)
                yield self._deliver(slot, run.sizes[slot])
                if run.stop:
                    return
            self.sampler.set_epoch(epoch + 1)
        finally:
            run.halt()
            if self._live is run:
                self._live = None
