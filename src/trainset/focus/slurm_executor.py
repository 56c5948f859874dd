"""`trainset focus run --executor slurm`: the focus stages as chained sbatch array jobs.

Each scene step (deblur, depth, render) becomes an array job over the scenes whose sentinels
are missing or stale, running ``trainset focus <step> --out-root O --task-index I <flags>``;
calibrate and validate are single jobs over the set. Planning, resource checks and submission
are :mod:`trainset.pipeline.slurm`'s; this module knows which sentinels each step produces.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainset.pipeline.runner import is_scene_current, scene_ids
from trainset.pipeline.slurm import (
    TASK_INDEX,
    ClusterInfo,
    Runner,
    SceneStep,
    SetStep,
    SlurmConfig,
    Submission,
    run_command,
    submit,
)
from trainset.pipeline.stage import get_stage


@dataclass(frozen=True)
class SceneCall:
    """A scene step: ``trainset focus {name}`` per scene, producing the sentinels of the stages
    in ``stage_params`` (stage name -> the parameters its sentinel must match; None when they
    are not known before the job runs, so every scene counts as pending)."""

    name: str
    stage_params: Mapping[str, Mapping[str, Any] | None]
    flags: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetCall:
    """A whole-set step ``trainset focus {name}`` run after every job of ``after`` ended."""

    name: str
    flags: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


def _trainset(name: str, out_root: Path) -> tuple[str, ...]:
    return (sys.executable, "-m", "trainset.cli", "focus", name, "--out-root", str(out_root))


def pending_scenes(
    out_root: Path, ids: Sequence[str], stage_params: Mapping[str, Mapping[str, Any] | None]
) -> frozenset[int]:
    """Indices (in sorted ``ids``) of scenes lacking a current sentinel of any given stage."""
    pending = set()
    for index, scene_id in enumerate(ids):
        for name, params in stage_params.items():
            if params is None or not is_scene_current(get_stage(name), out_root, scene_id, params):
                pending.add(index)
                break
    return frozenset(pending)


def submit_focus(
    out_root: Path,
    scene_calls: Sequence[SceneCall],
    set_calls: Sequence[SetCall],
    config: SlurmConfig,
    *,
    command: Sequence[str],
    dry_run: bool = False,
    index_root: Path | None = None,
    runner: Runner = run_command,
    cluster: ClusterInfo | None = None,
) -> Submission:
    """Submit (or describe, on ``dry_run``) the focus steps for ``out_root``.

    ``index_root`` is where the scene index is read from when it differs from ``out_root``
    (a dry run that must not write the index there). ``command`` is recorded in
    ``slurm/jobs.json`` so `status` can print the command that continues after the gate.
    """
    root = Path(out_root).resolve()
    ids = scene_ids(index_root if index_root is not None else root)
    scene_steps = [
        SceneStep(
            call.name,
            (*_trainset(call.name, root), "--task-index", TASK_INDEX, *call.flags),
            pending_scenes(root, ids, call.stage_params),
            call.needs,
        )
        for call in scene_calls
    ]
    set_steps = [
        SetStep(call.name, (*_trainset(call.name, root), *call.flags), call.after)
        for call in set_calls
    ]
    return submit(
        root,
        scene_steps,
        set_steps,
        config,
        dry_run=dry_run,
        runner=runner,
        cluster=cluster,
        note={"command": list(command)},
        unit_names=ids,
    )


def submission_report(submission: Submission) -> str:
    """One line per job: step, job id (none on a dry run), how many scenes."""
    lines = []
    for job in submission.jobs:
        tasks = job.get("tasks")
        scope = f"{len(tasks)} scenes" if tasks is not None else "whole set"
        if "job_id" in job:
            lines.append(f"submitted {job['step']:<10} job {job['job_id']:>8}  ({scope})")
        else:
            lines.append(f"would submit {job['step']:<10} ({scope})")
    if not submission.jobs:
        lines.append("nothing to submit: every scene's sentinels are current")
    return "\n".join(lines)
