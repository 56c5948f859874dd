"""The SLURM steps of `sar patches` under kills: the set in --out is at every moment a complete,
verifiable set, as with a local run (test_sar_patches.py), and what a killed job leaves is
cleared by the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rasterio")

import trainset.store.atomic as atomic
from trainset.pipeline.plan import Plan, run_step, spec_path, write_step_spec
from trainset.sar.config import QualityFilter, TilingConfig
from trainset.sar.manifest import load_manifest
from trainset.sar.steps import plan_patches
from trainset.sar.tiling import build_patches
from trainset.sar.verify import verify_patch_files
from trainset.testing.sar_rasters import speckle_amplitude_dn, write_geotiff
from trainset.testing.sar_sets import set_files

# 32-pixel patches every 16 pixels, all kept, 7 patches per shard: 9 + 12 patches, 3 shards.
CONFIG = TilingConfig(
    patch_size=32, stride=16, units="amplitude", quality=QualityFilter(0.0, 1.0, 0.0), shard_size=7
)


def source_names(out: Path) -> list[str]:
    return [Path(s["path"]).name for s in load_manifest(out).sources]


def run_job(plan: Plan, step: str, kill_at: int | None = None) -> int:
    """The step as a SLURM job runs it, ``python -m trainset step SPEC`` in a child process
    (unit 0 of a per-raster step)."""
    spec = write_step_spec(spec_path(plan.out_root, step), plan_step(plan, step), plan.out_root)
    env = dict(os.environ)
    env.pop(atomic.FAULT_ENV, None)
    if kill_at is not None:
        env[atomic.FAULT_ENV] = str(kill_at)
    argv = [sys.executable, "-m", "trainset", "step", str(spec)]
    if plan_step(plan, step).units is not None:
        argv += ["--unit-index", "0"]
    return subprocess.run(argv, env=env, capture_output=True, check=False).returncode


def plan_step(plan: Plan, name: str):
    return next(step for step in plan.steps if step.name == name)


def test_a_manifest_job_killed_at_any_rename_leaves_the_old_or_the_new_set(tmp_path):
    old = write_geotiff(tmp_path / "old.tif", speckle_amplitude_dn((48, 48), seed=1))
    new = [
        write_geotiff(tmp_path / f"new{n}.tif", speckle_amplitude_dn(size, seed=n))
        for n, size in ((2, (64, 64)), (3, (64, 80)))
    ]
    out = tmp_path / "set"
    plan = plan_patches(new, out, CONFIG)
    for step in ("stats", "bounds", "tile"):
        assert run_step(plan_step(plan, step), plan.out_root) == 0
    outcomes: list[int] = []
    for kill_at in range(1, 50):
        build_patches([old], out, CONFIG, show_progress=False)
        outcomes.append(run_job(plan, "manifest", kill_at))
        assert verify_patch_files(out, deep=True) == [], f"killed before rename {kill_at}"
        assert source_names(out) in (["old.tif"], ["new2.tif", "new3.tif"])
        if outcomes[-1] == 0:
            break
    # three shards, the table, the manifest and the swap were fault points before it completed
    assert outcomes == [-signal.SIGKILL] * 6 + [0]
    build_patches(new, tmp_path / "local", CONFIG, show_progress=False)
    assert set_files(out) == set_files(tmp_path / "local")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".set.work"]


def test_a_tile_job_killed_at_any_rename_is_redone_by_the_next_one(tmp_path):
    src = write_geotiff(tmp_path / "a.tif", speckle_amplitude_dn((64, 80), seed=4))
    out = tmp_path / "set"
    plan = plan_patches([src], out, CONFIG)
    for step in ("stats", "bounds"):
        assert run_step(plan_step(plan, step), plan.out_root) == 0
    tile = plan_step(plan, "tile")
    assert run_job(plan, "tile", kill_at=2) == -signal.SIGKILL
    again = plan_patches([src], out, CONFIG)
    assert plan_step(again, "tile").pending == set(tile.units or ())
    assert run_job(again, "tile") == 0
    assert run_job(again, "manifest") == 0
    build_patches([src], tmp_path / "local", CONFIG, show_progress=False)
    assert set_files(out) == set_files(tmp_path / "local")
