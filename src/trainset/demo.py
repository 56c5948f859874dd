"""``trainset demo``: run the main job on built-in synthetic data."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``trainset demo``."""
    p = sub.add_parser("demo", help="run the main job on built-in synthetic data")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
