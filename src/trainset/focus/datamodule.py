"""``FocusDataModule``: train/val/test clip loaders over a focus dataset.

The splits are the scenes' ``split.txt`` (the plan's "ClipSampler filters by this"). Batches
are dicts of (B, T, C, H, W) float32 tensors plus the clip parameters (see
:class:`trainset.focus.clip_loader.ClipLoader`), read by threads straight from the scenes'
packs when they are current (``trainset focus pack``; ``pack=True`` packs on
``prepare_data``), from the plan's per-frame files otherwise. The class derives from
``lightning.LightningDataModule`` when lightning is installed, so
``Trainer.fit(model, datamodule=dm)`` works; without lightning it is a plain object with the
same methods.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from trainset.errors import InputError
from trainset.focus.clip_loader import ClipBatchSampler, ClipLoader
from trainset.focus.clips import MODALITIES, ClipSampler, FocusClipDataset, collate_fn
from trainset.focus.layout import SPLITS
from trainset.focus.pack import pack_dataset
from trainset.loading import TrainerLoader, process_group
from trainset.loading.trainer import DataModuleBase, LoaderCache


class FocusDataModule(DataModuleBase):
    """Clip loaders for the train, val and test scenes of a focus dataset at ``root``.

    ``clip_len``, ``stride``, ``coc_sets``, ``modalities`` and ``packed`` are
    :class:`FocusClipDataset`'s; ``roi`` applies to training clips (val and test get the
    full frame). Train batches are shuffled from (seed, epoch) by a :class:`ClipSampler`
    (``clips_per_scene`` caps each scene's clips per epoch) and the last partial batch is
    dropped; val and test come in order, every pass from the first batch.

    With ``num_workers=0`` (the default) ``threads`` threads of this process read the clips
    (``None`` chooses from the machine: :func:`trainset.loading.default_threads`);
    ``num_workers > 0`` reads them in that many DataLoader processes instead. Either way the
    batches are the same for a (seed, epoch). Threaded batches live in recycled buffers
    (``recycle=True``): copy one you keep, or pass ``recycle=False``. ``device``: where the
    threaded loaders put the clip tensors (default: the CUDA device of the Lightning trainer the
    datamodule is attached to, else the CPU, in pinned memory when CUDA is present).

    Several processes (DDP): the loaders take rank and world size from an initialised
    ``torch.distributed`` group (Lightning's DDP initialises it before asking for loaders);
    every rank gets the same number of batches and the ranks share no train clip.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        batch_size: int = 4,
        clip_len: int = 8,
        stride: int | None = None,
        coc_sets: Sequence[int] | None = None,
        modalities: Sequence[str] = MODALITIES,
        num_workers: int = 0,
        seed: int = 0,
        *,
        roi: str = "full",
        clips_per_scene: int | None = None,
        pack: bool = False,
        packed: bool | None = None,
        recycle: bool = True,
        threads: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise InputError("batch size must be >= 1", key="batch_size", found=batch_size)
        self.root = Path(root)
        self.batch_size = int(batch_size)
        self.clip_len = int(clip_len)
        self.stride = stride
        self.coc_sets = coc_sets
        self.modalities = tuple(modalities)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.roi = roi
        self.clips_per_scene = clips_per_scene
        self.pack = bool(pack)
        self.packed = packed
        self.recycle = bool(recycle)
        self.threads = threads
        self.device = device
        self._datasets: dict[str, FocusClipDataset] = {}
        self._loaders = LoaderCache()
        self._prepared = False

    # -- building ------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """With ``pack=True``: pack every scene whose pack is missing or stale (once)."""
        if self.pack and not self._prepared:
            pack_dataset(self.root)
        self._prepared = True

    def setup(self, stage: str | None = None) -> None:
        """Build the train, val and test datasets (once; later calls do nothing). A plain
        (non-distributed) run packs here when ``prepare_data`` was not called."""
        if self._datasets:
            return
        if self.pack and not self._prepared and process_group()[1] == 1:
            self.prepare_data()
        for split in SPLITS:
            self._datasets[split] = FocusClipDataset(
                self.root,
                split,
                clip_len=self.clip_len,
                stride=self.stride,
                coc_sets=self.coc_sets,
                modalities=self.modalities,
                roi=self.roi if split == "train" else "full",
                seed=self.seed,
                packed=self.packed,
            )

    def dataset(self, split: str) -> FocusClipDataset:
        """The clips of ``split`` (train, val or test), built on first use."""
        if split not in SPLITS:
            raise InputError("unknown split", key="split", expected=SPLITS, found=split)
        self.setup()
        return self._datasets[split]

    @property
    def train_dataset(self) -> FocusClipDataset:
        """The training clips."""
        return self.dataset("train")

    @property
    def val_dataset(self) -> FocusClipDataset:
        """The validation clips."""
        return self.dataset("val")

    @property
    def test_dataset(self) -> FocusClipDataset:
        """The test clips."""
        return self.dataset("test")

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, split: str) -> Any:
        """The cached loader of ``split`` (rebuilt when the process group or the device
        changed, e.g. once a trainer is attached)."""
        context = self._loaders.context(self.device, getattr(self, "trainer", None))
        cached = self._loaders.get(split, context)
        if cached is not None:
            return cached
        rank, world, device = context
        ds = self.dataset(split)
        train = split == "train"
        if train and len(ds) == 0:
            raise InputError(
                "no training clips: no scene's split.txt says train, or every train scene is "
                "shorter than clip_len",
                file=self.root,
                key="split",
                expected=f">= 1 clip of {self.clip_len} frames",
                found=0,
            )
        clips = ClipSampler(
            ds,
            shuffle=train,
            seed=self.seed,
            clips_per_scene=self.clips_per_scene if train else None,
            rank=rank,
            world_size=world,
        )
        sampler = ClipBatchSampler(clips, self.batch_size, drop_last=train, restart=not train)
        loader: Any
        if self.num_workers > 0:
            loader = DataLoader(
                ds,
                batch_sampler=sampler,
                collate_fn=collate_fn,
                num_workers=self.num_workers,
                pin_memory=torch.cuda.is_available(),
                persistent_workers=True,
            )
        else:
            ring = ClipLoader(ds, sampler, threads=self.threads, device=device)
            loader = TrainerLoader(ring, fresh=not self.recycle, dataset=ds)
        return self._loaders.put(split, context, loader)

    def train_dataloader(self) -> Any:
        """Shuffled (seeded) clip batches, last partial batch dropped."""
        return self._loader("train")

    def val_dataloader(self) -> Any:
        """Validation clip batches in order."""
        return self._loader("val")

    def test_dataloader(self) -> Any:
        """Test clip batches in order."""
        return self._loader("test")
