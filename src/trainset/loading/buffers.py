"""Recycled batch buffers and the single copy that fills them.

A ring of a few (B, 1, H, W) tensors is allocated once (pinned when CUDA is present, in shared
memory inside a DataLoader worker) and refilled batch after batch: no per-sample tensors, no
collate copy, no fresh shared-memory segment per batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainset.loading.augment import d4_copy_into
from trainset.loading.shards import ShardReader


def torch_dtype(dtype: np.dtype[Any]) -> torch.dtype:
    """The torch dtype that shares ``dtype``'s memory layout."""
    return torch.from_numpy(np.zeros(0, dtype=dtype.newbyteorder("="))).dtype


class BatchBuffers:
    """``count`` tensors of (batch_size, channels, H, W), each with a numpy view of
    (batch_size * channels, H, W) (one row per record).

    ``pin=None`` pins when CUDA is available; ``shared`` puts them in shared memory (what a
    DataLoader worker needs to hand a batch over without copying it).
    """

    def __init__(
        self,
        count: int,
        batch_size: int,
        record_shape: tuple[int, int],
        dtype: np.dtype[Any],
        *,
        channels: int = 1,
        pin: bool | None = None,
        shared: bool = False,
    ) -> None:
        pin_memory = torch.cuda.is_available() if pin is None else pin
        h, w = record_shape
        self.batch_size = int(batch_size)
        self.tensors: list[torch.Tensor] = []
        self.arrays: list[np.ndarray] = []
        for _ in range(count):
            t = torch.empty(
                (batch_size, channels, h, w),
                dtype=torch_dtype(np.dtype(dtype)),
                pin_memory=pin_memory,
            )
            if shared:
                t.share_memory_()
            self.tensors.append(t)
            self.arrays.append(t.numpy().reshape(batch_size * channels, h, w))

    def __len__(self) -> int:
        return len(self.tensors)


def fill_batch(
    reader: ShardReader,
    indices: np.ndarray,
    out: np.ndarray,
    codes: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
) -> None:
    """Read records ``indices`` (B,) into ``out`` (>= B, H, W), applying D4 ``codes`` if given.

    Records with code 0 (and all of them without codes) are read straight into their rows.
    Transformed records are read into ``scratch`` (>= B, H, W, the reader's dtype) in file
    order, then copied once through the flip/rotation view into their rows. When ``out`` has
    another dtype than the shards (float16 shards, float32 batches) every record goes through
    ``scratch`` and the conversion happens in that one copy.
    """
    idx = np.asarray(indices, dtype=np.int64)
    same = out.dtype == reader.dtype
    if codes is None and same:
        reader.read_planned(reader.plan(idx), out)
        return
    if codes is None:
        codes = np.zeros(len(idx), np.uint8)
    direct = np.flatnonzero(codes == 0) if same else np.zeros(0, np.int64)
    moved = np.flatnonzero(codes != 0) if same else np.arange(len(idx))
    if len(direct):
        reader.read_planned(reader.plan(idx[direct]), out, rows=direct)
    if len(moved):
        if scratch is None or scratch.shape[0] < len(moved) or scratch.dtype != reader.dtype:
            scratch = np.empty((len(moved), *reader.record_shape), reader.dtype)
        reader.read_planned(reader.plan(idx[moved]), scratch)
        for k, b in enumerate(moved):
            d4_copy_into(scratch[k], int(codes[b]), out[b])
