"""Small shards whose every value says where it came from: record r holds r*1000 + pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainset.store import NPY_ALIGN, atomic_write_npy


def record_values(first: int, count: int, h: int, w: int, dtype: str = "float32") -> np.ndarray:
    """(count, h, w): record r (global) = r * 1000 + row * w + col, exact in float32."""
    rec = np.arange(first, first + count, dtype=np.float64)[:, None, None] * 1000.0
    pix = np.arange(h * w, dtype=np.float64).reshape(1, h, w)
    return (rec + pix).astype(dtype)


def write_shards(
    root: Path, counts: list[int], h: int = 4, w: int = 5, dtype: str = "float32"
) -> list[Path]:
    """Write page-aligned shards of the given record counts; global record numbering runs on."""
    paths = []
    first = 0
    for i, n in enumerate(counts):
        p = root / f"shard_{i:05d}.npy"
        atomic_write_npy(p, record_values(first, n, h, w, dtype), align=NPY_ALIGN)
        paths.append(p)
        first += n
    return paths
