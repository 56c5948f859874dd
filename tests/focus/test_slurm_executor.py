"""Focus steps as SLURM submissions, without a cluster: which scenes, which commands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainset.cli import main
from trainset.focus import stages  # noqa: F401  (registers the focus stages)
from trainset.focus.index import build_index
from trainset.focus.slurm_executor import (
    SceneCall,
    SetCall,
    job_words,
    pending_scenes,
    submission_report,
    submit_focus,
)
from trainset.focus.synthetic import generate_scenes
from trainset.pipeline.runner import run_stage
from trainset.pipeline.slurm import PLAN_RESOURCES, SlurmConfig, parse_cluster
from trainset.pipeline.stage import get_stage

DEBLUR_PARAMS = {"backend": "passthrough", "options": {}, "backend_params": {}, "x": 1}
# A cluster on which the plan's resources fit (72 CPUs, 4 GPUs, 480 GiB per node).
CLUSTER = parse_cluster(
    "PartitionName=cpu MaxTime=UNLIMITED State=UP\nPartitionName=gpu MaxTime=UNLIMITED State=UP\n",
    "NodeName=g1 CPUTot=72 Gres=gpu:4 RealMemory=491520 State=IDLE Partitions=cpu,gpu\n",
)


@pytest.fixture
def indexed(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=3, n_frames=2, size=(16, 16))
    build_index(raw, out, min_frames=2)
    return out


def _no_commands(argv):
    raise AssertionError(f"ran {argv}")


def test_pending_scenes_are_those_without_a_current_sentinel(indexed):
    ids = ["scene_000", "scene_001", "scene_002"]
    summary = run_stage(get_stage("deblur"), indexed, ["scene_001"], DEBLUR_PARAMS)
    assert summary.exit_code == 0
    assert pending_scenes(indexed, ids, {"deblur": DEBLUR_PARAMS}) == {0, 2}
    assert pending_scenes(indexed, ids, {"deblur": {**DEBLUR_PARAMS, "x": 2}}) == {0, 1, 2}
    assert pending_scenes(indexed, ids, {"deblur": None}) == {0, 1, 2}


def test_dry_run_maps_scenes_to_task_indices_and_runs_trainset_commands(indexed):
    run_stage(get_stage("deblur"), indexed, ["scene_001"], DEBLUR_PARAMS)
    submission = submit_focus(
        indexed,
        [
            SceneCall("deblur", {"deblur": DEBLUR_PARAMS}, ("--backend", "passthrough")),
            SceneCall("depth", {"depth": None}),
        ],
        [SetCall("calibrate", ("--sample-fraction", "0.2"), ("depth",))],
        SlurmConfig(dict(PLAN_RESOURCES)),
        command=["trainset", "focus", "run"],
        dry_run=True,
        runner=_no_commands,
        cluster=CLUSTER,
    )
    arrays = [argv[3] for argv in submission.commands[:3]]
    assert arrays == ["--array=0,2%32", "--array=0,2%16", "--array=1%16"]
    root = indexed.resolve()
    script = (root / "slurm" / "deblur.sh").read_text().splitlines()[-1]
    assert script == (
        f"exec {sys.executable} -m trainset.cli focus deblur --out-root {root} --task-index "
        '"$((SLURM_ARRAY_TASK_ID + ${TRAINSET_TASK_OFFSET:-0}))" --backend passthrough'
    )
    calibrate = (root / "slurm" / "calibrate.sh").read_text().splitlines()[-1]
    assert calibrate == (
        f"exec {sys.executable} -m trainset.cli focus calibrate --out-root {root} "
        "--sample-fraction 0.2"
    )
    assert [job["units"] for job in submission.jobs[:3]] == [
        ["scene_000", "scene_002"],
        ["scene_000", "scene_002"],
        ["scene_001"],
    ]
    assert submission_report(submission).splitlines()[0] == ("would submit deblur     (2 scenes)")


def test_job_words_drop_out_root_and_workers_and_keep_step_options():
    step = ["depth", "--out-root", "/o", "--workers", "4", "--backend", "vda", "--out_root=/p"]
    assert job_words(step) == ("--backend", "vda")


def test_dry_run_prints_plan_resources_and_dependencies_without_a_cluster(tmp_path):
    raw = tmp_path / "raw"
    generate_scenes(raw, n_scenes=2, n_frames=2, size=(16, 16))
    args = ["focus", "run", "--raw-root", str(raw), "--out-root", str(tmp_path / "out")]
    args += ["--min-frames", "2", "--executor", "slurm", "--dry-run", "--max-coc", "from-stats"]
    # No SLURM client on PATH: nothing can be submitted, resources cannot be checked.
    result = subprocess.run(
        [sys.executable, "-m", "trainset.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path / "no-slurm")},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --mem=48G",
        "#SBATCH --time=06:00:00",
        "#SBATCH --mem=80G",
        "#SBATCH --partition=cpu",
        "#SBATCH --mem=16G",
        "# resources not checked: no SLURM controller answers `scontrol ping`",
    ):
        assert expected in lines
    sbatch = [line for line in lines if line.startswith("JOB_")]
    assert len(sbatch) == 5
    assert "--array=0-1%32" in sbatch[0]
    assert (
        '--array=0-1%16 "--dependency=aftercorr:$JOB_deblur_0_0" --kill-on-invalid-dep=yes'
        in (sbatch[1])
    )
    assert '"--dependency=afterany:$JOB_depth_0_0" --kill-on-invalid-dep=yes' in sbatch[2]
    assert sbatch[2].startswith("JOB_calibrate=")
    assert (
        '--array=0-1%16 "--dependency=aftercorr:$JOB_depth_0_0,afterok:$JOB_calibrate"' in sbatch[3]
    )
    assert '"--dependency=afterany:$JOB_render_0_0" --kill-on-invalid-dep=yes' in sbatch[4]
    assert not (tmp_path / "out" / "slurm" / "jobs.json").exists()
    assert not (tmp_path / "out" / "scene_index.json").exists()


def test_dry_run_with_local_executor_is_a_usage_error(tmp_path, capsys):
    args = ["focus", "run", "--raw-root", str(tmp_path), "--out-root", str(tmp_path / "o")]
    code = main([*args, "--dry-run"])
    assert code == 2
    assert "--dry-run only applies to the SLURM executor" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
