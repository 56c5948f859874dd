"""Focus steps as SLURM submissions, without a cluster: which scenes, which commands."""

from __future__ import annotations

import argparse
import sys

import pytest

from trainset.focus import stages  # noqa: F401  (registers the focus stages)
from trainset.focus.index import build_index
from trainset.focus.slurm_executor import (
    SceneCall,
    SetCall,
    forwarded_argv,
    pending_scenes,
    step_args,
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


def test_run_options_reach_the_step_only_when_not_default():
    run_args = argparse.Namespace(
        out_root="o",
        workers=4,
        backend="unsharp",
        backend_option=["amount=2", "radius=1"],
        median_range=[1.0, 9.0],
        consistency_threshold=0.15,
        unrelated=3,
    )
    assert forwarded_argv("depth", run_args) == (
        "--backend",
        "unsharp",
        "--backend-option",
        "amount=2",
        "--backend-option",
        "radius=1",
        "--median-range",
        "1.0",
        "9.0",
    )


def test_step_args_parse_like_the_job_command(tmp_path):
    args = step_args("deblur", argparse.Namespace(sharpness_ratio=0.5), tmp_path)
    assert (args.out_root, args.backend, args.sharpness_ratio) == (tmp_path, "passthrough", 0.5)
