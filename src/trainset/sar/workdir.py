"""The work folder of a distributed `sar patches` run: per-raster results beside ``--out``.

The SLURM executor splits the two passes of :func:`trainset.sar.tiling.build_patches` by raster
(:mod:`trainset.sar.steps`). What each raster's jobs produce lives in ``.{name}.work/`` beside
the set folder ``{name}`` (same file system; the set folder itself only ever holds a published
set, which replaces it as a whole)::

    .{name}.work/
      slurm/                       step specs, job scripts, jobs.json, logs/ (the executor's)
      logs/failures.jsonl          one line per failed raster step: stage, unit, error, traceback
      bounds.json                  global clip bounds, and the statistics they were merged from
      {unit}/stats/clip_stats.npz  one raster's clip statistics (ClipAccumulator.state()), .done
      {unit}/tile/shard_*.npy      one raster's accepted patches in order, patches.npz (their
                                   table rows), source.json (its manifest entry), .done

A *unit* is one input raster, named ``{stem}-{sha256(path)[:12]}`` (a raster given twice gets
``-2``, ...). Each ``.done`` sentinel holds a hash of what shaped the result: the raster's path,
size and modification time, and the parameters (for tiles also the clip bounds and ``--out``),
so a result is reused exactly while it is current. The final step concatenates the rasters'
patches, in input order, into shards of ``--shard-size`` through the same writer a local run
uses: the set is byte for byte the local run's (apart from provenance). After publishing it
removes the per-raster patches (a second copy of the set); the statistics stay.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import trainset.sar.tiling as tiling
from trainset.cli_tools import EXIT_FAILURES, EXIT_OK, config_dict
from trainset.errors import InputError
from trainset.pipeline.dataset_files import append_failure, scene_lock
from trainset.pipeline.progress import Progress
from trainset.pipeline.scene_state import latest_failures
from trainset.sar.config import TilingConfig
from trainset.sar.geotiff import raster_env
from trainset.sar.manifest import MANIFEST_NAME
from trainset.store import atomic_write_json, atomic_write_npz, read_json, sha256_bytes
from trainset.store.sentinels import is_current, sentinel_fingerprint, write_sentinel

STATS = "stats"  # stage (and folder) of a raster's clip statistics
TILE = "tile"  # stage (and folder) of a raster's patches
STAGE_VERSION = 1
STATS_FILE = "clip_stats.npz"
TABLE_FILE = "patches.npz"
SOURCE_FILE = "source.json"
BOUNDS_FILE = "bounds.json"
BOUNDS_FORMAT = "trainset.sar.bounds"


def work_folder(out: Path) -> Path:
    """``.{name}.work`` beside the set folder ``out``."""
    return out.parent / f".{out.name}.work"


def unit_ids(paths: Sequence[Path]) -> tuple[str, ...]:
    """A folder name per raster, stable for its path: ``{stem}-{sha256(path)[:12]}``."""
    ids: list[str] = []
    seen: dict[str, int] = {}
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem)[:48] or "raster"
        base = f"{stem}-{sha256_bytes(os.fsencode(path))[:12]}"
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return tuple(ids)


@dataclass(frozen=True)
class PatchesRun:
    """One `sar patches` run: the set folder, its parameters, the rasters in input order (with
    their units), the header limit and the command (recorded as provenance)."""

    out: Path
    config: TilingConfig
    sources: tuple[Path, ...]
    units: tuple[str, ...]
    max_pixels: int
    command: tuple[str, ...] = ()

    @property
    def work(self) -> Path:
        return work_folder(self.out)

    def params(self) -> dict[str, Any]:
        """The JSON form a step spec holds (:meth:`from_params` reads it back)."""
        return {
            "out": str(self.out),
            "config": config_dict(self.config),
            "sources": [str(p) for p in self.sources],
            "units": list(self.units),
            "max_pixels": self.max_pixels,
            "command": list(self.command),
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PatchesRun:
        return cls(
            out=Path(params["out"]),
            config=TilingConfig.from_dict(params["config"]),
            sources=tuple(Path(p) for p in params["sources"]),
            units=tuple(params["units"]),
            max_pixels=int(params["max_pixels"]),
            command=tuple(params.get("command", ())),
        )

    def raster(self, unit: str) -> Path:
        """The raster of ``unit`` (InputError for a unit not in this run)."""
        if unit not in self.units:
            raise InputError(
                "not a raster of this run",
                key="unit",
                expected=f"one of the {len(self.units)} units of {self.work}",
                found=unit,
            )
        return self.sources[self.units.index(unit)]

    def stage_dir(self, unit: str, stage: str) -> Path:
        return self.work / unit / stage

    # -- what shapes each result (its sentinel's parameters) -----------------------------------
    def _raster_params(self, unit: str) -> dict[str, Any]:
        path = self.raster(unit)
        try:
            st = path.stat()
        except OSError as exc:
            raise InputError(f"cannot read the raster: {exc.strerror}", file=path) from exc
        return {"raster": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def stats_params(self, unit: str) -> dict[str, Any]:
        cfg = self.config
        return {
            **self._raster_params(unit),
            "units": cfg.units,
            "bands": None if cfg.bands is None else list(cfg.bands),
            "stride": cfg.stride,
            "clip_method": cfg.clip.method,
            "window_pixels": tiling.WINDOW_PIXELS,
        }

    def tile_params(self, unit: str, bounds: tuple[float, float]) -> dict[str, Any]:
        return {
            **self._raster_params(unit),
            "config": config_dict(self.config),
            "bounds": [float(bounds[0]), float(bounds[1])],
            "out": str(self.out),
            "window_pixels": tiling.WINDOW_PIXELS,
        }

    def stats_current(self, unit: str) -> bool:
        return is_current(
            self.stage_dir(unit, STATS), STATS, STAGE_VERSION, self.stats_params(unit)
        )

    def tile_current(self, unit: str, bounds: tuple[float, float]) -> bool:
        return is_current(
            self.stage_dir(unit, TILE), TILE, STAGE_VERSION, self.tile_params(unit, bounds)
        )

    # -- clip bounds ---------------------------------------------------------------------------
    def fixed_bounds(self) -> tuple[float, float] | None:
        """The bounds ``fixed:VMIN,VMAX`` gives without statistics; None for other methods."""
        if self.config.clip.method != "fixed":
            return None
        return tiling.ClipAccumulator(self.config.clip).bounds()

    def _stats_inputs(self) -> list[list[str | None]]:
        return [[u, sentinel_fingerprint(self.stage_dir(u, STATS))] for u in self.units]

    def current_bounds(self) -> tuple[float, float] | None:
        """The clip bounds the tiles are cut with: the fixed ones, or those of ``bounds.json``
        while every raster's statistics are current and the ones it was merged from; else None."""
        fixed = self.fixed_bounds()
        if fixed is not None:
            return fixed
        path = self.work / BOUNDS_FILE
        try:
            recorded = read_json(path)
        except (InputError, OSError):
            return None
        if (
            not isinstance(recorded, dict)
            or recorded.get("format") != BOUNDS_FORMAT
            or recorded.get("clip") != self.config.clip.to_dict()
            or recorded.get("stats") != self._stats_inputs()
            or not all(self.stats_current(u) for u in self.units)
        ):
            return None
        return float(recorded["vmin"]), float(recorded["vmax"])

    def merge_bounds(self) -> tuple[float, float]:
        """Merge every raster's statistics in input order into the global bounds and record
        them in ``bounds.json``."""
        acc = tiling.ClipAccumulator(self.config.clip)
        for unit in self.units:
            path = self.stage_dir(unit, STATS) / STATS_FILE
            with np.load(path, allow_pickle=False) as arrays:
                state = {key: arrays[key] for key in arrays.files}
            acc.merge(tiling.ClipAccumulator.from_state(self.config.clip, state))
        vmin, vmax = acc.bounds()
        atomic_write_json(
            self.work / BOUNDS_FILE,
            {
                "format": BOUNDS_FORMAT,
                "vmin": vmin,
                "vmax": vmax,
                "clip": self.config.clip.to_dict(),
                "pixels": acc.count,
                "stats": self._stats_inputs(),
            },
        )
        return vmin, vmax

    # -- what is missing -----------------------------------------------------------------------
    def not_ready(self, stage: str, units: Sequence[str]) -> list[str]:
        """One line per unit of ``units`` lacking ``stage``: the raster and why (its recorded
        failure, or that it never ran)."""
        failures = latest_failures(self.work)
        lines = []
        for unit in units:
            failure = failures.get((unit, stage))
            why = f"failed: {failure['error']}" if failure else "not done"
            lines.append(f"{unit} ({self.raster(unit)}): {stage} {why}")
        return lines


# -- per-raster steps ----------------------------------------------------------------------------


def run_units(
    run: PatchesRun,
    stage: str,
    units: Sequence[str],
    params_of: Callable[[str], dict[str, Any]],
    work_on: Callable[[str, Path], dict[str, int]],
    *,
    force: bool = False,
) -> int:
    """Do ``stage`` for each unit whose result is not current (all with ``force``): clear its
    folder, ``work_on(unit, folder)``, then write its sentinel. A failing raster is recorded in
    ``logs/failures.jsonl`` and the others go on; returns 1 when any failed, else 0."""
    counts = {"done": 0, "current": 0}
    failed = []
    for unit in units:
        folder = run.stage_dir(unit, stage)
        with scene_lock(run.work, unit):
            try:
                params = params_of(unit)
                if not force and is_current(folder, stage, STAGE_VERSION, params):
                    counts["current"] += 1
                    continue
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                made = work_on(unit, folder)
                write_sentinel(folder, stage, STAGE_VERSION, params, made)
                counts["done"] += 1
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                failed.append(f"  failed {unit} ({run.raster(unit)}): {message}")
                append_failure(
                    run.work,
                    {
                        "stage": stage,
                        "scene": unit,
                        "raster": str(run.raster(unit)),
                        "error": message,
                        "traceback": traceback.format_exc(),
                    },
                )
    print(f"{stage}: {counts['done']} done, {counts['current']} already done, {len(failed)} failed")
    print("\n".join(failed), end="\n" if failed else "")
    return EXIT_FAILURES if failed else EXIT_OK


def raster_stats(run: PatchesRun, unit: str, folder: Path) -> dict[str, int]:
    """Pass 1 for one raster: its clip statistics into ``folder``."""
    cfg = run.config
    with raster_env(), ExitStack() as files:
        src, info, bands = tiling.open_checked(run.raster(unit), cfg, files, run.max_pixels)
        with Progress(tiling.clip_steps(info, bands, cfg), f"stats {unit}") as progress:
            acc = tiling.raster_clip_stats(src, info, bands, cfg, progress)
    atomic_write_npz(folder / STATS_FILE, acc.state())
    return {"pixels": acc.count}


def raster_tiles(
    run: PatchesRun, unit: str, folder: Path, bounds: tuple[float, float]
) -> dict[str, int]:
    """Pass 2 for one raster: its patches into shards in ``folder``, their table rows and its
    manifest entry beside them."""
    cfg = run.config
    with raster_env(), ExitStack() as files:
        src, info, bands = tiling.open_checked(run.raster(unit), cfg, files, run.max_pixels)
        channels = tiling.channels_of(cfg, bands)
        writer = tiling.ShardWriter(folder, cfg.shard_size, channels, cfg.patch_size, cfg.dtype)
        table = tiling.PatchTable()
        try:
            with Progress(tiling.tile_steps(info, bands, cfg), f"tile {unit}") as progress:
                counts = tiling.tile_raster(
                    src, 0, info, bands, cfg, bounds, writer, table, progress
                )
            shards = writer.finish()
        except BaseException as exc:
            writer.abort(exc)
            raise
        record = tiling.source_record(info, bands, run.out, counts)
    atomic_write_npz(folder / TABLE_FILE, table.columns())
    atomic_write_json(folder / SOURCE_FILE, {"source": record, "shards": shards})
    return counts


# -- the set from every raster's patches ---------------------------------------------------------


@dataclass(frozen=True)
class RasterTiles:
    """One raster's tile result: its manifest entry, its shards and its table columns."""

    folder: Path
    source: dict[str, Any]
    shards: list[dict[str, Any]]
    columns: dict[str, np.ndarray]

    @classmethod
    def read(cls, folder: Path) -> RasterTiles:
        written = read_json(folder / SOURCE_FILE)
        with np.load(folder / TABLE_FILE, allow_pickle=False) as arrays:
            columns = {key: arrays[key] for key in arrays.files}
        return cls(folder, dict(written["source"]), list(written["shards"]), columns)

    def patch_arrays(self, config: TilingConfig, channels: int) -> Iterator[np.ndarray]:
        """Each shard's (count x channels, P, P) records, memory-mapped and checked."""
        size = config.patch_size
        for shard in self.shards:
            path = self.folder / str(shard["path"])
            records = np.load(path, mmap_mode="r", allow_pickle=False)
            want = (int(shard["count"]) * channels, size, size)
            if records.shape != want or str(records.dtype) != config.dtype:
                raise InputError(
                    "a raster's tile result does not match its record; resubmit to redo it",
                    file=path,
                    expected=f"{want} {config.dtype}",
                    found=f"{records.shape} {records.dtype}",
                )
            yield records


def write_assembled(
    staging: Path,
    run: PatchesRun,
    bounds: tuple[float, float],
    parts: Sequence[RasterTiles],
) -> None:
    """The set from every raster's tiles, in input order, into ``staging``: the local run's
    shards (the same writer, the same patch order), table and manifest."""
    cfg = run.config
    channels = tiling.channels_of(cfg, tuple(parts[0].source["bands"]))
    total = sum(int(part.source["patches"]) for part in parts)
    with tiling.SetWriter(staging, run.out, cfg, channels) as new:
        with Progress(total, "sar patches: assembling shards") as progress:
            for index, part in enumerate(parts):
                for records in part.patch_arrays(cfg, channels):
                    for start in range(0, len(records), channels):
                        new.shards.add(records[start : start + channels])
                    progress.update(len(records) // channels)
                new.table.extend(index, part.columns)
                new.sources.append(part.source)
        new.finish(bounds, list(run.command))


def publish_from_tiles(run: PatchesRun, bounds: tuple[float, float]) -> Path:
    """Assemble and publish the set in ``run.out`` (under its lock, as a local run does), then
    remove the per-raster patches; returns the manifest path."""
    parts = [RasterTiles.read(run.stage_dir(unit, TILE)) for unit in run.units]
    with tiling.locked_output(run.out):
        tiling.publish_set(run.out, lambda staging: write_assembled(staging, run, bounds, parts))
    for unit in run.units:
        shutil.rmtree(run.stage_dir(unit, TILE), ignore_errors=True)
    return run.out / MANIFEST_NAME


def describe_set(manifest: Path) -> str:
    """``N patches in K shard(s), vmin ... dB, vmax ... dB -> PATH``."""
    from trainset.sar.manifest import load_manifest

    m = load_manifest(manifest)
    return (
        f"{m.num_patches} patches in {len(m.shards)} shard(s), "
        f"vmin {m.vmin:.4f} dB, vmax {m.vmax:.4f} dB -> {manifest}"
    )


def retry_command(run: PatchesRun) -> str:
    """The command that planned ``run``, for messages that say what to submit again."""
    return shlex.join(run.command) if run.command else "the same command"
