"""Batches of record indices, shuffled by (seed, epoch), resumable mid-epoch.

The whole order of an epoch is a function of (seed, epoch) alone, so every thread or worker
count produces the same batches, and a run resumed at (epoch, batch) continues exactly where it
stopped. D4 augmentation codes are a function of (seed, epoch, record) (see
:func:`trainset.loading.augment.d4_codes`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import BatchSampler

from trainset.errors import InputError
from trainset.loading.augment import d4_codes


def checked_rank(rank: int, world_size: int) -> tuple[int, int]:
    """(rank, world_size) as ints, refusing a rank outside 0..world_size-1."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(
            "rank must lie in 0..world_size-1",
            key="rank",
            expected=f"0..{max(world_size, 1) - 1} of world_size >= 1",
            found=f"rank {rank} of {world_size}",
        )
    return int(rank), int(world_size)


def sampler_rank(sampler: Any) -> tuple[int, int]:
    """(rank, world_size) of a ``DistributedSampler`` (what Lightning hands a batch sampler it
    re-creates under DDP); anything without them is refused."""
    if not (hasattr(sampler, "rank") and hasattr(sampler, "num_replicas")):
        raise InputError(
            "sampler must say its rank and number of replicas",
            key="sampler",
            expected="a DistributedSampler (rank, num_replicas)",
            found=type(sampler).__name__,
        )
    return checked_rank(int(sampler.rank), int(sampler.num_replicas))


@dataclass(frozen=True)
class SampleBatch:
    """One batch request: record indices (B,) int64, in the order they appear in the batch."""

    indices: np.ndarray
    epoch: int
    number: int
    seed: int

    def __len__(self) -> int:
        return len(self.indices)

    def codes(self) -> np.ndarray:
        """D4 codes (B,) uint8 of this batch's records."""
        return d4_codes(self.seed, self.epoch, self.indices)


class EpochSampler(BatchSampler):
    """Yields :class:`SampleBatch` objects over records, ``batch_size`` at a time.

    ``records`` is a count n (records 0..n-1) or an array of the record indices to draw from
    (a train or validation subset).

    With ``shuffle`` the order of epoch ``e`` is a permutation drawn from (seed, e); without it
    records come in order. Iterating runs the current epoch from the resume point and then moves
    on to the next epoch, so ``for batch in sampler`` twice gives two different epochs.
    It also serves as ``batch_sampler`` of a ``torch.utils.data.DataLoader``.

    **Several processes (DDP).** ``rank`` and ``world_size`` shard an epoch by batches: every
    rank computes the same order and takes global batches ``rank, rank + world_size, ...``, so
    the ranks never share a batch. Every rank gets the same number of batches: with
    ``drop_last`` the last ``len % world_size`` global batches are dropped, otherwise the list
    wraps around to its start (a few batches are seen twice), as torch's ``DistributedSampler``
    pads. ``sampler`` (a ``DistributedSampler``) supplies ``rank`` and ``world_size`` instead:
    that is how Lightning hands over the process group when it re-creates a batch sampler under
    DDP (the class derives from ``BatchSampler`` so Lightning keeps every other argument).

    ``restart``: every pass starts at the first batch of the current epoch, whatever an earlier
    pass left (evaluation: a trainer's sanity check stops a validation pass after a few
    batches, and the next validation must still see every batch).
    """

    def __init__(
        self,
        records: int | np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        sampler: Any = None,
        restart: bool = False,
    ) -> None:
        if isinstance(records, (int, np.integer)):
            if records < 0:
                raise InputError("record count must be >= 0", expected=">= 0", found=records)
            self.records: np.ndarray | None = None
            self.n = int(records)
        else:
            arr = np.asarray(records)
            if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
                raise InputError(
                    "records must be a count or a 1-D integer array",
                    expected="int or (n,) int",
                    found=f"{arr.shape} {arr.dtype}",
                )
            if arr.size and int(arr.min()) < 0:
                raise InputError("record indices must be >= 0", found=int(arr.min()))
            self.records = arr.astype(np.int64)
            self.n = len(arr)
        if batch_size < 1:
            raise InputError("batch size must be >= 1", expected=">= 1", found=batch_size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.restart = bool(restart)
        self._epoch = int(epoch)
        self._next = 0
        self._cache: tuple[int, np.ndarray] | None = None
        if sampler is not None:
            rank, world_size = sampler_rank(sampler)
        self.rank, self.world_size = checked_rank(rank, world_size)
        self.sampler = sampler  # what torch's BatchSampler calls its source of indices

    @property
    def end(self) -> int:
        """One past the largest record index this sampler can give."""
        if self.records is None:
            return self.n
        return int(self.records.max()) + 1 if self.n else 0

    # -- order ---------------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """(n,) int64: the record order of ``epoch``."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        if self.shuffle:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
            order = rng.permutation(self.n).astype(np.int64)
        else:
            order = np.arange(self.n, dtype=np.int64)
        if self.records is not None:
            order = self.records[order]
        self._cache = (epoch, order)
        return order

    def _global_len(self) -> int:
        """Batches per epoch over all ranks."""
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def __len__(self) -> int:
        """Batches per epoch (of this rank)."""
        total = self._global_len()
        if self.world_size == 1 or total == 0:
            return total
        if self.drop_last:
            return total // self.world_size
        return -(-total // self.world_size)

    def span(self, number: int) -> tuple[int, int]:
        """(a, z): batch ``number`` of this rank is ``order(epoch)[a:z]``."""
        if not 0 <= number < len(self):
            raise IndexError(f"batch {number} out of range [0, {len(self)})")
        k = (self.rank + number * self.world_size) % self._global_len()
        a = k * self.batch_size
        return a, min(a + self.batch_size, self.n)

    def batch(self, epoch: int, number: int) -> SampleBatch:
        """Batch ``number`` of ``epoch`` (of this rank)."""
        a, z = self.span(number)
        return SampleBatch(self.order(epoch)[a:z], epoch, number, self.seed)

    # -- position ------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch the next iteration runs."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` from its first batch next."""
        self._epoch = int(epoch)
        self._next = 0

    def resume(self, epoch: int, batch: int) -> None:
        """Run ``epoch`` from batch number ``batch`` next (the batches already consumed)."""
        if not 0 <= batch <= len(self):
            raise InputError(
                "resume point outside the epoch", expected=f"0..{len(self)}", found=batch
            )
        self._epoch = int(epoch)
        self._next = int(batch)

    def state_dict(self) -> dict[str, Any]:
        """Where the next iteration starts, plus what shapes the order."""
        return {
            "seed": self.seed,
            "epoch": self._epoch,
            "batch": self._next,
            "n": self.n,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "world_size": self.world_size,
            "rank": self.rank,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`; refuses one from a differently shaped sampler."""
        defaults = {"world_size": 1, "rank": 0}  # states saved before sharding existed
        for key in ("seed", "n", "batch_size", "shuffle", "drop_last", "world_size", "rank"):
            if state.get(key, defaults.get(key)) != getattr(self, key):
                raise InputError(
                    "sampler state does not match this sampler",
                    key=key,
                    expected=getattr(self, key),
                    found=state.get(key),
                )
        self.resume(int(state["epoch"]), int(state["batch"]))

    def start(self) -> int:
        """The batch the next pass starts at: the resume point, or 0 with ``restart``."""
        return 0 if self.restart else self._next

    def __iter__(self) -> Generator[SampleBatch, None, None]:  # type: ignore[override]
        epoch = self._epoch
        start = self.start()
        for number in range(start, len(self)):
            self._next = number + 1
            yield self.batch(epoch, number)
        self._epoch = epoch + 1
        self._next = 0
