"""Seeds that are stable across processes and machines.

Python's ``hash()`` of a string changes with every process (PYTHONHASHSEED), so a seed derived
from it differs between a SLURM array task and a re-run. These derive from sha256 instead.
"""

from __future__ import annotations

import hashlib


def name_seed(name: str, *, bits: int = 32) -> int:
    """Integer in [0, 2**bits) from the sha256 of ``name`` (the same in every process)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (1 << bits)


def derive_seed(global_seed: int, name: str, *, bits: int = 32) -> int:
    """Seed for one unit of work (a scene, a shard) from a global seed and its name."""
    digest = hashlib.sha256(f"{int(global_seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (1 << bits)
