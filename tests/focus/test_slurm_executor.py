"""Focus steps as SLURM submissions, without a cluster: which scenes, which commands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainset.cli import main
from trainset.focus.config import RunConfig
from trainset.focus.index import build_index
from trainset.focus.stages import DEBLUR
from trainset.focus.steps import plan_run, submission_report
from trainset.focus.synthetic import generate_scenes
from trainset.pipeline.plan import run_step_spec
from trainset.pipeline.runner import run_stage
from trainset.pipeline.slurm import SlurmConfig, parse_cluster, submit_plan
from trainset.store import read_json

# A cluster on which the plan's resources fit (72 CPUs, 4 GPUs, 480 GiB per node).
CLUSTER = parse_cluster(
    "PartitionName=cpu MaxTime=UNLIMITED State=UP\nPartitionName=gpu MaxTime=UNLIMITED State=UP\n",
    "NodeName=g1 CPUTot=72 Gres=gpu:4 RealMemory=491520 State=IDLE Partitions=cpu,gpu\n",
)
IDS = ["scene_000", "scene_001", "scene_002"]


@pytest.fixture
def indexed(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=3, n_frames=2, size=(16, 16))
    build_index(raw, out, min_frames=2)
    return raw, out


def _no_commands(argv):
    raise AssertionError(f"ran {argv}")


def _config(raw, out, **kw):
    return RunConfig(raw, out, **kw)


def test_pending_scenes_are_those_without_a_current_sentinel(indexed):
    raw, out = indexed
    config = _config(raw, out)
    assert run_stage(DEBLUR, out, ["scene_001"], config.deblur.stage_params()).exit_code == 0
    plan = {step.name: step for step in plan_run(config, IDS).steps}
    assert plan["deblur"].pending == {"scene_000", "scene_002"}
    assert plan["depth"].pending == set(IDS)
    assert [s.name for s in plan_run(config, IDS).steps] == ["deblur", "depth", "calibrate"]


def test_dry_run_maps_scenes_to_task_indices_and_jobs_run_the_step_specs(indexed):
    raw, out = indexed
    config = _config(raw, out)
    run_stage(DEBLUR, out, ["scene_001"], config.deblur.stage_params())
    plan = plan_run(config, IDS, command=["trainset", "focus", "run"])
    resources = {step.name: step.resources for step in plan.steps}
    submission = submit_plan(
        plan, SlurmConfig(resources), dry_run=True, runner=_no_commands, cluster=CLUSTER
    )
    arrays = [argv[3] for argv in submission.commands[:3]]
    assert arrays == ["--array=0,2%32", "--array=0,2%16", "--array=1%16"]
    root = out.resolve()
    spec = root / "slurm" / "deblur.step.json"
    assert (root / "slurm" / "deblur.sh").read_text().splitlines()[-1] == (
        f"exec {sys.executable} -m trainset step {spec} --unit-index "
        '"$((SLURM_ARRAY_TASK_ID + ${TRAINSET_TASK_OFFSET:-0}))"'
    )
    written = read_json(spec)
    assert written["action"] == "trainset.focus.steps:deblur_action"
    assert written["units"] == IDS and written["out_root"] == str(root)
    assert written["params"] == {"backend": "passthrough", "options": [], "sharpness_ratio": 0.25}
    calibrate = (root / "slurm" / "calibrate.sh").read_text().splitlines()[-1]
    assert calibrate == (
        f"exec {sys.executable} -m trainset step {root / 'slurm' / 'calibrate.step.json'}"
    )
    assert [job["units"] for job in submission.jobs[:3]] == [
        ["scene_000", "scene_002"],
        ["scene_000", "scene_002"],
        ["scene_001"],
    ]
    assert submission_report(submission).splitlines()[0] == ("would submit deblur     (2 scenes)")


def test_a_job_runs_its_unit_through_the_same_action(indexed, capsys):
    raw, out = indexed
    plan = plan_run(_config(raw, out), IDS)
    resources = {step.name: step.resources for step in plan.steps}
    submit_plan(plan, SlurmConfig(resources), dry_run=True, runner=_no_commands, cluster=CLUSTER)
    spec = out.resolve() / "slurm" / "deblur.step.json"
    assert run_step_spec(spec, 2) == 0
    assert [s for s in IDS if DEBLUR.done(out, s)] == ["scene_002"]
    assert "deblur: 1 done" in capsys.readouterr().out
    assert main(["step", str(spec), "--unit-index", "3"]) == 2


def test_dry_run_prints_plan_resources_and_dependencies_without_a_cluster(tmp_path):
    raw = tmp_path / "raw"
    generate_scenes(raw, n_scenes=2, n_frames=2, size=(16, 16))
    args = ["focus", "run", "--raw-root", str(raw), "--out-root", str(tmp_path / "out")]
    args += ["--min-frames", "2", "--executor", "slurm", "--dry-run", "--max-coc", "from-stats"]
    # No SLURM client on PATH: nothing can be submitted, resources cannot be checked.
    result = subprocess.run(
        [sys.executable, "-m", "trainset", *args],
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


def test_slurm_dry_run_with_vda_never_reads_the_checkpoint(tmp_path):
    """The checkpoint is a FIFO: reading it would block (the timeout fails the test)."""
    raw = tmp_path / "raw"
    generate_scenes(raw, n_scenes=2, n_frames=2, size=(16, 16))
    fifo = tmp_path / "metric_video_depth_anything_vitl.pth"
    os.mkfifo(fifo)
    args = ["focus", "run", "--raw-root", str(raw), "--out-root", str(tmp_path / "out")]
    args += ["--min-frames", "2", "--executor", "slurm", "--dry-run"]
    args += ["--depth-backend", "vda", "--checkpoint", str(fifo), "--device", "cuda"]
    result = subprocess.run(
        [sys.executable, "-m", "trainset", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path / "no-slurm")},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    depth = read_json(tmp_path / "out" / "slurm" / "depth.step.json")
    assert depth["params"]["checkpoint"] == str(fifo)
