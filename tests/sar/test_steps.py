"""`sar patches` as a plan of per-raster steps (what SLURM runs), executed here: the same set as
the local run, byte for byte; resubmission plans only what is not current; dry runs and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainset.sar.tiling as tiling
from trainset.cli import main
from trainset.errors import InputError
from trainset.pipeline.plan import run_locally
from trainset.pipeline.slurm import SlurmOptions, parse_cluster, read_jobs
from trainset.sar.config import ClipSpec, QualityFilter, TilingConfig
from trainset.sar.manifest import load_manifest
from trainset.sar.steps import RESOURCES, plan_patches, run_patches
from trainset.sar.workdir import TILE, unit_ids, work_folder
from trainset.testing.sar_rasters import speckle_amplitude_dn, speckle_intensity, write_geotiff
from trainset.testing.sar_sets import set_files

# 32-pixel patches every 16 pixels, all kept, 7 patches per shard: shards cross rasters.
BASE: dict[str, Any] = {
    "patch_size": 32,
    "stride": 16,
    "quality": QualityFilter(0.0, 1.0, 0.0),
    "shard_size": 7,
}
# A cluster whose cpu partition fits the SAR defaults (8 CPUs, 32 GiB).
CLUSTER = parse_cluster(
    "PartitionName=cpu MaxTime=UNLIMITED State=UP\n",
    "NodeName=c1 CPUTot=8 RealMemory=32768 State=IDLE Partitions=cpu\n",
)


def _no_commands(argv):
    raise AssertionError(f"ran {argv}")


@pytest.fixture
def rasters(tmp_path: Path) -> list[Path]:
    """Three rasters of different sizes; the first with nodata rows."""
    a = speckle_amplitude_dn((96, 112), seed=1)
    a[:10] = 7
    return [
        write_geotiff(tmp_path / "a.tif", a, nodata=7),
        write_geotiff(tmp_path / "b.tif", speckle_amplitude_dn((64, 80), seed=2)),
        write_geotiff(tmp_path / "c.tif", speckle_amplitude_dn((80, 64), seed=3)),
    ]


def config(**kw) -> TilingConfig:
    return TilingConfig(**{**BASE, "units": "amplitude", **kw})


def run_plan(sources, out, cfg) -> int:
    return run_locally(plan_patches(sources, out, cfg)).exit_code


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"clip": ClipSpec.parse("sigma:2")},
        {"clip": ClipSpec.parse("fixed:20,70"), "dtype": "float16"},
        {"quality": QualityFilter(0.01, 0.99, 0.9), "stride": 32},
    ],
    ids=["percentile", "sigma", "fixed-float16", "filtered"],
)
def test_the_steps_build_the_local_set_byte_for_byte(rasters, tmp_path, kw):
    tiling.build_patches(rasters, tmp_path / "local", config(**kw), show_progress=False)
    assert run_plan(rasters, tmp_path / "steps", config(**kw)) == 0
    assert set_files(tmp_path / "steps") == set_files(tmp_path / "local")
    assert shards_mixing_rasters(tmp_path / "steps") > 0


def shards_mixing_rasters(folder: Path) -> int:
    """Shards holding patches of more than one raster."""
    manifest = load_manifest(folder)
    ends = np.cumsum(manifest.patch_counts())
    sources = manifest.source_of_patches()
    return sum(
        len(set(sources[end - n : end])) > 1 for n, end in zip(manifest.patch_counts(), ends)
    )


def test_stacked_bands_from_the_steps_equal_the_local_set(tmp_path):
    two = [
        write_geotiff(tmp_path / f"{n}.tif", speckle_amplitude_dn((2, 64, 72), seed=n))
        for n in (1, 2)
    ]
    cfg = config(band_mode="stack")
    tiling.build_patches(two, tmp_path / "local", cfg, show_progress=False)
    assert run_plan(two, tmp_path / "steps", cfg) == 0
    assert set_files(tmp_path / "steps") == set_files(tmp_path / "local")


def test_float_rasters_with_nan_nodata_give_the_local_set(tmp_path):
    data = speckle_intensity((72, 90), seed=4)
    data[:12, :12] = np.nan
    srcs = [
        write_geotiff(tmp_path / "f.tif", data, nodata=float("nan")),
        write_geotiff(tmp_path / "g.tif", speckle_intensity((64, 64), seed=5, mean=0.3)),
    ]
    cfg = TilingConfig(**{**BASE, "clip": ClipSpec.parse("sigma:3")})
    tiling.build_patches(srcs, tmp_path / "local", cfg, show_progress=False)
    assert run_plan(srcs, tmp_path / "steps", cfg) == 0
    assert set_files(tmp_path / "steps") == set_files(tmp_path / "local")


def test_the_plan_lists_the_four_steps_over_rasters_in_input_order(rasters, tmp_path):
    plan = plan_patches(rasters, tmp_path / "out", config())
    units = unit_ids([r.resolve() for r in rasters])
    assert [s.name for s in plan.steps] == ["stats", "bounds", "tile", "manifest"]
    assert [s.units for s in plan.steps] == [units, None, units, None]
    assert plan.steps[0].pending == set(units)
    assert plan.steps[2].pending is None  # the bounds are not known yet
    assert [s.after for s in plan.steps] == [(), ("stats",), ("bounds",), ("tile",)]
    assert plan.out_root == (tmp_path / ".out.work").resolve()
    assert {s.name: s.resources for s in plan.steps} == RESOURCES


def test_fixed_bounds_need_no_statistics_steps(rasters, tmp_path):
    plan = plan_patches(rasters, tmp_path / "out", config(clip=ClipSpec.parse("fixed:20,70")))
    assert [(s.name, s.after) for s in plan.steps] == [("tile", ()), ("manifest", ("tile",))]
    assert plan.steps[0].pending == set(unit_ids([r.resolve() for r in rasters]))


def test_a_raster_whose_tiling_failed_is_the_only_one_planned_again(
    rasters, tmp_path, monkeypatch, capsys
):
    out, cfg = tmp_path / "out", config()
    real = tiling.tile_raster

    def failing(src, index, info, *args):
        if info.path.name == "b.tif":
            raise OSError(5, "Input/output error", str(info.path))
        return real(src, index, info, *args)

    monkeypatch.setattr(tiling, "tile_raster", failing)
    assert run_plan(rasters, out, cfg) == 1
    printed = capsys.readouterr().out
    monkeypatch.setattr(tiling, "tile_raster", real)
    b_unit = unit_ids([rasters[1].resolve()])[0]
    assert "tile: 2 done, 0 already done, 1 failed" in printed
    assert f"no set published: 1 of 3 raster(s) are not tiled\n  {b_unit} (" in printed
    assert "tile failed: OSError: [Errno 5] Input/output error" in printed
    assert not out.exists()

    again = plan_patches(rasters, out, cfg)
    assert [(s.name, s.pending) for s in again.steps] == [
        ("stats", frozenset()),
        ("tile", frozenset({b_unit})),
        ("manifest", None),
    ]
    assert run_locally(again).exit_code == 0
    assert "tile: 1 done, 2 already done, 0 failed" in capsys.readouterr().out
    tiling.build_patches(rasters, tmp_path / "local", cfg, show_progress=False)
    assert set_files(out) == set_files(tmp_path / "local")


def test_a_changed_raster_redoes_its_statistics_and_every_tile(rasters, tmp_path):
    out, cfg = tmp_path / "out", config()
    assert run_plan(rasters, out, cfg) == 0
    write_geotiff(rasters[2], speckle_amplitude_dn((80, 64), seed=9))
    plan = plan_patches(rasters, out, cfg)
    units = unit_ids([r.resolve() for r in rasters])
    assert [(s.name, s.pending) for s in plan.steps] == [
        ("stats", frozenset({units[2]})),
        ("bounds", None),
        ("tile", None),
        ("manifest", None),
    ]


def test_a_raster_without_valid_pixels_fails_the_bounds_and_publishes_nothing(
    rasters, tmp_path, capsys
):
    out, cfg = tmp_path / "out", config()
    tiling.build_patches(rasters[:1], out, cfg, show_progress=False)
    before = set_files(out)
    empty = write_geotiff(tmp_path / "empty.tif", np.full((64, 64), 7, np.uint16), nodata=7)
    plan = plan_patches([*rasters, empty], out, cfg)
    result = run_locally(plan)
    text = capsys.readouterr().out
    assert [code for _, code in result.codes] == [1, 1]  # stats, bounds; tile stops the run
    assert isinstance(result.stopped_by, InputError)
    assert "clip bounds need every raster's statistics; 1 lack them:" in text
    assert "stats failed: InputError:" in text and "raster holds no valid pixel" in text
    assert run_locally(plan_patches([*rasters, empty], out, cfg)).exit_code == 1
    assert set_files(out) == before


def test_publishing_removes_the_per_raster_patches_and_keeps_the_statistics(rasters, tmp_path):
    out = tmp_path / "out"
    assert run_plan(rasters, out, config()) == 0
    work = work_folder(out.resolve())
    units = unit_ids([r.resolve() for r in rasters])
    assert [(work / u / TILE).exists() for u in units] == [False] * 3
    assert [(work / u / "stats" / ".done").is_file() for u in units] == [True] * 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".out.work"]


def test_unit_names_are_safe_folder_names_and_a_raster_given_twice_gets_two(tmp_path):
    a = tmp_path / "S1A VV..db.tif"
    units = unit_ids([a, tmp_path / "b.tif", a])
    assert units[0].startswith("S1A_VV_db-") and units[2] == units[0] + "-2"
    assert all("/" not in u and ".." not in u and not u.startswith(".") for u in units)
    assert len(set(units)) == 3


def test_dry_run_writes_and_prints_the_scripts_and_submits_nothing(rasters, tmp_path, capsys):
    out = tmp_path / "out"
    options = SlurmOptions(dry_run=True, runner=_no_commands, cluster=CLUSTER)
    assert run_patches(rasters, out, config(), executor="slurm", slurm=options) == 0
    text = capsys.readouterr().out
    slurm = work_folder(out.resolve()) / "slurm"
    assert sorted(p.name for p in slurm.glob("*.sh")) == [
        "bounds.sh", "manifest.sh", "stats.sh", "tile.sh",
    ]  # fmt: skip
    assert f"# ---- {slurm / 'tile.sh'} (tile)" in text
    assert "--array=0-2" in text and "aftercorr:$JOB_stats_0_0,afterok:$JOB_bounds" in text
    assert "would submit stats      (3 rasters)" in text
    assert "would submit manifest   (whole set)" in text
    assert read_jobs(slurm.parent) == [] and not out.exists()


def test_cli_dry_run_prints_the_job_scripts(rasters, tmp_path, capsys):
    small = tmp_path / "slurm.yaml"
    small.write_text(
        "stages:\n" + "".join(f"  {s}: {{mem: 400M, time: '00:10:00'}}\n" for s in RESOURCES)
    )
    argv = ["sar", "patches", *map(str, rasters), "--out", str(tmp_path / "out")]
    argv += ["--units", "amplitude", "--patch-size", "32", "--executor", "slurm"]
    assert main([*argv, "--slurm-config", str(small), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --partition=cpu" in text and "#SBATCH --mem=400M" in text
    assert " -m trainset step " in text and "would submit tile " in text


def test_dry_run_with_the_local_executor_is_a_usage_error(rasters, tmp_path, capsys):
    argv = ["sar", "patches", str(rasters[0]), "--out", str(tmp_path / "o"), "--dry-run"]
    assert main(argv) == 2
    assert "--dry-run only applies to the SLURM executor" in capsys.readouterr().err


def test_a_config_naming_a_step_sar_does_not_have_is_refused(rasters, tmp_path):
    bad = tmp_path / "slurm.yaml"
    bad.write_text("stages:\n  render: {mem: 1G}\n")
    options = SlurmOptions(config_file=bad, dry_run=True, runner=_no_commands, cluster=CLUSTER)
    with pytest.raises(InputError, match=r"unknown step.*bounds.*manifest.*stats.*tile"):
        run_patches(rasters, tmp_path / "out", config(), executor="slurm", slurm=options)


def test_resources_the_cluster_cannot_give_are_refused_naming_each_step(rasters, tmp_path):
    big = tmp_path / "slurm.yaml"
    big.write_text("stages:\n  tile: {mem: 64G}\n  manifest: {partition: bigmem}\n")
    options = SlurmOptions(config_file=big, dry_run=True, runner=_no_commands, cluster=CLUSTER)
    with pytest.raises(
        InputError,
        match=r"tile: asks for 64G of memory .* manifest: partition 'bigmem' does not exist",
    ):
        run_patches(rasters, tmp_path / "out", config(), executor="slurm", slurm=options)
    assert list(work_folder((tmp_path / "out").resolve()).glob("slurm/*.sh")) == []


def test_bad_input_is_refused_when_planning(rasters, tmp_path):
    with pytest.raises(InputError, match="raster is smaller than one patch"):
        plan_patches(rasters, tmp_path / "out", config(patch_size=100))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif", "c.tif"]
