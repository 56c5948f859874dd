"""``SARDataModule``: the plan's train/val datamodule over a SAR patch set.

Datasets are built once, on first use (``setup`` or any accessor). The split never puts one
patch in both train and val; the default ``by_source`` policy also keeps every source raster
on one side (neighbouring stride-128 patches overlap by half, so a random split leaks val
into train). The class derives from ``lightning.LightningDataModule`` when lightning is
installed, so ``Trainer.fit(model, datamodule=dm)`` works; without lightning it is a plain
object with the same methods.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainset.errors import InputError
from trainset.loading import (
    EpochSampler,
    ThreadedLoader,
    TrainerLoader,
    apply_d4,
    copy_batch,
    keep_batch,
)
from trainset.loading.loader import Augment
from trainset.loading.trainer import DataModuleBase, LoaderCache
from trainset.loading.trainer import process_group as process_group  # its home until now
from trainset.sar.datasets import LazyPatchDataset, SARPatchDataset, open_patch_set
from trainset.sar.legacy import is_pickled_npy
from trainset.sar.manifest import Manifest
from trainset.sar.splits import (
    DEFAULT_SPLIT,
    DEFAULT_SPLIT_SEED,
    DEFAULT_VAL_FRACTION,
    SPLIT_POLICIES,
    split_patches,
)


class SARDataModule(DataModuleBase):
    """Train/val datasets and DataLoaders over a SAR patch set (the plan's signature).

    ``patches_path``: a ``manifest.json`` or its directory, the plan's pickled ``metadata.npy``
    (needs ``trust_pickle=True``), or a single ``.npy`` of (N, H, W) patches. ``lazy=True``
    reads patches from the shards (:class:`LazyPatchDataset`); ``lazy=False`` or a single
    ``.npy`` loads them into memory (:class:`SARPatchDataset`). ``split``: ``by_source``
    (default) or ``random``; a single ``.npy`` has no sources, so it needs ``random``.

    In lazy mode the batches come from an :class:`trainset.loading.EpochSampler` (shuffle and
    augmentation from (seed, epoch): the same batches for any ``threads`` or ``num_workers``,
    one epoch further on each pass). With ``num_workers=0`` (the default) ``threads`` threads
    of this process read them (:class:`trainset.loading.ThreadedLoader`; ``None`` chooses from
    the machine: :func:`trainset.loading.default_threads`); ``num_workers > 0`` reads them in
    that many DataLoader processes instead. Each batch comes in a recycled buffer without a
    collate copy (``recycle=True``): a batch stays intact while the next few are produced, so
    copy one you keep (``list(loader)`` needs ``recycle=False``, which gives fresh tensors at
    the cost of a copy per batch). ``augment_on_device=True`` leaves the flips/rotations to the
    device: train batches come as ``(batch, codes)`` and :meth:`on_after_batch_transfer`
    (called by Lightning after the batch reached the GPU) applies them with one gather and
    hands the model the batch tensor. ``device``: where the threaded loaders put batches
    (default: the CUDA device of the Lightning trainer the datamodule is attached to, else the
    CPU, in pinned memory when CUDA is present).
    """

    def __init__(
        self,
        patches_path: str | os.PathLike[str],
        val_fraction: float = DEFAULT_VAL_FRACTION,
        batch_size: int = 8,
        num_workers: int = 0,
        augment_train: bool = True,
        seed: int = DEFAULT_SPLIT_SEED,
        lazy: bool = True,
        max_samples: int | None = None,
        *,
        split: str = DEFAULT_SPLIT,
        trust_pickle: bool = False,
        recycle: bool = True,
        augment_on_device: bool = False,
        threads: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if split not in SPLIT_POLICIES:
            raise InputError(
                "unknown split policy", key="split", expected=SPLIT_POLICIES, found=split
            )
        self.patches_path = Path(patches_path)
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment_train = augment_train
        self.seed = seed
        self.lazy = lazy
        self.max_samples = max_samples
        self.split = split
        self.trust_pickle = trust_pickle
        self.recycle = recycle
        self.augment_on_device = augment_on_device
        self.threads = threads
        self.device = device
        self._loaders = LoaderCache()
        self._manifest: Manifest | None = None
        self._train: Dataset[torch.Tensor] | None = None
        self._val: Dataset[torch.Tensor] | None = None
        self.train_indices = np.zeros(0, np.int64)
        self.val_indices = np.zeros(0, np.int64)

    # -- building ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Build the train and val datasets (once; later calls do nothing)."""
        if self._train is not None:
            return
        p = self.patches_path
        single = p.suffix == ".npy" and p.is_file() and not is_pickled_npy(p)
        if single:
            self._setup_single(p)
        else:
            self._setup_manifest(p)

    def _cap(self, ids: np.ndarray) -> np.ndarray:
        return ids if self.max_samples is None else ids[: max(int(self.max_samples), 0)]

    def _setup_manifest(self, path: Path) -> None:
        manifest = open_patch_set(path, trust_pickle=self.trust_pickle)
        self._manifest = manifest
        groups = manifest.source_of_patches()
        train_ids, val_ids = split_patches(groups, self.val_fraction, self.seed, self.split)
        self.train_indices, self.val_indices = self._cap(train_ids), self._cap(val_ids)
        if self.lazy:
            tp = self.trust_pickle
            self._train = LazyPatchDataset(
                path,
                self.augment_train,
                None,
                indices=self.train_indices,
                trust_pickle=tp,
                aug_seed=self.seed,
                defer_augment=self.augment_on_device,
            )
            self._val = LazyPatchDataset(
                path, False, None, indices=self.val_indices, trust_pickle=tp
            )
            return
        reader = LazyPatchDataset(path, False, shuffle_seed=None, trust_pickle=self.trust_pickle)
        if reader.channels != 1:
            raise InputError(
                "in-memory mode holds single-channel patches; use lazy=True",
                key="lazy",
                expected="channels 1",
                found=reader.channels,
            )
        self._train = SARPatchDataset(
            reader.read_patches(self.train_indices)[:, 0], augment=self.augment_train
        )
        self._val = SARPatchDataset(reader.read_patches(self.val_indices)[:, 0], augment=False)

    def _setup_single(self, path: Path) -> None:
        if self.split != "random":
            raise InputError(
                "a single .npy has no source rasters to split by; use split='random'",
                file=path,
                key="split",
                expected="random",
                found=self.split,
            )
        try:
            patches = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"not a readable .npy: {exc}", file=path) from exc
        groups = np.zeros(len(patches), np.int64)
        train_ids, val_ids = split_patches(groups, self.val_fraction, self.seed, "random")
        self.train_indices, self.val_indices = self._cap(train_ids), self._cap(val_ids)
        self._train = SARPatchDataset(np.asarray(patches[self.train_indices]), self.augment_train)
        self._val = SARPatchDataset(np.asarray(patches[self.val_indices]), augment=False)

    # -- accessors -----------------------------------------------------------------------------
    @property
    def train_dataset(self) -> Dataset[torch.Tensor]:
        """The training dataset (built on first access)."""
        self.setup()
        assert self._train is not None
        return self._train

    @property
    def val_dataset(self) -> Dataset[torch.Tensor]:
        """The validation dataset (built on first access)."""
        self.setup()
        assert self._val is not None
        return self._val

    @property
    def train_size(self) -> int:
        """Number of training patches."""
        return len(self.train_dataset)  # type: ignore[arg-type]

    @property
    def val_size(self) -> int:
        """Number of validation patches."""
        return len(self.val_dataset)  # type: ignore[arg-type]

    @property
    def preprocessing_params(self) -> dict[str, Any] | None:
        """``{"vmin", "vmax", "units"}`` (dB clip bounds) for the inverse transform, or None
        when the patch set does not record them (a single ``.npy``, a legacy set without them)."""
        self.setup()
        m = self._manifest
        if m is None or m.vmin is None or m.vmax is None:
            return None
        return {"vmin": m.vmin, "vmax": m.vmax, "units": m.units}

    def _lazy_loader(self, split: str, ds: LazyPatchDataset) -> Any:
        """The cached lazy loader of ``split`` (rebuilt when the process group or the device
        changed, e.g. once a trainer is attached)."""
        context = self._loaders.context(self.device, getattr(self, "trainer", None))
        cached = self._loaders.get(split, context)
        if cached is not None:
            return cached
        rank, world, device = context
        train = split == "train"
        # Processes get dataset positions, threads the global patch ids: the same batches.
        records = len(ds) if self.num_workers > 0 else ds.patch_indices
        sampler = EpochSampler(
            records,
            self.batch_size,
            seed=self.seed,
            shuffle=train,
            drop_last=train,
            rank=rank,
            world_size=world,
            restart=not train,
        )
        if self.num_workers > 0:
            loader: Any = self._process_loader(ds, sampler)
        else:
            mode: Augment = "none"
            if train and ds.augment:
                mode = "deferred" if self.augment_on_device else "cpu"
            ring = ThreadedLoader(
                ds.reader,
                sampler,
                threads=self.threads,
                keep=3,
                augment=mode,
                device=device,
                channels=ds.channels,
                dtype=np.float32,
            )
            loader = TrainerLoader(ring, fresh=not self.recycle, dataset=ds)
        return self._loaders.put(split, context, loader)

    def _process_loader(self, ds: LazyPatchDataset, sampler: EpochSampler) -> DataLoader[Any]:
        """A DataLoader whose ``num_workers`` processes read whole batches into recycled
        buffers (``collate_fn=keep_batch``)."""
        workers = self.num_workers
        return DataLoader(
            ds,
            batch_sampler=cast("Iterable[list[Any]]", sampler),
            collate_fn=cast(
                "Callable[[list[Any]], Any]", keep_batch if self.recycle else copy_batch
            ),
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> Any:
        """Shuffled (seeded) batches of (B, C, H, W), last partial batch dropped."""
        ds = self.train_dataset
        if isinstance(ds, LazyPatchDataset):
            return self._lazy_loader("train", ds)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=True,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> Any:
        """Validation batches of (B, C, H, W) in order, without augmentation; every pass
        starts at the first batch."""
        ds = self.val_dataset
        if isinstance(ds, LazyPatchDataset):
            return self._lazy_loader("val", ds)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply D4 codes left to the device (``augment_on_device``): ``(batch, codes)`` ->
        the augmented batch, where the batch now lives. Other batches pass unchanged."""
        if (
            isinstance(batch, (tuple, list))
            and len(batch) == 2
            and isinstance(batch[1], torch.Tensor)
            and batch[1].dtype == torch.uint8
            and batch[1].dim() == 1
        ):
            return apply_d4(batch[0], batch[1])
        return batch

    def get_sample_batch(self, split: str = "train") -> torch.Tensor:
        """The first ``batch_size`` items of ``split`` ('train' or 'val') as (B, C, H, W).

        Train items come augmented as a model sees them: with ``augment_on_device`` the D4
        codes the loader would leave to the device are applied here.
        """
        if split not in ("train", "val"):
            raise InputError("unknown split", key="split", expected="train|val", found=split)
        ds = self.train_dataset if split == "train" else self.val_dataset
        n = min(self.batch_size, len(ds))  # type: ignore[arg-type]
        if n == 0:
            raise InputError(f"the {split} split is empty", key="split", found=0)
        rows = ds.__getitems__(list(range(n)))  # type: ignore[attr-defined]
        batch = torch.stack(list(rows))
        codes = getattr(rows, "codes", None)
        return batch if codes is None else apply_d4(batch, codes)
