"""Tile a large uint16 GeoTIFF with `trainset sar patches`: peak RSS and patches/s.

Writes a SIZE x SIZE (or WIDTH x HEIGHT) uint16 amplitude GeoTIFF (256 x 256 tiles, seeded
4-look speckle) window by window, so the generator itself stays in bounded memory; then, in this process, reads the
file once in the same block-aligned strips without processing (the baseline); then runs
`trainset sar patches` on it in a child process and reports that child's peak RSS (must be
below --max-rss-gb, default 1.5), patches/s and the ratio of tiling time to the baseline read.

    python benchmarks/sar_tiling.py               # 20000 x 20000 (800 MB input)
    python benchmarks/sar_tiling.py --size 4000   # quick
    python benchmarks/sar_tiling.py --width 200000 --height 1024 --dtype float16
                                                  # wider than one read window: column groups
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trainset.sar.geotiff import iter_strips, open_raster, raster_env
from trainset.sar.manifest import load_manifest

BLOCK = 256
# Columns generated at once: keeps this process small, since a child's peak RSS as Linux
# reports it includes this process's size when the child was forked.
COLUMNS = 8192


def peak_rss_mb(who: int) -> float:
    """Peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024.0


def write_tif(path: Path, width: int, height: int, seed: int) -> None:
    """WIDTH x HEIGHT uint16 amplitude DN, tiled, written BLOCK x COLUMNS at a time."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0),
        "nodata": 0,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, height, BLOCK):
            h = min(BLOCK, height - row)
            for col in range(0, width, COLUMNS):
                w = min(COLUMNS, width - col)
                intensity = rng.gamma(4.0, 1.0e5 / 4.0, (h, w))
                dn = np.clip(np.sqrt(intensity).round(), 1, 65535).astype(np.uint16)
                dst.write(dn, 1, window=Window(col, row, w, h))


def baseline_read(path: Path, min_rows: int) -> tuple[float, int]:
    """Seconds and bytes to read the raster once in block-aligned strips (no processing)."""
    start = time.perf_counter()
    nbytes = 0
    with raster_env(), open_raster(path) as src:
        for _, data, _ in iter_strips(src, [1], min_rows):
            nbytes += data.nbytes
    return time.perf_counter() - start, nbytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="raster side in pixels")
    parser.add_argument("--width", type=int, default=None, help="raster width (--size)")
    parser.add_argument("--height", type=int, default=None, help="raster height (--size)")
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--max-rss-gb", type=float, default=1.5)
    parser.add_argument("--workdir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the TIFF and the patches")
    args = parser.parse_args()

    width, height = args.width or args.size, args.height or args.size
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sar_tiling_"))
    work.mkdir(parents=True, exist_ok=True)
    tif, out = work / "scene.tif", work / "patches"
    try:
        t0 = time.perf_counter()
        write_tif(tif, width, height, seed=0)
        gen_s = time.perf_counter() - t0
        print(
            f"generated {width}x{height} uint16 GeoTIFF "
            f"({tif.stat().st_size / 2**20:.0f} MiB) in {gen_s:.1f} s, "
            f"generator peak RSS {peak_rss_mb(resource.RUSAGE_SELF):.0f} MiB"
        )
        read_s, nbytes = baseline_read(tif, args.stride)
        print(f"baseline: windowed read {nbytes / 2**20 / read_s:.0f} MiB/s ({read_s:.2f} s)")

        cmd = [sys.executable, "-m", "trainset", "sar", "patches", str(tif), "--out", str(out)]
        cmd += ["--patch-size", str(args.patch_size), "--stride", str(args.stride)]
        cmd += ["--units", "amplitude", "--dtype", args.dtype]
        t0 = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        tile_s = time.perf_counter() - t0
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        rss = peak_rss_mb(resource.RUSAGE_CHILDREN)
        manifest = load_manifest(out)
        n = manifest.num_patches
        print(
            f"tiling: {n} patches in {len(manifest.shards)} shard(s), {tile_s:.1f} s, "
            f"{n / tile_s:.0f} patches/s, {nbytes / 2**20 / tile_s:.0f} MiB/s of input"
        )
        print(f"ratio tiling time / baseline read: {tile_s / read_s:.1f}x")
        limit = args.max_rss_gb * 1024
        verdict = "PASS" if rss < limit else "FAIL"
        print(f"peak RSS of the tiling process: {rss:.0f} MiB (limit {limit:.0f} MiB): {verdict}")
        return 0 if rss < limit else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
