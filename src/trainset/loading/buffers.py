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


# Records per piece of a transforming read: 4 records of 256x256 float32 (1 MiB) stay in L2.
CHUNK_BYTES = 1 << 20


def scratch_rows(reader: ShardReader) -> int:
    """Rows of the scratch buffer :func:`fill_batch` uses: about ``CHUNK_BYTES`` of records."""
    return max(1, CHUNK_BYTES // reader.record_bytes)


def fill_batch(
    reader: ShardReader,
    indices: np.ndarray,
    out: np.ndarray,
    codes: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
    views: list[memoryview] | None = None,
) -> None:
    """Read records ``indices`` (B,) into ``out`` (>= B, H, W), applying D4 ``codes`` if given.

    Records with code 0 (and all of them without codes) are read straight into their rows.
    Transformed records are read in file order, a few at a time, into ``scratch`` (G, H, W, the
    reader's dtype; G >= 1, allocated with :func:`scratch_rows` rows when missing) and copied at
    once, while still in the CPU cache, through the flip/rotation view into their rows.
    ``views`` (:meth:`ShardReader.row_views` of ``out``) spare a caller that refills one buffer
    rebuilding them. When
    ``out`` has another dtype than the shards (float16 shards, float32 batches) every record
    goes through ``scratch`` and the conversion happens in that one copy.
    """
    idx = np.asarray(indices, dtype=np.int64)
    same = out.dtype == reader.dtype
    if codes is None and same:
        reader.read_planned(reader.plan(idx), out, views=views)
        return
    if codes is None:
        codes = np.zeros(len(idx), np.uint8)
    direct = np.flatnonzero(codes == 0) if same else np.zeros(0, np.int64)
    moved = np.flatnonzero(codes != 0) if same else np.arange(len(idx))
    if len(direct):
        reader.read_planned(reader.plan(idx[direct]), out, rows=direct, views=views)
    if len(moved):
        if (
            scratch is None
            or scratch.ndim != 3
            or scratch.shape[0] < 1
            or scratch.shape[1:] != reader.record_shape
            or scratch.dtype != reader.dtype
            or not scratch.flags.c_contiguous
        ):
            scratch = np.empty((scratch_rows(reader), *reader.record_shape), reader.dtype)
        plan = reader.plan(idx[moved])
        rows = moved[plan.order].tolist()
        code_of = codes.tolist()
        for a, z in reader.read_chunks(plan, scratch):
            for k in range(a, z):
                b = rows[k]
                d4_copy_into(scratch[k - a], code_of[b], out[b])
