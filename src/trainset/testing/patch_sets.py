"""Small SAR patch sets over shards whose values say where they came from (record r holds
r * 1000 + pixel), and the reference batches they must give."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainset.loading import d4_codes, d4_view
from trainset.sar.manifest import FORMAT, VERSION, write_manifest
from trainset.testing.shard_files import write_shards


def make_patch_set(
    root: Path, counts: list[int], channels: int = 1, dtype: str = "float32", sources=None
) -> Path:
    """Shards of 8x8 records (record r = r*1000 + pixel) and a manifest over them."""
    paths = write_shards(root, [c * channels for c in counts], h=8, w=8, dtype=dtype)
    n = sum(counts)
    src = sources if sources is not None else [i * 3 // n for i in range(n)]
    write_manifest(
        root,
        {
            "format": FORMAT,
            "version": VERSION,
            "patch_size": 8,
            "stride": 8,
            "units": "intensity",
            "dtype": dtype,
            "channels": channels,
            "vmin": -25.0,
            "vmax": 5.0,
            "shards": [{"path": p.name, "count": c, "sha256": None} for p, c in zip(paths, counts)],
            "patches": {"source": src, "band": [0] * n, "row": [0] * n, "col": list(range(n))},
            "sources": [{"path": f"s{i}.tif"} for i in range(3)],
        },
    )
    return root


def records(root, channels=1):
    recs = np.concatenate([np.load(p) for p in sorted(root.glob("shard_*.npy"))])
    return recs.reshape(-1, channels, 8, 8).astype(np.float32)


def augmented(recs, ids, seed, epoch):
    codes = d4_codes(seed, epoch, ids)
    return np.stack([[d4_view(ch, int(c)) for ch in recs[i]] for i, c in zip(ids, codes)])
