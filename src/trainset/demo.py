"""``trainset demo``: run the main job on built-in synthetic data.

For now that is the ptychography demo (:func:`trainset.ptycho.run_ptycho_demo`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trainset.cli import EXIT_FAILURES, EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from trainset.ptycho import run_ptycho_demo

    result = run_ptycho_demo(args.out)
    print("ptychography demo")
    print(f"  synthetic legacy source (64,64,1087) float64: {result['source']}")
    print(f"  canonical (1087,64,64) float32:               {result['canonical']}")
    print(f"  fixture (64 positions):                       {result['fixture']}")
    print(f"  fixture sidecar:                              {result['metadata']}")
    print(f"  fixture sha256: {result['sha256']}")
    print("  check of the fixture:")
    for line in result["check_report"].splitlines():
        print(f"    {line}")
    return EXIT_OK if result["check_ok"] else EXIT_FAILURES


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``trainset demo``."""
    p = sub.add_parser("demo", help="run the main job on built-in synthetic data")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    p.set_defaults(func=_run)
