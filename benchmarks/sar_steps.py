"""What the SLURM steps of `sar patches` cost beside the local run, on the same rasters.

Writes N uint16 amplitude GeoTIFFs (seeded speckle, 256 x 256 tiles), then in this process,
alternating for --rounds rounds: the local executor (`build_patches`: two passes, streaming into
the set) and the steps a SLURM submission runs (`plan_patches`, executed one after the other
here with `run_locally`: per-raster stats, bounds, per-raster tiles, then the manifest step
that copies every patch into the final shards). Prints each step's time, the ratio steps/local
per round (median, min, max) and the bytes the steps write beside the set; checks that both
sets are byte for byte equal. On a cluster the per-raster steps run side by side: the wall
time there is about max(stats) + bounds + max(tile) + manifest.

    python benchmarks/sar_steps.py                         # 4 rasters of 3000 x 3000
    python benchmarks/sar_steps.py --rasters 8 --size 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from trainset.pipeline.plan import run_locally
from trainset.sar.config import TilingConfig
from trainset.sar.steps import plan_patches
from trainset.sar.tiling import build_patches
from trainset.sar.workdir import TILE, work_folder
from trainset.testing.sar_rasters import speckle_amplitude_dn, write_geotiff
from trainset.testing.sar_sets import set_files


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_steps(rasters: list[Path], out: Path, config: TilingConfig) -> tuple[dict, int]:
    """The SLURM steps here: seconds per step, and the bytes of per-raster tiles they wrote."""
    plan = plan_patches(rasters, out, config)
    times: dict[str, float] = {}
    started: list[tuple[str, float]] = []
    tiles = [0]

    def before(step) -> None:
        now = time.perf_counter()
        if started:
            name, t0 = started.pop()
            times[name] = now - t0
        if step.name == "manifest":  # the per-raster patches, before the manifest removes them
            work = work_folder(out.resolve())
            tiles[0] = sum(folder_bytes(d) for d in work.glob(f"*/{TILE}"))
        started.append((step.name, now))

    result = run_locally(plan, before_step=before)
    name, t0 = started.pop()
    times[name] = time.perf_counter() - t0
    if result.exit_code != 0:
        raise SystemExit(f"the steps failed: {result.codes}")
    return times, tiles[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rasters", type=int, default=4)
    parser.add_argument("--size", type=int, default=3000, help="raster side in pixels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="sar_steps_"))
    work.mkdir(parents=True, exist_ok=True)
    config = TilingConfig(units="amplitude")
    try:
        rasters = [work / f"scene{i}.tif" for i in range(args.rasters)]
        for i, path in enumerate(rasters):
            write_geotiff(path, speckle_amplitude_dn((args.size, args.size), seed=i), block=256)
        print(f"{args.rasters} rasters of {args.size} x {args.size} uint16, default options")
        ratios = []
        for r in range(args.rounds):
            local, steps = work / f"local{r}", work / f"steps{r}"
            t0 = time.perf_counter()
            build_patches(rasters, local, config, show_progress=False)
            local_s = time.perf_counter() - t0
            times, tile_bytes = run_steps(rasters, steps, config)
            steps_s = sum(times.values())
            ratios.append(steps_s / local_s)
            same = set_files(local) == set_files(steps)
            per_step = ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
            print(
                f"round {r}: local {local_s:.2f} s; steps {steps_s:.2f} s ({per_step}); "
                f"ratio {ratios[-1]:.2f}x; set {folder_bytes(steps) / 2**20:.0f} MiB, "
                f"per-raster patches {tile_bytes / 2**20:.0f} MiB; byte-identical: {same}"
            )
            if not same:
                return 1
            shutil.rmtree(local)
            shutil.rmtree(steps)
            shutil.rmtree(work_folder(steps), ignore_errors=True)
        print(
            f"steps / local time, median [min, max] over {args.rounds} rounds: "
            f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}]"
        )
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
