"""`trainset focus run --executor slurm`: the focus stages as chained sbatch array jobs.

Each scene step (deblur, depth, render) becomes an array job over the scenes whose sentinels
are missing or stale, running ``trainset focus <step> --out-root O --task-index I <flags>``;
calibrate and validate are single jobs over the set. Planning, resource checks and submission
are :mod:`trainset.pipeline.slurm`'s; this module knows which sentinels each step produces.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainset.cli import EXIT_OK
from trainset.pipeline.runner import SCENE_INDEX, is_scene_current, scene_ids
from trainset.pipeline.slurm import (
    TASK_INDEX,
    ClusterInfo,
    Runner,
    SceneStep,
    SetStep,
    SlurmConfig,
    Submission,
    load_slurm_config,
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


# Options of a step's command that each job sets itself: its output root, one scene per task.
_JOB_OWN_OPTIONS = ("--out-root", "--out_root", "--workers")


def job_words(step_argv: Sequence[str]) -> tuple[str, ...]:
    """The options of a `trainset focus` step command (``[name, options...]``) that its jobs
    pass on: all but ``--out-root`` and ``--workers`` (and their values)."""
    words: list[str] = []
    rest = iter(step_argv[1:])
    for word in rest:
        if word in _JOB_OWN_OPTIONS:
            next(rest, None)
            continue
        if word.split("=", 1)[0] in _JOB_OWN_OPTIONS:
            continue
        words.append(word)
    return tuple(words)


def genfocus_steps(args: argparse.Namespace) -> list[str]:
    """The steps of a run that use GenFocus (they get :data:`GENFOCUS_RESOURCES`)."""
    steps = []
    if getattr(args, "deblur_backend", None) == "genfocus":
        steps.append("deblur")
    if getattr(args, "renderer", None) == "genfocus":
        steps.append("render")
    return steps


def run_on_slurm(
    args: argparse.Namespace,
    steps: Sequence[Sequence[str]],
    *,
    runner: Runner = run_command,
    cluster: ClusterInfo | None = None,
) -> int:
    """`trainset focus run --executor slurm`.

    ``steps`` are the `trainset focus` commands (``[name, options...]``) the local run would
    run: index, deblur, depth, calibrate and, past the gate, render and validate. The index
    runs here (the arrays are sized by it); the rest is submitted as chained jobs whose
    commands are those steps with ``--task-index`` per scene. ``args`` needs ``raw_root``,
    ``out_root``, ``max_coc``, ``slurm_config`` and ``dry_run``.
    """
    from trainset.cli import build_parser
    from trainset.focus import stages  # noqa: F401  (registers the focus stages)
    from trainset.focus.calibration import resolve_max_coc
    from trainset.focus.cli import deblur_params, depth_params
    from trainset.focus.cli_phases import render_stage_params
    from trainset.focus.index import build_index

    parser = build_parser()
    argv = {step[0]: list(step) for step in steps}
    parsed = {name: parser.parse_args(["focus", *step]) for name, step in argv.items()}
    out = Path(args.out_root).resolve()
    config = load_slurm_config(args.slurm_config, genfocus_steps=genfocus_steps(args))
    command = ["trainset", "focus", "run", "--raw-root", str(Path(args.raw_root).resolve())]
    command += ["--out-root", str(out), "--executor", "slurm"]
    if args.slurm_config is not None:
        command += ["--slurm-config", str(Path(args.slurm_config).resolve())]
    index = parsed["index"]
    with tempfile.TemporaryDirectory(prefix="trainset-dry-run-") as scratch:
        index_root = out
        if not args.dry_run:
            print(
                build_index(
                    index.raw_root, out, min_frames=index.min_frames, seed=index.seed
                ).report()
            )
        elif not (out / SCENE_INDEX).is_file():
            index_root = Path(scratch)
            build_index(index.raw_root, index_root, min_frames=index.min_frames, seed=index.seed)
        scene_calls = [
            SceneCall(
                "deblur", {"deblur": deblur_params(parsed["deblur"])}, job_words(argv["deblur"])
            ),
            SceneCall("depth", {"depth": depth_params(parsed["depth"])}, job_words(argv["depth"])),
        ]
        set_calls = []
        stats_ready = "calibrate" not in argv  # run_steps calibrates unless usable stats exist
        if "calibrate" in argv:  # run_steps decided by calibration_needed
            set_calls.append(SetCall("calibrate", job_words(argv["calibrate"]), ("depth",)))
        if args.max_coc is not None:
            render_params: Mapping[str, Mapping[str, Any] | None] = {
                "labels": None,
                "renders": None,
            }
            if args.max_coc != "from-stats" or stats_ready:
                max_coc = resolve_max_coc(args.max_coc, out)
                render_params = render_stage_params(parsed["render"], max_coc)
            scene_calls.append(
                SceneCall("render", render_params, job_words(argv["render"]), ("calibrate",))
            )
            set_calls.append(SetCall("validate", job_words(argv["validate"]), ("render",)))
        submission = submit_focus(
            out,
            scene_calls,
            set_calls,
            config,
            command=command,
            dry_run=args.dry_run,
            index_root=index_root,
            runner=runner,
            cluster=cluster,
        )
    if args.dry_run:
        print(submission.dry_run_text(), end="")
        if not submission.resources_checked:
            print("# resources not checked: no SLURM controller answers `scontrol ping`")
    print(submission_report(submission))
    calibrate_job = next((j for j in submission.jobs if j["step"] == "calibrate"), None)
    if args.max_coc is None and calibrate_job is not None and not args.dry_run:
        log = out / "slurm" / "logs" / f"calibrate_{calibrate_job['job_id']}.out"
        print(
            f"manual gate: when calibrate (job {calibrate_job['job_id']}) has finished, "
            f"`trainset focus status --out-root {out}` and {log} show the recommended max_coc"
        )
        print("continue (scenes already done are not resubmitted) with")
        print(f"  {' '.join(command)} --max-coc from-stats   (or --max-coc VALUE)")
    return EXIT_OK
