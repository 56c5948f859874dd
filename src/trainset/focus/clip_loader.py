"""Clip batches of (B, T, C, H, W) read by threads into recycled buffers.

:class:`ClipBatchSampler` cuts a :class:`trainset.focus.clips.ClipSampler`'s order into
batches and keeps the position (epoch, batch) for a resume; :class:`ClipLoader` fills the
batches with threads (the engine of :class:`trainset.loading.RingLoader`): each clip is
converted straight from the pack's memory map into its row of a batch buffer, so a packed
scene costs one copy per modality and no decode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainset.errors import InputError
from trainset.focus.clips import PARAM_KEYS, ClipSampler, FocusClipDataset
from trainset.loading import EpochSampler, RingLoader
from trainset.loading.ring import Run
from trainset.loading.sampler import sampler_rank


class ClipBatchSampler(EpochSampler):
    """Batches of ``batch_size`` clip indices in the order of ``clips`` (a
    :class:`ClipSampler`: (seed, epoch), ``clips_per_scene``, rank), resumable mid-epoch.

    Epochs, positions and ``state_dict`` are :class:`trainset.loading.EpochSampler`'s; ranks
    are the clip sampler's (clips ``rank::world_size`` of the epoch's order). ``sampler`` (a
    ``DistributedSampler``) takes the rank from it instead: that is how Lightning re-creates the
    batch sampler of a ``DataLoader`` for its process under DDP.
    """

    def __init__(
        self,
        clips: ClipSampler,
        batch_size: int,
        *,
        drop_last: bool = False,
        restart: bool = False,
        sampler: Any = None,
    ) -> None:
        if sampler is not None:
            clips = clips.for_rank(*sampler_rank(sampler))
        super().__init__(
            len(clips),
            batch_size,
            seed=clips.seed,
            shuffle=clips.shuffle,
            drop_last=drop_last,
            restart=restart,
        )
        self.clips = clips
        self.sampler = sampler

    def order(self, epoch: int) -> np.ndarray:
        """(n,) int64 clip indices of ``epoch`` (of this rank)."""
        cached = self._cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        order = np.asarray(self.clips.order(epoch), dtype=np.int64)
        self._cache = (epoch, order)
        return order


class ClipLoader(RingLoader):
    """Batches of clips as dicts: each modality (B, T, C, H, W) float32, ``roi`` (B, 4),
    ``f``, ``N``, ``S_focus``, ``max_coc`` (B,) float32, ``set`` and ``start`` (B,) int64,
    ``scene_id`` a list: what ``collate_fn`` makes of the same clips.

    The modality tensors live in recycled buffers (pinned when CUDA is present) and stay
    intact while the next ``keep - 1`` batches are handed out. Every scene of the loader must
    share one frame size (H, W). ``device``: the modalities are moved there.
    """

    def __init__(
        self,
        dataset: FocusClipDataset,
        sampler: ClipBatchSampler,
        *,
        threads: int | None = None,
        prefetch: int | None = None,
        keep: int = 3,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(sampler, threads=threads, prefetch=prefetch, keep=keep, device=device)
        if sampler.end > len(dataset):
            raise InputError(
                "sampler draws clips the dataset does not have",
                expected=f"indices < {len(dataset)}",
                found=sampler.end - 1,
            )
        self.dataset = dataset
        self.sampler: ClipBatchSampler = sampler
        self._tensors: dict[str, list[torch.Tensor]] = {}
        self._arrays: dict[str, list[np.ndarray]] = {}
        self._rest: list[list[dict[str, Any]]] = [[] for _ in range(self.slots)]

    def _allocate(self) -> None:
        if len(self.sampler) == 0:
            return
        first = int(self.sampler.batch(self.sampler.epoch, 0).indices[0])
        pin = torch.cuda.is_available()
        b = self.sampler.batch_size
        for m, shape in self.dataset.clip_shapes(first).items():
            tensors = [
                torch.empty((b, *shape), dtype=torch.float32, pin_memory=pin)
                for _ in range(self.slots)
            ]
            self._tensors[m] = tensors
            self._arrays[m] = [t.numpy() for t in tensors]

    def _fill(self, run: Run, j: int, slot: int) -> int:
        batch = self.sampler.batch(run.epoch, j)
        rest = []
        for row, index in enumerate(batch.indices.tolist()):
            out = {m: arrays[slot][row] for m, arrays in self._arrays.items()}
            rest.append(self.dataset.read_into(index, out, run.epoch))
        self._rest[slot] = rest
        return len(batch)

    def _deliver(self, slot: int, n: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m, tensors in self._tensors.items():
            t = tensors[slot] if n == self.sampler.batch_size else tensors[slot][:n]
            out[m] = self._to_device(t, slot)
        rest = self._rest[slot][:n]
        out["roi"] = torch.stack([r["roi"] for r in rest])
        for key in PARAM_KEYS:
            out[key] = torch.stack([r[key] for r in rest])
        out["scene_id"] = [r["scene_id"] for r in rest]
        out["set"] = torch.tensor([r["set"] for r in rest], dtype=torch.int64)
        out["start"] = torch.tensor([r["start"] for r in rest], dtype=torch.int64)
        return out
