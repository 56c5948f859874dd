"""The focus pipeline as a plan of typed steps, run here or on SLURM: `trainset focus run`.

``run(config)`` indexes the raw set, plans the steps (:func:`plan_run`) and hands them to an
executor: :func:`trainset.pipeline.plan.run_locally` calls the actions below in this process,
:func:`trainset.pipeline.slurm.submit_plan` submits each as array jobs that call the same
actions. The stage commands (`trainset focus deblur`, ...) call the same actions too, so a
parameter means the same everywhere.

Steps and the sentinels they produce: ``deblur`` (frames_sharp), ``depth`` (depth_maps),
``calibrate`` (logs/coc_stats.json; whole set), ``render`` (focus_maps and bokeh_renders: the
``labels`` and ``renders`` stages), ``validate`` (logs/validation_report.json; whole set).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainset.cli_tools import EXIT_FAILURES, EXIT_OK, config_dict, config_from_dict
from trainset.errors import InputError
from trainset.focus.calibration import PLOT_FILE, STATS_FILE, calibrate, resolve_max_coc
from trainset.focus.config import (
    CalibrateConfig,
    DeblurConfig,
    DepthConfig,
    LensConfig,
    RenderConfig,
    RunConfig,
    labels_and_renders_params,
)
from trainset.focus.layout import SCENE_INDEX, read_scene_index
from trainset.focus.optics import DEFAULT_FOCUS_RANGE
from trainset.pipeline.dataset_files import (
    CONFIG_NAME,
    out_root_lock,
    read_config,
    record_config,
    write_text_if_changed,
)
from trainset.pipeline.plan import Plan, StageResources, Step, run_locally
from trainset.pipeline.slurm import ClusterInfo, Runner, run_command
from trainset.store import read_json

COMMAND_PREFIX = "trainset focus"
# The plan's SLURM blocks (focus-pipeline-plan.md, Phases 2-7): deblur %32 and depth/render %16
# on the GPU partition with one GPU; calibrate and validate on the CPU partition.
RESOURCES: dict[str, StageResources] = {
    "deblur": StageResources("gpu", 8, "48G", "04:00:00", "gpu:1", 32),
    "depth": StageResources("gpu", 8, "64G", "06:00:00", "gpu:1", 16),
    "calibrate": StageResources("cpu", 8, "32G", "01:00:00"),
    "render": StageResources("gpu", 8, "80G", "08:00:00", "gpu:1", 16),
    "validate": StageResources("cpu", 1, "16G", "00:30:00"),
}
# Steps that run GenFocus (FLUX.1-dev, 12B parameters) instead of the plan's models: host
# memory to load the bf16 weights (~24 GB transformer, ~10 GB T5 the first time a prompt is
# encoded), more time (28 flow steps per frame and render set). The GPU needs >= 48 GB (the
# official README reports ~45 GB peak); SLURM has no portable request for GPU memory, so a
# cluster with smaller GPUs needs the GPU type in ``gres`` (gpu:h100:1) or a node feature in
# ``constraint`` (docs/focus-genfocus.md, docs/slurm.md).
GENFOCUS_RESOURCES: dict[str, StageResources] = {
    "deblur": StageResources("gpu", 8, "96G", "08:00:00", "gpu:1", 32),
    "render": StageResources("gpu", 8, "96G", "24:00:00", "gpu:1", 16),
}
RENDER_ONLY = ("labels", "renders")


# -- actions: what the executors and the stage commands run ----------------------------------


def _scene_stage(
    stage_name: str,
    out_root: Path,
    units: Sequence[str] | None,
    params: Mapping[str, Any],
    workers: int,
    force: bool,
) -> int:
    from trainset.focus.stages import FOCUS_STAGES
    from trainset.pipeline.runner import run_stage

    stage = next(s for s in FOCUS_STAGES if s.name == stage_name)
    scenes = list(units) if units is not None else sorted(read_scene_index(out_root))
    summary = run_stage(
        stage, out_root, scenes, params, workers=workers, force=force, command_prefix=COMMAND_PREFIX
    )
    print(summary.report())
    return summary.exit_code


def deblur_action(
    out_root: Path,
    params: Mapping[str, Any],
    units: Sequence[str] | None,
    *,
    workers: int = 1,
    force: bool = False,
) -> int:
    """Phase 2 over ``units`` (scene ids; None: every scene)."""
    config = config_from_dict(DeblurConfig, dict(params))
    return _scene_stage("deblur", out_root, units, config.stage_params(), workers, force)


def depth_action(
    out_root: Path,
    params: Mapping[str, Any],
    units: Sequence[str] | None,
    *,
    workers: int = 1,
    force: bool = False,
) -> int:
    """Phase 3 over ``units``. A model backend loads its model here, before the scenes, so a
    bad checkpoint is an error of the invocation (planning never loads one)."""
    from trainset.focus.depth import depth_backend_for

    config = config_from_dict(DepthConfig, dict(params))
    stage_params = config.stage_params()
    prepare = getattr(depth_backend_for(stage_params), "prepare", None)
    if prepare is not None:
        prepare()
    return _scene_stage("depth", out_root, units, stage_params, workers, force)


def calibrate_action(
    out_root: Path,
    params: Mapping[str, Any],
    units: Sequence[str] | None = None,
    *,
    workers: int = 1,
    force: bool = False,
) -> int:
    """Phase 4 over the whole set: ``params`` = ``{calibrate, lens}``."""
    config = config_from_dict(CalibrateConfig, params["calibrate"])
    lens = config_from_dict(LensConfig, params["lens"])
    stats_path = Path(config.output_stats) if config.output_stats else None
    plot_path = Path(config.output_plot) if config.output_plot else None
    stats = calibrate(
        out_root,
        sample_fraction=config.sample_fraction,
        n_sets=lens.sets,
        coc_model=lens.coc_model,
        focus_range=lens.focus_range,
        stats_path=stats_path,
        plot_path=plot_path,
    )
    record_config(
        out_root,
        "calibrate",
        {
            "sample_fraction": config.sample_fraction,
            "n_sets": lens.sets,
            "coc_model": lens.coc_model,
            "focus_range": lens.focus_range,
        },
    )
    counts = stats["counts"]
    print(
        f"CoC over {counts['values']} values of {counts['frames']} frames, "
        f"{counts['scenes_used']} of the {counts['scenes_with_depth']} scenes with depth "
        f"({counts['scenes_total']} indexed; model {stats['coc_model']}, focus range "
        f"{stats['focus_range']}):"
    )
    for key in ("p50", "p90", "p95", "p99", "max"):
        print(f"  {key:>4} = {stats[key]:.6g} m ({stats[key] * 1e3:.4g} mm on the sensor)")
    if stats["scenes_without_depth"]:
        print(f"  not sampled (no depth): {', '.join(stats['scenes_without_depth'])}")
    rec = stats["recommended_max_coc"]
    print(f"recommended max_coc = p95 = {rec:.6g} m ({rec * 1e3:.4g} mm)")
    print(f"statistics: {stats_path or out_root / STATS_FILE}")
    print(f"histogram:  {plot_path or out_root / PLOT_FILE}")
    print("manual gate: check the value, then continue with")
    print(f"  trainset focus render --out-root {out_root} --max-coc {rec:.6g}")
    return EXIT_OK


def check_stats_match(out_root: Path, lens: LensConfig) -> None:
    """With ``--max-coc from-stats`` the calibration must describe the same CoC model, sets and
    focus range (statistics written before ``focus_range`` existed were made with ``minmax``)."""
    stats = read_json(out_root / STATS_FILE)
    wanted_values = (
        ("coc_model", lens.coc_model, None),
        ("n_sets", lens.sets, None),
        ("focus_range", lens.focus_range, DEFAULT_FOCUS_RANGE),
    )
    for key, wanted, default in wanted_values:
        found = stats.get(key, default)
        if found is not None and found != wanted:
            raise InputError(
                f"calibration was made with another {key}; re-run `trainset focus calibrate` "
                f"with the same --sets/--coc-model/--focus-range, or give --max-coc a number",
                file=out_root / STATS_FILE,
                key=key,
                expected=wanted,
                found=found,
            )


def stats_usable(out_root: Path, lens: LensConfig) -> bool:
    """Whether ``logs/coc_stats.json`` exists, reads, and describes ``lens``."""
    try:
        stats = read_json(out_root / STATS_FILE)
        if not isinstance(stats, dict) or "recommended_max_coc" not in stats:
            return False
        check_stats_match(out_root, lens)
    except InputError:  # missing, unreadable or made for another model or set count
        return False
    return True


def calibration_needed(max_coc: str | None, stats_ready: bool) -> bool:
    """Whether a run calibrates: always without ``--max-coc`` (the manual gate), with
    ``from-stats`` only while there are no usable statistics (:func:`stats_usable`), never
    with a given value.

    Existing statistics are kept once renders may follow: a max_coc that moved because a
    repaired scene joined the sample would make every finished render stale. Both executors
    follow this rule; a run without ``--max-coc`` recalibrates.
    """
    return max_coc is None or (max_coc == "from-stats" and not stats_ready)


def record_max_coc(out_root: Path, max_coc: float, source: str) -> None:
    """Record the chosen ``max_coc`` at the top of ``config.yaml`` (plan: "record this value in
    config.yaml"), beside the stage sections the runner writes."""
    import yaml

    with out_root_lock(out_root):
        config = read_config(out_root)
        config["max_coc"] = max_coc
        config["max_coc_mm"] = max_coc * 1e3
        config["max_coc_source"] = source
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        write_text_if_changed(out_root / CONFIG_NAME, text)


def render_action(
    out_root: Path,
    params: Mapping[str, Any],
    units: Sequence[str] | None,
    *,
    workers: int = 1,
    force: bool = False,
) -> int:
    """Phase 5 over ``units``: ``params`` = ``{max_coc, lens, render, only}``; ``max_coc`` a
    number (sensor metres) or ``from-stats``, resolved here (a SLURM job resolves it after the
    calibration job has run)."""
    from trainset.focus.labels import WARNINGS_LOG

    lens = config_from_dict(LensConfig, params["lens"])
    render = config_from_dict(RenderConfig, params["render"])
    only = params.get("only")
    given = str(params["max_coc"])
    max_coc = resolve_max_coc(given, out_root)
    if given == "from-stats":
        check_stats_match(out_root, lens)
    source = f"{STATS_FILE} (recommended_max_coc)" if given == "from-stats" else "--max-coc"
    print(f"max_coc = {max_coc:.6g} m ({max_coc * 1e3:.4g} mm on the sensor), from {source}")
    stage_params = labels_and_renders_params(max_coc, lens, render)
    record_max_coc(out_root, max_coc, source)
    codes = []
    if only in (None, "labels"):
        codes.append(
            _scene_stage("labels", out_root, units, stage_params["labels"], workers, force)
        )
        log = out_root / "logs" / WARNINGS_LOG
        n_warn = len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0
        if n_warn:
            print(f"{n_warn} focus maps with mean outside [0.2, 0.8]: see {log}")
    if only in (None, "renders"):
        codes.append(
            _scene_stage("renders", out_root, units, stage_params["renders"], workers, force)
        )
    if EXIT_FAILURES in codes:
        return EXIT_FAILURES
    return max(codes, default=EXIT_OK)


def validate_action(
    out_root: Path,
    params: Mapping[str, Any],
    units: Sequence[str] | None = None,
    *,
    workers: int = 1,
    force: bool = False,
) -> int:
    """Phase 6 over the whole set: ``params`` = ``{report, requeue}``."""
    from trainset.focus.validate import REPORT_FILE, requeue, validate_dataset, write_report

    report = validate_dataset(out_root)
    path = Path(params["report"]) if params.get("report") else out_root / REPORT_FILE
    if params.get("requeue") and report["failed_scenes"]:
        print_validation(report, path)
        print("requeue: re-running the failed stages")
        done = requeue(out_root, report, _rerun_with_recorded_params(out_root, workers))
        report = {**validate_dataset(out_root), "requeued": done}
    write_report(report, path)
    print_validation(report, path)
    if report["failed_scenes"] and not params.get("requeue"):
        print(f"repair: trainset focus validate --out-root {out_root} --requeue")
    return EXIT_FAILURES if report["failed_scenes"] else EXIT_OK


def print_validation(report: Mapping[str, Any], path: Path) -> None:
    """The validation result in a few lines: counts, then one line per failed scene."""
    print(
        f"{report['passing_scenes']}/{report['total_scenes']} scenes pass, "
        f"{report['total_frames']} frames, splits {report['split_counts']}, "
        f"{report['total_gb_on_disk']:.3g} GB"
    )
    for scene_id in report["failed_scenes"]:
        stages = ", ".join(report["rerun_stages"][scene_id])
        print(f"  FAIL {scene_id} (re-run: {stages}): {report['failure_reasons'][scene_id]}")
    print(f"report: {path}")


def _rerun_with_recorded_params(out_root: Path, workers: int) -> Any:
    """A ``run_stage(stage, scenes)`` for :func:`requeue`: the runner with the parameters the
    stage last ran with (``config.yaml``), forced."""
    from trainset.focus.stages import stage_named
    from trainset.pipeline.runner import run_stage

    def rerun(stage_name: str, scenes: list[str]) -> object:
        params = read_config(out_root).get(stage_name)
        if not isinstance(params, Mapping):
            command = "render" if stage_name in RENDER_ONLY else stage_name
            raise InputError(
                f"no recorded parameters for stage '{stage_name}'; run `trainset focus "
                f"{command}` first",
                file=out_root / CONFIG_NAME,
                key=stage_name,
                expected="a mapping of stage parameters",
                found=params,
            )
        summary = run_stage(
            stage_named(stage_name), out_root, scenes, params, workers=workers, force=True
        )
        print(summary.report())
        return summary

    return rerun


# -- the plan ---------------------------------------------------------------------------------


def _action(func: Any) -> str:
    return f"{__name__}:{func.__name__}"


def _pending(
    out_root: Path, scenes: Sequence[str], stage_params: Mapping[str, Mapping[str, Any]]
) -> frozenset[str]:
    """Scenes lacking a current sentinel of any of the given stages."""
    from trainset.focus.stages import stage_named
    from trainset.pipeline.runner import is_scene_current

    return frozenset(
        scene
        for scene in scenes
        if not all(
            is_scene_current(stage_named(name), out_root, scene, params)
            for name, params in stage_params.items()
        )
    )


def default_resources(config: RunConfig) -> dict[str, StageResources]:
    """The SLURM resources each step asks for by default: the plan's, and FLUX-sized ones
    (:data:`GENFOCUS_RESOURCES`) for the steps that run GenFocus."""
    genfocus = {
        "deblur": config.deblur.backend == "genfocus",
        "render": config.render.renderer == "genfocus",
    }
    return {
        name: GENFOCUS_RESOURCES[name] if genfocus.get(name) else default
        for name, default in RESOURCES.items()
    }


def plan_run(config: RunConfig, scenes: Sequence[str], *, command: Sequence[str] = ()) -> Plan:
    """The steps of `focus run` after the index: deblur, depth, calibrate when
    :func:`calibration_needed`, and past the gate (``max_coc`` given) render and validate.

    ``pending`` is worked out from the sentinels wherever the parameters are known before the
    run (render's are not while its max_coc waits for a calibration in the same run).
    """
    out = config.out_root
    units = tuple(scenes)
    resources = default_resources(config).__getitem__
    deblur, depth = config.deblur.stage_params(), config.depth.stage_params()
    steps = [
        Step(
            "deblur",
            _action(deblur_action),
            config_dict(config.deblur),
            units,
            _pending(out, units, {"deblur": deblur}),
            resources=resources("deblur"),
        ),
        Step(
            "depth",
            _action(depth_action),
            config_dict(config.depth),
            units,
            _pending(out, units, {"depth": depth}),
            resources=resources("depth"),
        ),
    ]
    stats_ready = stats_usable(out, config.lens)
    calibrating = calibration_needed(config.max_coc, stats_ready)
    if calibrating:
        calibrate_params = {
            "calibrate": config_dict(config.calibrate),
            "lens": config_dict(config.lens),
        }
        steps.append(
            Step(
                "calibrate",
                _action(calibrate_action),
                calibrate_params,
                after=("depth",),
                resources=resources("calibrate"),
            )
        )
    if config.max_coc is not None:
        pending = None
        if not calibrating:
            known = labels_and_renders_params(
                resolve_max_coc(config.max_coc, out), config.lens, config.render
            )
            pending = _pending(out, units, known)
        render_params: dict[str, Any] = {
            "max_coc": config.max_coc,
            "lens": config_dict(config.lens),
            "render": config_dict(config.render),
            "only": None,
        }
        steps.append(
            Step(
                "render",
                _action(render_action),
                render_params,
                units,
                pending,
                after=("calibrate",) if calibrating else (),
                resources=resources("render"),
            )
        )
        steps.append(
            Step(
                "validate",
                _action(validate_action),
                {"report": None, "requeue": False},
                after=("render",),
                resources=resources("validate"),
            )
        )
    return Plan(out, tuple(steps), tuple(command))


# -- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmOptions:
    """How the SLURM executor submits: resource overrides (YAML), dry run, and for tests the
    command runner and a known cluster."""

    config_file: Path | None = None
    dry_run: bool = False
    runner: Runner = run_command
    cluster: ClusterInfo | None = None


def run(
    config: RunConfig,
    *,
    executor: str = "local",
    slurm: SlurmOptions | None = None,
    command: Sequence[str] = ("trainset", "focus", "run"),
) -> int:
    """Run the focus pipeline (the Python API behind `trainset focus run`): index, then the
    planned steps, here (``executor="local"``) or as SLURM jobs (``"slurm"``). Returns the exit
    code: 0 done or stopped at the gate, 1 some scene failed or is blocked (listed at the end,
    with the command that retries them), 2 an error of the whole invocation."""
    if executor == "slurm":
        return _run_on_slurm(config, slurm or SlurmOptions(), command)
    if executor != "local":
        raise InputError(
            "unknown executor", key="--executor", expected="local or slurm", found=executor
        )
    return _run_here(config, command)


def _index(config: RunConfig, index_root: Path) -> list[str]:
    from trainset.focus.index import build_index

    result = build_index(
        config.raw_root,
        index_root,
        min_frames=config.index.min_frames,
        seed=config.index.seed,
        workers=config.workers,
    )
    print(result.report())
    return sorted(result.scenes)


def _run_here(config: RunConfig, command: Sequence[str]) -> int:
    import shlex

    from trainset.focus.problems import problem_lines

    print("== index")
    scenes = _index(config, config.out_root)
    plan = plan_run(config, scenes, command=command)
    if config.max_coc == "from-stats" and all(s.name != "calibrate" for s in plan.steps):
        print(
            f"== calibration kept: {STATS_FILE} describes these sets "
            "(run without --max-coc to recalibrate)"
        )
    result = run_locally(
        plan, workers=config.workers, before_step=lambda step: print(f"== {step.name}")
    )
    retry = shlex.join(command)
    if result.stopped_by is not None:
        print(
            f"stopped at `{COMMAND_PREFIX} {plan.steps[len(result.codes)].name}`: {result.stopped_by}"
        )
    elif result.exit_code == 2:
        name, code = result.codes[-1]
        print(f"stopped: `{COMMAND_PREFIX} {name}` exited with {code}")
        return code
    elif config.max_coc is None:
        rec = read_json(config.out_root / STATS_FILE)["recommended_max_coc"]
        print(f"stopped at the manual gate: recommended max_coc = {rec:.6g} m ({rec * 1e3:.4g} mm)")
        print("continue (finished stages are skipped) with")
        print(f"  {retry} --max-coc {rec:.6g}")
    lines = problem_lines(config.out_root, with_validation=config.max_coc is not None)
    if not (result.some_failed or result.stopped_by or lines):
        return EXIT_OK
    print(f"{len(lines)} scene(s) failed or blocked:")
    for line in lines:
        print(f"  {line}")
    print(f"retry them after fixing their input (finished work is skipped):\n  {retry}")
    return EXIT_FAILURES


def _run_on_slurm(config: RunConfig, options: SlurmOptions, command: Sequence[str]) -> int:
    from trainset.pipeline.slurm import load_slurm_config, submit_plan

    out = Path(config.out_root).resolve()
    config = replace(config, out_root=out)
    with tempfile.TemporaryDirectory(prefix="trainset-dry-run-") as scratch:
        if not options.dry_run:
            scenes = _index(config, out)
        elif (out / SCENE_INDEX).is_file():
            scenes = sorted(read_scene_index(out))
        else:  # a dry run writes no index into the output root
            scenes = _index(config, Path(scratch))
        plan = plan_run(config, scenes, command=command)
        submission = submit_plan(
            plan,
            load_slurm_config(options.config_file, default_resources(config)),
            dry_run=options.dry_run,
            cluster=options.cluster,
            runner=options.runner,
        )
    if options.dry_run:
        print(submission.dry_run_text(), end="")
        if not submission.resources_checked:
            print("# resources not checked: no SLURM controller answers `scontrol ping`")
    print(submission_report(submission))
    calibrate_job = next((j for j in submission.jobs if j["step"] == "calibrate"), None)
    if config.max_coc is None and calibrate_job is not None and not options.dry_run:
        log = out / "slurm" / "logs" / f"calibrate_{calibrate_job['job_id']}.out"
        print(
            f"manual gate: when calibrate (job {calibrate_job['job_id']}) has finished, "
            f"`trainset focus status --out-root {out}` and {log} show the recommended max_coc"
        )
        print("continue (scenes already done are not resubmitted) with")
        print(f"  {' '.join(command)} --max-coc from-stats   (or --max-coc VALUE)")
    return EXIT_OK


def submission_report(submission: Any) -> str:
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
