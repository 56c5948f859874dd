"""A ring loader as a trainer expects a ``DataLoader``: what the datamodules return.

Lightning accepts any iterable with a length as a dataloader. Per epoch it calls
``loader.sampler.set_epoch(epoch)`` and then iterates; it saves ``loader.state_dict()`` in a
checkpoint and hands it back through ``load_state_dict`` before a mid-epoch resume (and before
``set_epoch``, so ``set_epoch`` must not rewind a loader that is already inside that epoch).
Validation runs twice in the first epoch (the sanity check stops after a few batches), so an
evaluation loader's sampler restarts every pass (``EpochSampler(restart=True)``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import torch

from trainset.loading.ring import RingLoader

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule as DataModuleBase
else:
    try:
        from lightning.pytorch import LightningDataModule as DataModuleBase
    except ImportError:  # lightning is optional: a datamodule still works without it
        DataModuleBase = object


def process_group() -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batch_device(device: torch.device | str | None, trainer: Any) -> torch.device | None:
    """Where a datamodule's threaded loaders put batches: ``device`` when given, else the
    CUDA device of the Lightning ``trainer`` it is attached to (``trainer.strategy.root_device``:
    each DDP process's own GPU), else None (the CPU)."""
    if device is not None:
        return torch.device(device)
    root = getattr(getattr(trainer, "strategy", None), "root_device", None)
    return root if isinstance(root, torch.device) and root.type == "cuda" else None


Context = tuple[int, int, "torch.device | None"]  # (rank, world size, batch device)


class LoaderCache:
    """A datamodule's loaders, one per split, reused while the process group and the batch
    device stay what they were (a loader built before ``Trainer.fit`` attached the datamodule,
    or before DDP initialised its group, is rebuilt)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Context, Any]] = {}

    @staticmethod
    def context(device: torch.device | str | None, trainer: Any) -> Context:
        """(rank, world size, batch device) for a loader built now."""
        rank, world = process_group()
        return rank, world, batch_device(device, trainer)

    def get(self, split: str, context: Context) -> Any:
        """The loader of ``split`` built in ``context``, or None."""
        entry = self._entries.get(split)
        return entry[1] if entry is not None and entry[0] == context else None

    def put(self, split: str, context: Context, loader: Any) -> Any:
        """Keep ``loader`` for ``split`` in ``context``; returns it."""
        self._entries[split] = (context, loader)
        return loader


class EpochEntry:
    """``loader.sampler`` of a :class:`TrainerLoader`: the object whose ``set_epoch`` a trainer
    calls when an epoch begins."""

    def __init__(self, loader: RingLoader) -> None:
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` next; a loader already inside ``epoch`` (a resume) keeps its place."""
        if int(epoch) != self.loader.sampler.epoch:
            self.loader.set_epoch(epoch)


def fresh_copy(batch: Any) -> Any:
    """``batch`` with every tensor cloned (tuples, lists and dicts walked; the rest kept)."""
    if isinstance(batch, torch.Tensor):
        return batch.clone()
    if isinstance(batch, tuple):
        return tuple(fresh_copy(b) for b in batch)
    if isinstance(batch, list):
        return [fresh_copy(b) for b in batch]
    if isinstance(batch, dict):
        return {k: fresh_copy(v) for k, v in batch.items()}
    return batch


class TrainerLoader:
    """Iterate ``loader`` as a trainer expects.

    A pass continues where the last one stopped (unless the sampler restarts every pass) and
    the next pass runs the next epoch, as the ring loader does. ``fresh``: each batch is a copy
    that later batches do not touch (the recycled buffer otherwise). ``batch_sampler`` is the loader's sampler
    (``set_epoch``, ``state_dict``, ``order``), ``sampler`` the trainer's epoch hook
    (:class:`EpochEntry`), ``dataset`` what the batches come from.
    """

    def __init__(self, loader: RingLoader, *, fresh: bool = False, dataset: Any = None) -> None:
        self.loader = loader
        self.fresh = bool(fresh)
        self.dataset = dataset
        self.sampler = EpochEntry(loader)

    @property
    def batch_sampler(self) -> Any:
        """The sampler of the ring loader (batches, epoch, position)."""
        return self.loader.sampler

    @property
    def batch_size(self) -> int:
        """Items per full batch."""
        return self.loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches consumed (what a checkpoint keeps)."""
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` on the next pass."""
        self.loader.load_state_dict(state)

    def __iter__(self) -> Generator[Any, None, None]:
        for batch in self.loader:
            yield fresh_copy(batch) if self.fresh else batch
