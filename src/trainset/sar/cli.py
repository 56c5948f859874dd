"""`trainset sar ...` sub-commands: patches, verify, import-legacy."""

from __future__ import annotations

import argparse
import sys
import time

from trainset.cli_tools import EXIT_FAILURES, EXIT_OK, add_group, flag
from trainset.errors import InputError
from trainset.sar.geotiff import DEFAULT_MAX_PIXELS


def _floats(text: str, n: int, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise InputError("expected numbers", key=name, found=text) from exc
    if len(values) != n:
        raise InputError(f"expected {n} comma-separated numbers", key=name, found=text)
    return values


def _bands(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise InputError("bands are 1-based integers", key="--bands", found=text) from exc


def _patches(args: argparse.Namespace) -> int:
    from trainset.sar.tiling import ClipSpec, QualityFilter, TilingConfig, build_patches

    low, high, fraction = _floats(args.quality, 3, "--quality")
    config = TilingConfig(
        patch_size=args.patch_size,
        stride=args.stride,
        units=args.units,
        clip=ClipSpec.parse(args.clip),
        quality=QualityFilter(low, high, fraction),
        bands=_bands(args.bands),
        band_mode=args.band_mode,
        shard_size=args.shard_size,
        dtype=args.dtype,
    )
    manifest = build_patches(args.tifs, args.out, config, argv=sys.argv, max_pixels=args.max_pixels)
    from trainset.sar.manifest import load_manifest

    m = load_manifest(manifest)
    print(
        f"{m.num_patches} patches in {len(m.shards)} shard(s), "
        f"vmin {m.vmin:.4f} dB, vmax {m.vmax:.4f} dB -> {manifest}"
    )
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from trainset.sar.verify import verify_patch_files

    errors = verify_patch_files(args.path, deep=args.deep, trust_pickle=args.trust_pickle)
    if errors:
        print(f"FAIL: {len(errors)} problem(s)")
        for path, message in errors:
            print(f"  - {path}: {message}")
        return EXIT_FAILURES
    print(f"OK: {args.path}" + (" (sha256 checked)" if args.deep else ""))
    return EXIT_OK


def _import_legacy(args: argparse.Namespace) -> int:
    from trainset.sar.legacy import import_legacy

    manifest = import_legacy(args.metadata, args.out, trust_pickle=args.trust_pickle, argv=sys.argv)
    print(f"wrote {manifest}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from trainset.sar.report import SarReportOptions, build_sar_report

    start = time.monotonic()
    options = SarReportOptions(mosaic=args.mosaic, max_patches=args.max_patches, seed=args.seed)
    report = build_sar_report(args.path, options, output=args.output)
    print(
        f"sar report: {report.patches} patches from {report.sources} source(s), "
        f"{report.images} images, {report.size_bytes / 1e6:.2f} MB, "
        f"{time.monotonic() - start:.1f} s\n  open: {report.path}"
    )
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `trainset sar` and its sub-commands."""
    from trainset.sar.report import SarReportOptions

    group = add_group(sub, "sar", "SAR patches: GeoTIFF tiling, sharded store, verification.")

    p = group.add_parser(
        "patches",
        help="tile GeoTIFFs into normalised patches (.npy shards + manifest.json)",
        description="Read GeoTIFFs in block-aligned windows, normalise to [0, 1] with global "
        "clip bounds in dB, cut patches, filter them and stream them into .npy shards. The new "
        "set is built beside --out and swapped in whole when complete: a failure, a kill or a "
        "full disk leaves the old set as it was; a second run into the same --out is refused "
        "while one is writing.",
    )
    p.add_argument("tifs", nargs="+", metavar="TIF", help="input GeoTIFF(s)")
    p.add_argument(
        "--out",
        required=True,
        help="output folder (shards + manifest.json), or its manifest.json; it must be new, "
        "empty or a patch set: a new set replaces it as a whole, only once complete",
    )
    p.add_argument(*flag("--patch-size"), type=int, default=256, help="patch side, px (256)")
    p.add_argument("--stride", type=int, default=128, help="patch step, px (128)")
    p.add_argument(
        "--units",
        choices=("intensity", "amplitude", "db"),
        default="intensity",
        help="pixel units of the input: intensity (power), amplitude (squared first), db",
    )
    p.add_argument(
        "--clip",
        default="percentile:1,99",
        help="global clip bounds in dB: percentile:LOW,HIGH | fixed:VMIN,VMAX | sigma:K "
        "(percentile:1,99)",
    )
    p.add_argument(
        "--quality",
        default="0.01,0.99,0.9",
        help="keep a patch when >= FRACTION of its pixels are valid and in (LOW, HIGH) "
        "after normalisation: LOW,HIGH,FRACTION (0.01,0.99,0.9; 0,1,0 keeps all)",
    )
    p.add_argument("--bands", default=None, help="1-based bands, e.g. 1,2 (default: all)")
    p.add_argument(
        *flag("--band-mode"),
        choices=("separate", "stack"),
        default="separate",
        help="each band its own (1,P,P) patch, or bands stacked as channels (C,P,P)",
    )
    p.add_argument(*flag("--shard-size"), type=int, default=4096, help="max patches per shard")
    p.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="shard dtype (float32; float16 halves the size, datasets return float32)",
    )
    p.add_argument(
        *flag("--max-pixels"),
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse a raster of more pixels (width x height x bands) than this, from its "
        f"header ({DEFAULT_MAX_PIXELS}: 65536 x 65536, one band)",
    )
    p.set_defaults(func=_patches)

    v = group.add_parser(
        "verify",
        help="check every shard against manifest.json (exit 1 listing every failure)",
        description="Check that every shard exists, opens, has the manifest's count, shape "
        "and dtype and values in [0, 1]; --deep also checks sha256.",
    )
    v.add_argument("path", metavar="DIR_OR_MANIFEST", help="patch directory or manifest.json")
    v.add_argument("--deep", action="store_true", help="also compare sha256 of every shard")
    v.add_argument(
        *flag("--trust-pickle"),
        action="store_true",
        help="allow reading a legacy pickled metadata.npy",
    )
    v.set_defaults(func=_verify)

    li = group.add_parser(
        "import-legacy",
        help="convert the plan's pickled metadata.npy into manifest.json",
        description="Convert the plan's pickled metadata.npy into a JSON manifest.json "
        "(shards stay in place). Unpickling runs code from the file: --trust-pickle is required.",
    )
    li.add_argument("metadata", help="legacy metadata.npy")
    li.add_argument("--out", required=True, help="directory for manifest.json")
    li.add_argument(*flag("--trust-pickle"), action="store_true", help="allow unpickling")
    li.set_defaults(func=_import_legacy)

    r = group.add_parser(
        "report",
        help="static HTML report: counts per source and split, value histogram, mosaic",
        description="Write one HTML page (plus a folder of its images) that opens from disk: "
        "the set's parameters, patch counts per source and split (SARDataModule's default "
        "split), invalid-pixel fractions, a histogram of the normalised values with vmin/vmax "
        "in dB, a seeded mosaic of patches per source and the manifest's provenance. "
        "Written atomically.",
        epilog="Exit codes: 0 report written, 2 bad usage or input (e.g. no manifest).",
    )
    r.add_argument("path", metavar="DIR_OR_MANIFEST", help="patch directory or manifest.json")
    r.add_argument(
        "--mosaic",
        type=int,
        default=SarReportOptions.mosaic,
        help=f"patches shown per source (default {SarReportOptions.mosaic})",
    )
    r.add_argument(
        *flag("--max-patches"),
        dest="max_patches",
        type=int,
        default=SarReportOptions.max_patches,
        help=f"patches sampled for the value histogram (default {SarReportOptions.max_patches})",
    )
    r.add_argument(
        "--seed",
        type=int,
        default=SarReportOptions.seed,
        help=f"seed of both samples (default {SarReportOptions.seed})",
    )
    r.add_argument("--output", help="page to write (default DIR/report/index.html)")
    r.set_defaults(func=_report)
