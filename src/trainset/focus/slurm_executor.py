"""`trainset focus run --executor slurm`: the focus stages as chained sbatch array jobs.

Each scene step (deblur, depth, render) becomes an array job over the scenes whose sentinels
are missing or stale, running ``trainset focus <step> --out-root O --task-index I <flags>``;
calibrate and validate are single jobs over the set. Planning, resource checks and submission
are :mod:`trainset.pipeline.slurm`'s; this module knows which sentinels each step produces.
"""

from __future__ import annotations

import argparse
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

# Options of a step's sub-command that the submission sets itself (or that make no sense in a job).
NOT_FORWARDED = frozenset(
    {"help", "out_root", "raw_root", "scene", "task_index", "workers", "force"}
)


def step_parser(step: str) -> argparse.ArgumentParser:
    """The parser of `trainset focus {step}`."""
    from trainset.cli import build_parser

    parser: argparse.ArgumentParser = build_parser()
    for name in ("focus", step):
        parser = _subparser(parser, name)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    raise KeyError(f"no sub-command {name!r}")


def forwarded_argv(step: str, run_args: argparse.Namespace) -> tuple[str, ...]:
    """Options of `trainset focus {step}` that ``run_args`` (the `run` command's options) sets
    to other than the step's default, as command-line words for the step's jobs."""
    words: list[str] = []
    for action in step_parser(step)._actions:
        if not action.option_strings or action.dest in NOT_FORWARDED:
            continue
        if not hasattr(run_args, action.dest):
            continue
        value = getattr(run_args, action.dest)
        if value == action.default or value is None:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            words.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words += [flag, str(item)]
        elif isinstance(value, list | tuple):
            words += [flag, *(str(item) for item in value)]
        else:
            words += [flag, str(value)]
    return tuple(words)


def step_args(step: str, run_args: argparse.Namespace, out_root: Path) -> argparse.Namespace:
    """The options `trainset focus {step}` gets in a job: the forwarded ones, else its defaults."""
    return step_parser(step).parse_args(
        ["--out-root", str(out_root), *forwarded_argv(step, run_args)]
    )


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
