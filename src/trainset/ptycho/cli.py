"""`trainset ptycho ...` sub-commands: check, canonicalize, fixture, simulate, import."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainset.cli_tools import EXIT_FAILURES, EXIT_OK, add_group, flag
from trainset.errors import InputError
from trainset.ptycho.contract import check_interrupted_sidecar, check_npz, check_sidecar
from trainset.ptycho.convert import canonicalize
from trainset.ptycho.fixture import MIN_SUBSET, STRATEGIES, generate_fixture
from trainset.ptycho.importer import FORMATS, import_file
from trainset.ptycho.layout import LAYOUTS
from trainset.ptycho.simulate import simulate
from trainset.store import MAX_ARRAY_BYTES, npz_headers

LAYOUT_HELP = (
    "layout of the source diffraction: nhw = (N,H,W), hwn = legacy (H,W,N); "
    "needed only when both the first and last axis have N entries"
)


MIB = 2**20
# Keys of a tike ptychography NPZ (read by `trainset ptycho import --format tike`).
TIKE_KEYS = {"data", "scan"}


def _add_max_array(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-array-mib",
        type=float,
        default=MAX_ARRAY_BYTES / MIB,
        metavar="MIB",
        help="refuse an array larger than this many MiB before reading it (zip bombs, forged "
        f"headers); raise it for trusted large files (default {MAX_ARRAY_BYTES // MIB})",
    )


def _add_metadata_out(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        *flag("--metadata-out"),
        dest="metadata_out",
        type=Path,
        default=None,
        help="sidecar JSON path (default: OUTPUT with suffix .json)",
    )


def _print_sidecar(sidecar: Path, checksum: str) -> None:
    print(f"wrote {sidecar}")
    print(f"sha256 {checksum}")


def _max_bytes(args: argparse.Namespace) -> int:
    if not args.max_array_mib > 0:
        raise InputError(
            "the array size limit must be positive",
            key="--max-array-mib",
            expected="> 0",
            found=args.max_array_mib,
        )
    return int(args.max_array_mib * MIB)


def _hint(path: Path) -> str | None:
    headers = npz_headers(path)
    if set(headers) >= TIKE_KEYS and "diffraction" not in headers:
        return (
            "hint: keys data, scan are a tike ptychography file; convert it with "
            "`trainset ptycho import --format tike FILE --output OUT`"
        )
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
    report = check_npz(args.file, max_bytes=_max_bytes(args))
    sidecar = args.sidecar
    if sidecar is None and not args.no_sidecar:
        beside = Path(args.file).with_suffix(".json")
        sidecar = beside if beside.is_file() else None
        if sidecar is None:
            check_interrupted_sidecar(report, beside)
    if sidecar is not None:
        check_sidecar(report, args.file, sidecar)
    if args.json:
        print(report.to_json())
    else:
        print(report.to_text())
        hint = None if report.ok else _hint(Path(args.file))
        if hint:
            print(hint)
    return EXIT_OK if report.ok else EXIT_FAILURES


def _canonicalize(args: argparse.Namespace) -> int:
    result = canonicalize(args.source, args.output, layout=args.layout, max_bytes=_max_bytes(args))
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
        max_bytes=_max_bytes(args),
    )
    print(f"wrote {npz} ({args.subset_size} positions, strategy {args.strategy})")
    _print_sidecar(sidecar, checksum)
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    result = simulate(
        args.source,
        args.output,
        layout=args.layout,
        metadata_path=args.metadata_out,
        max_bytes=_max_bytes(args),
        progress=True,
    )
    shape = "(H,W,N) float64" if result.layout == "hwn" else "(N,H,W) float32"
    print(f"wrote {result.output} ({result.n_scan} patterns, {shape}, max {result.peak:.6g})")
    _print_sidecar(result.sidecar, result.sha256)
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    result = import_file(
        args.format,
        args.file,
        args.output,
        metadata_path=args.metadata_out,
        object_pixel_m=args.object_pixel_m,
        max_bytes=_max_bytes(args),
        progress=True,
    )
    h, w = result.pattern
    print(f"wrote {result.output} ({result.n_scan} patterns of {h}x{w}, DATA-001)")
    for line in result.transformations:
        print(f"  {line}")
    _print_sidecar(result.sidecar, result.sha256)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `trainset ptycho` and its sub-commands."""
    group = add_group(
        sub,
        "ptycho",
        "Ptychography NPZ: contract checks, canonicalisation, fixtures, simulation, imports.",
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
        help="also check this sidecar (of fixture, simulate or import): its sha256_checksum "
        "and subset_size or positions must match the NPZ (default: FILE with suffix .json, "
        "when it exists; a missing one with a temp beside it is reported)",
    )
    side.add_argument(
        "--no-sidecar", action="store_true", help="do not check a sidecar beside FILE"
    )
    _add_max_array(p)
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
    _add_max_array(p)
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
    _add_metadata_out(p)
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="first",
        help="first: positions 0..n-1 (default); stratified: first of n equal strata of the scan",
    )
    p.add_argument("--layout", choices=LAYOUTS, default=None, help=LAYOUT_HELP)
    _add_max_array(p)
    p.set_defaults(func=_fixture)

    p = group.add_parser(
        "simulate",
        help="simulate diffraction from a reconstruction's object, probe and scan positions",
        description="Diffraction amplitudes |FFT(probe x object patch)| (unitary FFT, zero "
        "frequency at the centre; sub-pixel positions by bilinear interpolation; no noise), as "
        "PtychoPINN simulates its sets, from objectGuess, probeGuess, xcoords, ycoords of "
        "RECON.npz (such as Run1084_recon3_postPC.npz). Writes the plan's legacy source "
        "(--layout hwn, default) or a canonical DATA-001 file (nhw), and a JSON sidecar.",
    )
    p.add_argument("--source", type=Path, required=True, metavar="RECON.npz", help="input NPZ")
    p.add_argument("--output", type=Path, required=True, help="output NPZ (not the source)")
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="hwn",
        help="hwn: legacy (H,W,N) float64 diffraction, complex128 probe/object (default); "
        "nhw: canonical DATA-001 (N,H,W) float32, complex64",
    )
    _add_metadata_out(p)
    _add_max_array(p)
    p.set_defaults(func=_simulate)

    p = group.add_parser(
        "import",
        help="convert a CXI (HDF5) or tike file to a canonical DATA-001 NPZ",
        description="Measured intensities -> normalised amplitudes (PtychoPINN's "
        "normalize_data), scan positions -> pixels (CXI: from energy, distance and detector "
        "pixel size; tike: already pixels), probe from the file (or a guess), an object guess "
        "of ones covering the scan, masked pixels set to 0; checked against DATA-001 before "
        "writing; a JSON sidecar records the source's sha256 and every transformation.",
    )
    p.add_argument("--format", choices=FORMATS, required=True, help="format of FILE")
    p.add_argument("file", type=Path, metavar="FILE", help="CXI (HDF5) file or tike NPZ")
    p.add_argument("--output", type=Path, required=True, help="output NPZ (not the source)")
    _add_metadata_out(p)
    p.add_argument(
        *flag("--object-pixel-m"),
        dest="object_pixel_m",
        type=float,
        default=None,
        metavar="M",
        help="CXI only: object pixel size in metres, replacing the far-field value "
        "wavelength*distance/(pattern size*detector pixel) (near-field or magnified geometry)",
    )
    _add_max_array(p)
    p.set_defaults(func=_import)
