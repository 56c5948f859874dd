"""`trainset sar ...` sub-commands."""

from __future__ import annotations

import argparse

from trainset.cli import add_group


def register(sub: argparse._SubParsersAction) -> None:
    """Add `trainset sar` and its sub-commands."""
    add_group(sub, "sar", "SAR patches: GeoTIFF tiling, sharded store, verification.")
