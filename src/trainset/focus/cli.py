"""`trainset focus ...` sub-commands."""

from __future__ import annotations

import argparse

from trainset.cli import add_group


def register(sub: argparse._SubParsersAction) -> None:
    """Add `trainset focus` and its sub-commands."""
    add_group(
        sub, "focus", "FocusMamba data pipeline: index, deblur, depth, calibrate, render, validate."
    )
