"""`trainset sar patches` run here or as SLURM array jobs: :func:`run_patches`.

The local executor is :func:`trainset.sar.tiling.build_patches`: both passes in one process,
streaming straight into the new set (no intermediate copy). The SLURM executor submits the plan
of :func:`plan_patches`, whose steps split the passes by raster (one array task per raster) and
keep their results in the work folder beside ``--out`` (:mod:`trainset.sar.workdir`):

| step | over | does | waits for |
|---|---|---|---|
| ``stats`` | each raster | its clip statistics (pass 1) | |
| ``bounds`` | the set | merges them in input order into the global bounds | every ``stats`` task (afterany) |
| ``tile`` | each raster | its patches with those bounds (pass 2) | ``bounds`` (afterok) |
| ``manifest`` | the set | concatenates the patches into shards, writes the manifest and publishes the set to ``--out`` | every ``tile`` task (afterany) |

``stats`` and ``bounds`` are left out for ``--clip fixed:...``. Each per-raster result has a
sentinel of what shaped it, so a resubmission plans only the rasters that failed or changed; the
set is byte for byte the local run's, apart from the manifest's provenance.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import trainset.sar.tiling as tiling
from trainset.cli_tools import EXIT_FAILURES, EXIT_OK
from trainset.errors import InputError
from trainset.pipeline.plan import Plan, StageResources, Step
from trainset.pipeline.slurm import SlurmOptions, submission_report
from trainset.sar.config import TilingConfig
from trainset.sar.geotiff import DEFAULT_MAX_PIXELS, raster_env
from trainset.sar.workdir import (
    BOUNDS_FILE,
    STATS,
    TILE,
    PatchesRun,
    describe_set,
    publish_from_tiles,
    raster_stats,
    raster_tiles,
    retry_command,
    run_units,
    unit_ids,
)

# Default SLURM resources, CPU partition. A raster step reads windows of at most 2**25 pixels
# (about 550 MB with their copies; 741 MiB peak RSS measured for the widest case,
# docs/sar.md "Measurements"); a 20000 x 20000 scene tiles in about a minute. The manifest step
# holds the per-patch table (about 200 bytes per patch while it is built) and copies every
# patch once (the plan's 182 GB archive: tens of minutes at a few hundred MB/s).
RESOURCES: dict[str, StageResources] = {
    "stats": StageResources("cpu", 1, "4G", "02:00:00"),
    "bounds": StageResources("cpu", 1, "4G", "00:30:00"),
    "tile": StageResources("cpu", 1, "4G", "04:00:00"),
    "manifest": StageResources("cpu", 1, "8G", "08:00:00"),
}


# -- actions: what the jobs run (out_root is the work folder; params a PatchesRun) ------------


def stats_action(
    out_root: Path,
    params: Mapping[str, Any],
    units: Sequence[str] | None,
    *,
    workers: int = 1,
    force: bool = False,
) -> int:
    """Pass 1 per raster of ``units`` (None: all): clip statistics, unless current."""
    run = PatchesRun.from_params(params)
    chosen = run.units if units is None else units
    return run_units(
        run, STATS, chosen, run.stats_params, lambda u, f: raster_stats(run, u, f), force=force
    )


def bounds_action(
    out_root: Path,
    params: Mapping[str, Any],
    units: Sequence[str] | None = None,
    *,
    workers: int = 1,
    force: bool = False,
) -> int:
    """The global clip bounds from every raster's statistics (exit 1, listing the rasters,
    when some lack them)."""
    run = PatchesRun.from_params(params)
    missing = [u for u in run.units if not run.stats_current(u)]
    if missing:
        print(f"clip bounds need every raster's statistics; {len(missing)} lack them:")
        _print_not_ready(run, STATS, missing)
        return EXIT_FAILURES
    vmin, vmax = run.merge_bounds()
    print(
        f"clip bounds over {len(run.units)} raster(s): vmin {vmin:.4f} dB, vmax {vmax:.4f} dB "
        f"-> {run.work / BOUNDS_FILE}"
    )
    return EXIT_OK


def tile_action(
    out_root: Path,
    params: Mapping[str, Any],
    units: Sequence[str] | None,
    *,
    workers: int = 1,
    force: bool = False,
) -> int:
    """Pass 2 per raster of ``units`` (None: all) with the current clip bounds, unless current."""
    run = PatchesRun.from_params(params)
    bounds = run.current_bounds()
    if bounds is None:
        raise InputError(
            "no clip bounds for the current statistics of every raster: the stats and bounds "
            "steps must succeed first",
            file=run.work / BOUNDS_FILE,
        )
    chosen = run.units if units is None else units
    return run_units(
        run,
        TILE,
        chosen,
        lambda u: run.tile_params(u, bounds),
        lambda u, f: raster_tiles(run, u, f, bounds),
        force=force,
    )


def manifest_action(
    out_root: Path,
    params: Mapping[str, Any],
    units: Sequence[str] | None = None,
    *,
    workers: int = 1,
    force: bool = False,
) -> int:
    """Publish the set from every raster's patches; exit 1 (nothing published, ``--out`` as it
    was) listing the rasters that are not tiled."""
    run = PatchesRun.from_params(params)
    bounds = run.current_bounds()
    if bounds is None:
        missing = [u for u in run.units if not run.stats_current(u)]
        print("no set published: the clip bounds are not computed")
        _print_not_ready(run, STATS, missing)
        return EXIT_FAILURES
    missing = [u for u in run.units if not run.tile_current(u, bounds)]
    if missing:
        print(f"no set published: {len(missing)} of {len(run.units)} raster(s) are not tiled")
        _print_not_ready(run, TILE, missing)
        return EXIT_FAILURES
    print(describe_set(publish_from_tiles(run, bounds)))
    return EXIT_OK


def _print_not_ready(run: PatchesRun, stage: str, units: Sequence[str]) -> None:
    for line in run.not_ready(stage, units):
        print(f"  {line}")
    print(
        f"logs: {run.work / 'slurm' / 'logs'}; after fixing, submit again (finished rasters "
        f"are kept):\n  {retry_command(run)}"
    )


# -- the plan ---------------------------------------------------------------------------------


def _action(func: Any) -> str:
    return f"{__name__}:{func.__name__}"


def plan_patches(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    config: TilingConfig | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    command: Sequence[str] = (),
) -> Plan:
    """The steps of a SLURM run of `sar patches` (see the module docstring), over the work
    folder beside ``out``. Every raster's header is checked here first (InputError, nothing
    written, as in a local run); ``pending`` holds the rasters whose result is not current
    (unknown for ``tile`` while the bounds wait for statistics: all of them then)."""
    cfg = config or TilingConfig()
    if not sources:
        raise InputError("no input raster given", expected="one or more GeoTIFFs", found=0)
    folder = tiling.output_folder(out)
    paths = tuple(Path(os.path.realpath(p)) for p in sources)
    with raster_env(), ExitStack() as files:
        tiling.open_rasters(paths, cfg, files, max_pixels)
    tiling.check_replaceable(folder)
    run = PatchesRun(folder, cfg, paths, unit_ids(paths), max_pixels, tuple(command))
    params, units = run.params(), run.units
    bounds = run.current_bounds()
    steps = []
    if run.fixed_bounds() is None:
        stats_pending = frozenset(u for u in units if not run.stats_current(u))
        steps.append(
            Step(
                "stats",
                _action(stats_action),
                params,
                units,
                stats_pending,
                resources=RESOURCES["stats"],
            )
        )
        if bounds is None:
            steps.append(
                Step(
                    "bounds",
                    _action(bounds_action),
                    params,
                    after=("stats",),
                    resources=RESOURCES["bounds"],
                )
            )
    tile_pending = (
        None if bounds is None else frozenset(u for u in units if not run.tile_current(u, bounds))
    )
    steps.append(
        Step(
            "tile",
            _action(tile_action),
            params,
            units,
            tile_pending,
            after=("bounds",) if bounds is None else (),
            resources=RESOURCES["tile"],
        )
    )
    steps.append(
        Step(
            "manifest",
            _action(manifest_action),
            params,
            after=("tile",),
            resources=RESOURCES["manifest"],
        )
    )
    return Plan(run.work, tuple(steps), tuple(command))


# -- running ----------------------------------------------------------------------------------


def run_patches(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    config: TilingConfig | None = None,
    *,
    executor: str = "local",
    slurm: SlurmOptions | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    command: Sequence[str] | None = None,
    show_progress: bool = True,
) -> int:
    """Tile GeoTIFFs into a patch set in ``out`` (the Python API behind `trainset sar
    patches`): here (``executor="local"``), or as SLURM array jobs (``"slurm"``) that publish
    the same set when the last one has run. ``command`` is recorded as provenance (default
    ``sys.argv``). Returns 0: the set published, or the jobs submitted (or printed on a dry
    run); bad input raises :class:`InputError` with nothing written."""
    argv = list(sys.argv if command is None else command)
    if executor == "slurm":
        return _submit(sources, out, config, slurm or SlurmOptions(), max_pixels, argv)
    if executor != "local":
        raise InputError(
            "unknown executor", key="--executor", expected="local or slurm", found=executor
        )
    manifest = tiling.build_patches(
        sources, out, config, argv=argv, show_progress=show_progress, max_pixels=max_pixels
    )
    print(describe_set(manifest))
    return EXIT_OK


def _submit(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    config: TilingConfig | None,
    options: SlurmOptions,
    max_pixels: int,
    command: Sequence[str],
) -> int:
    from trainset.pipeline.slurm import load_slurm_config, submit_plan

    plan = plan_patches(sources, out, config, max_pixels=max_pixels, command=command)
    submission = submit_plan(
        plan,
        load_slurm_config(options.config_file, RESOURCES),
        dry_run=options.dry_run,
        cluster=options.cluster,
        runner=options.runner,
    )
    if options.dry_run:
        print(submission.dry_run_text(), end="")
    print(submission_report(submission, "rasters"))
    print(f"work folder: {plan.out_root} (per-raster results; job output in slurm/logs/)")
    if not options.dry_run:
        manifest = next(job for job in submission.jobs if job["step"] == "manifest")
        print(
            f"the manifest job ({manifest['job_id']}) publishes the set to "
            f"{plan.steps[-1].params['out']} when every raster is tiled; a raster that fails "
            "is named in its log: fix it and submit the same command again (finished rasters "
            "are kept)"
        )
    return EXIT_OK
