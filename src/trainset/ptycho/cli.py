"""`trainset ptycho ...` sub-commands: check, canonicalize, fixture."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainset.cli import EXIT_FAILURES, EXIT_OK, add_group, flag
from trainset.ptycho.contract import check_npz, check_sidecar
from trainset.ptycho.convert import canonicalize
from trainset.ptycho.fixture import MIN_SUBSET, STRATEGIES, generate_fixture
from trainset.ptycho.layout import LAYOUTS
from trainset.store import npz_headers

LAYOUT_HELP = (
    "layout of the source diffraction: nhw = (N,H,W), hwn = legacy (H,W,N); "
    "needed only when both the first and last axis have N entries"
)


def _legacy_hint(path: Path) -> str | None:
    headers = npz_headers(path)
    diff = headers.get("diffraction") or headers.get("diff3d")
    coords = headers.get("xcoords")
    if diff is None or coords is None or len(diff.shape) != 3 or len(coords.shape) != 1:
        return None
    n = coords.shape[0]
    if diff.shape[2] == n != diff.shape[0]:
        return (
            "hint: diffraction is in legacy (H,W,N) layout; convert it with "
            "`trainset ptycho canonicalize --source FILE --output OUT`"
        )
    return None


def _check(args: argparse.Namespace) -> int:
    report = check_npz(args.file)
    sidecar = args.sidecar
    if sidecar is None and not args.no_sidecar:
        beside = Path(args.file).with_suffix(".json")
        sidecar = beside if beside.is_file() else None
    if sidecar is not None:
        check_sidecar(report, args.file, sidecar)
    if args.json:
        print(report.to_json())
    else:
        print(report.to_text())
        hint = None if report.ok else _legacy_hint(Path(args.file))
        if hint:
            print(hint)
    return EXIT_OK if report.ok else EXIT_FAILURES


def _canonicalize(args: argparse.Namespace) -> int:
    result = canonicalize(args.source, args.output, layout=args.layout)
    print(f"wrote {result.output} ({result.n_scan} positions, source layout {result.layout})")
    for line in result.transformations:
        print(f"  {line}")
    if result.kept_extra_keys:
        print(f"  kept unchanged: {', '.join(result.kept_extra_keys)}")
    print(f"sha256 {result.sha256}")
    return EXIT_OK


def _fixture(args: argparse.Namespace) -> int:
    npz, sidecar, checksum = generate_fixture(
        args.source,
        args.output,
        args.subset_size,
        metadata_path=args.metadata_out,
        strategy=args.strategy,
        layout=args.layout,
    )
    print(f"wrote {npz} ({args.subset_size} positions, strategy {args.strategy})")
    print(f"wrote {sidecar}")
    print(f"sha256 {checksum}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `trainset ptycho` and its sub-commands."""
    group = add_group(
        sub, "ptycho", "Ptychography NPZ: contract checks, canonicalisation, fixtures."
    )

    p = group.add_parser(
        "check",
        help="check an NPZ against DATA-001 (exit 0 pass, 1 fail, 2 unreadable)",
        description="Check an NPZ against the DATA-001 contract; every failure is listed.",
    )
    p.add_argument("file", type=Path, metavar="FILE.npz")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    side = p.add_mutually_exclusive_group()
    side.add_argument(
        "--sidecar",
        type=Path,
        default=None,
        help="also check this fixture sidecar: its sha256_checksum and subset_size must match "
        "the NPZ (default: FILE with suffix .json, when it exists)",
    )
    side.add_argument(
        "--no-sidecar", action="store_true", help="do not check a sidecar beside FILE"
    )
    p.set_defaults(func=_check)

    p = group.add_parser(
        "canonicalize",
        help="convert a whole legacy NPZ to canonical DATA-001 form",
        description="Convert a whole (legacy) NPZ: (N,H,W) float32 diffraction, complex64 "
        "probe/object, float64 coordinates; unknown keys are kept unchanged.",
    )
    p.add_argument("--source", type=Path, required=True, help="input NPZ")
    p.add_argument("--output", type=Path, required=True, help="output NPZ (not the source)")
    p.add_argument("--layout", choices=LAYOUTS, default=None, help=LAYOUT_HELP)
    p.set_defaults(func=_canonicalize)

    p = group.add_parser(
        "fixture",
        help="cut a small DATA-001 fixture with a JSON provenance sidecar",
        description="Cut a small DATA-001 fixture (same rows from every per-scan array) and "
        "write a JSON sidecar with its sha256. The same input gives the same NPZ bytes.",
    )
    p.add_argument("--source", type=Path, required=True, help="input NPZ (legacy or canonical)")
    p.add_argument("--output", type=Path, required=True, help="fixture NPZ (parents are created)")
    p.add_argument(
        *flag("--subset-size"),
        dest="subset_size",
        type=int,
        default=64,
        help=f"scan positions to keep, {MIN_SUBSET}..N (default 64)",
    )
    p.add_argument(
        *flag("--metadata-out"),
        dest="metadata_out",
        type=Path,
        default=None,
        help="sidecar JSON path (default: OUTPUT with suffix .json)",
    )
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="first",
        help="first: positions 0..n-1 (default); stratified: first of n equal strata of the scan",
    )
    p.add_argument("--layout", choices=LAYOUTS, default=None, help=LAYOUT_HELP)
    p.set_defaults(func=_fixture)
