"""``trainset demo``: run the main jobs on built-in synthetic data.

First the focus pipeline (:func:`trainset.focus.demo.run_focus_demo`: synthetic scenes with
known depth -> index, deblur, depth, calibrate, render, validate), then the ptychography demo
(:func:`trainset.ptycho.run_ptycho_demo`), which simulates its source from the plan's real
Run1084 reconstruction when the shared real-data folder is present (see :func:`shared_data_root`)
and builds a synthetic one otherwise; the focus summary comes last and ends with the path of the
focus data set's HTML report (`trainset focus report`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from trainset.cli_tools import EXIT_FAILURES, EXIT_OK
from trainset.errors import InputError

# Environment variable naming the real-data folder (default: ../shared/data beside the checkout).
SHARED_DATA_ENV = "TRAINSET_SHARED_DATA"


def shared_data_root() -> Path:
    """The folder of real instrument data: $TRAINSET_SHARED_DATA, else ``shared/data`` beside
    the checkout that holds this code (it may not exist: callers fall back to synthetic data)."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _run(args: argparse.Namespace) -> int:
    from trainset.focus.demo import focus_demo_summary, run_focus_demo
    from trainset.ptycho import run_ptycho_demo
    from trainset.ptycho.demo import RUN1084_RECON

    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            "cannot create the demo output folder",
            file=args.out,
            key="--out",
            expected="a writable folder",
            found=exc.strerror or str(exc),
        ) from exc
    focus = run_focus_demo(
        args.out / "focus",
        n_scenes=args.scenes,
        n_frames=args.frames,
        size=(args.height, args.width),
        workers=args.workers,
    )
    focus_ok = focus.exit_code == EXIT_OK and not focus.report.get("failed_scenes", [None])
    recon = shared_data_root() / "ptycho" / RUN1084_RECON
    result = run_ptycho_demo(args.out, recon if recon.is_file() else None)
    print("ptychography demo")
    if result["recon"] is not None:
        print(f"  source simulated from the real Run1084 reconstruction {result['recon']}")
    else:
        print(f"  source synthetic ({recon} not found; set {SHARED_DATA_ENV} to use real data)")
    print(f"  {result['source_kind']} legacy source (64,64,1087) float64: {result['source']}")
    print(f"  canonical (1087,64,64) float32: {result['canonical']}")
    print(f"  fixture (64 positions): {result['fixture']}")
    print(f"  fixture sidecar: {result['metadata']}")
    print(f"  fixture sha256: {result['sha256']}")
    print("  check of the fixture:")
    for line in result["check_report"].splitlines():
        print(f"    {line}")
    print(focus_demo_summary(focus))
    return EXIT_OK if result["check_ok"] and focus_ok else EXIT_FAILURES


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``trainset demo``."""
    from trainset.focus.demo import DEMO_FRAMES, DEMO_SCENES, DEMO_SIZE

    p = sub.add_parser(
        "demo",
        help="run the main job on built-in synthetic data",
        description="Synthetic scenes with known depth -> the whole focus pipeline (index, "
        "deblur, depth, calibrate, render with --max-coc from-stats, validate), then the "
        "ptychography fixture demo; prints a summary and where to look, ending with the path "
        "of the focus data set's HTML report. Re-running reuses what is current.",
        epilog="Exit codes: 0 both demos pass validation, 1 a check failed, 2 bad usage or input "
        "(e.g. an --out that cannot be created).",
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    p.add_argument("--scenes", type=int, default=DEMO_SCENES, help="synthetic focus scenes")
    p.add_argument("--frames", type=int, default=DEMO_FRAMES, help="frames per scene")
    p.add_argument("--height", type=int, default=DEMO_SIZE[0], help="frame height, px")
    p.add_argument("--width", type=int, default=DEMO_SIZE[1], help="frame width, px")
    p.add_argument("--workers", type=int, default=2, help="scenes processed in parallel")
    p.set_defaults(func=_run)
