"""Train/val splits of a SAR patch set (pure: patch groups in, index arrays out).

Here, not in :mod:`trainset.sar.datamodule`, so that code which only needs the split (the
report) does not import torch and lightning.
"""

from __future__ import annotations

import numpy as np

from trainset.errors import InputError

SPLIT_POLICIES = ("by_source", "random")
# SARDataModule's defaults: the plan's val_fraction and seed; scene-level split (DESIGN.md).
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SPLIT_SEED = 42
DEFAULT_SPLIT = "by_source"


def split_patches(
    groups: np.ndarray, val_fraction: float, seed: int, policy: str = "by_source"
) -> tuple[np.ndarray, np.ndarray]:
    """Split patch indices 0..N-1 into sorted (train, val) int64 arrays, disjoint.

    ``groups`` (N,) is the source raster of each patch. ``by_source``: sources are shuffled
    with ``seed`` and moved to val until val holds >= ``val_fraction`` of the patches (at least
    one source on each side). ``random``: a seeded permutation, the first
    ``round(N * val_fraction)`` patches go to val.
    """
    if policy not in SPLIT_POLICIES:
        raise InputError("unknown split policy", key="split", expected=SPLIT_POLICIES, found=policy)
    if not 0.0 <= val_fraction < 1.0:
        raise InputError("val_fraction must be in [0, 1)", key="val_fraction", found=val_fraction)
    groups = np.asarray(groups, dtype=np.int64)
    n = len(groups)
    rng = np.random.default_rng(seed)
    if policy == "random":
        n_val = round(n * val_fraction)
        if val_fraction > 0:
            n_val = min(max(n_val, 1), n - 1)
        perm = rng.permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    sources, sizes = np.unique(groups, return_counts=True)
    if val_fraction > 0 and len(sources) < 2:
        raise InputError(
            "a by_source split needs at least two source rasters; use split='random'",
            key="split",
            expected=">= 2 sources",
            found=len(sources),
        )
    order = rng.permutation(len(sources))
    val_sources: list[int] = []
    in_val = 0
    for i in order:
        if val_fraction == 0 or in_val >= val_fraction * n or len(val_sources) == len(sources) - 1:
            break
        val_sources.append(int(sources[i]))
        in_val += int(sizes[i])
    is_val = np.isin(groups, np.asarray(val_sources, dtype=np.int64))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
