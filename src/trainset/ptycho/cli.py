"""`trainset ptycho ...` sub-commands."""

from __future__ import annotations

import argparse

from trainset.cli import add_group


def register(sub: argparse._SubParsersAction) -> None:
    """Add `trainset ptycho` and its sub-commands."""
    add_group(sub, "ptycho", "Ptychography NPZ: contract checks, canonicalisation, fixtures.")
