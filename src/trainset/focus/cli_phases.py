"""`trainset focus calibrate | render | validate | run`: Phases 4-6 and the whole local run.

``register_commands(focus)`` adds them to the ``focus`` command group (called from
:func:`trainset.focus.cli.register`). Scene work goes through the runner
(:func:`trainset.focus.cli.run_scene_stage`), so every option of the scene stages
(``--scene``, ``--task-index``, ``--workers``, ``--force``) works for ``render`` too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainset.cli import EXIT_FAILURES, EXIT_OK, flag
from trainset.errors import InputError
from trainset.focus.calibration import PLOT_FILE, STATS_FILE, calibrate, resolve_max_coc
from trainset.focus.labels import WARNINGS_LOG, labels_params
from trainset.focus.optics import COC_MODELS, DEFAULT_N_SETS, DEFAULT_SENSOR_WIDTH_M
from trainset.focus.renders import renders_params
from trainset.focus.validate import REPORT_FILE, requeue, validate_dataset, write_report
from trainset.pipeline.dataset_files import (
    CONFIG_NAME,
    out_root_lock,
    read_config,
    record_config,
    write_text_if_changed,
)
from trainset.store import read_json

RENDER_ONLY = ("labels", "renders")


def _add_set_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sets",
        type=int,
        default=DEFAULT_N_SETS,
        help=f"(f, N, S_focus) parameter sets per scene (plan: {DEFAULT_N_SETS})",
    )
    p.add_argument(
        *flag("--coc-model"),
        dest="coc_model",
        choices=COC_MODELS,
        default="plan",
        help="CoC formula: plan f^2/(N*S) (default, as the dataloader) or thin_lens f^2/(N*(S-f))",
    )


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--renderer", default="layered", help="defocus renderer (layered: physically based, torch)"
    )
    p.add_argument(
        *flag("--renderer-option"),
        dest="renderer_option",
        action="append",
        metavar="KEY=VALUE",
        help="renderer option (repeat); layered: hidden=extend|none, highlight_gain=G (1 = off; "
        "e.g. 12: clipped lights make bokeh discs), highlight_threshold, layer_step_px, "
        "max_layers (docs/focus-render.md)",
    )
    p.add_argument(
        *flag("--sensor-width"),
        dest="sensor_width",
        type=float,
        default=DEFAULT_SENSOR_WIDTH_M * 1e3,
        help="sensor width in mm for CoC in pixels (default 36, full frame)",
    )


def render_stage_params(args: argparse.Namespace, max_coc: float) -> dict[str, dict[str, Any]]:
    """Parameters of the ``labels`` and ``renders`` stages (their sentinel hashes) from the
    options of `trainset focus render` and a resolved ``max_coc`` (sensor metres)."""
    from trainset.focus.cli import parse_options

    return {
        "labels": labels_params(max_coc, n_sets=args.sets, coc_model=args.coc_model),
        "renders": renders_params(
            max_coc,
            n_sets=args.sets,
            coc_model=args.coc_model,
            sensor_width_m=args.sensor_width / 1000.0,
            renderer=args.renderer,
            renderer_options=parse_options(args.renderer_option, key="--renderer-option"),
        ),
    }


def _check_stats_match(out_root: Path, args: argparse.Namespace) -> None:
    """With ``--max-coc from-stats`` the calibration must describe the same CoC model and sets."""
    stats = read_json(out_root / STATS_FILE)
    for key, wanted in (("coc_model", args.coc_model), ("n_sets", args.sets)):
        if key in stats and stats[key] != wanted:
            raise InputError(
                f"calibration was made with another {key}; re-run `trainset focus calibrate` "
                f"with the same --sets/--coc-model, or give --max-coc a number",
                file=out_root / STATS_FILE,
                key=key,
                expected=wanted,
                found=stats[key],
            )


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


def _combine(codes: Sequence[int]) -> int:
    if EXIT_FAILURES in codes:
        return EXIT_FAILURES
    return max(codes, default=EXIT_OK)


def _calibrate(args: argparse.Namespace) -> int:
    stats = calibrate(
        args.out_root,
        sample_fraction=args.sample_fraction,
        n_sets=args.sets,
        coc_model=args.coc_model,
        stats_path=args.output_stats,
        plot_path=args.output_plot,
    )
    record_config(
        args.out_root,
        "calibrate",
        {"sample_fraction": args.sample_fraction, "n_sets": args.sets, "coc_model": args.coc_model},
    )
    counts = stats["counts"]
    print(
        f"CoC over {counts['values']} values of {counts['frames']} frames, "
        f"{counts['scenes_used']} of {counts['scenes_total']} scenes (model {stats['coc_model']}):"
    )
    for key in ("p50", "p90", "p95", "p99", "max"):
        print(f"  {key:>4} = {stats[key]:.6g} m ({stats[key] * 1e3:.4g} mm on the sensor)")
    if stats["scenes_skipped"]:
        print(f"  skipped (no depth yet): {', '.join(stats['scenes_skipped'])}")
    rec = stats["recommended_max_coc"]
    print(f"recommended max_coc = p95 = {rec:.6g} m ({rec * 1e3:.4g} mm)")
    print(f"statistics: {args.output_stats or args.out_root / STATS_FILE}")
    print(f"histogram:  {args.output_plot or args.out_root / PLOT_FILE}")
    print("manual gate: check the value, then continue with")
    print(f"  trainset focus render --out-root {args.out_root} --max-coc {rec:.6g}")
    return EXIT_OK


def _render(args: argparse.Namespace) -> int:
    from trainset.focus.cli import run_scene_stage

    max_coc = resolve_max_coc(args.max_coc, args.out_root)
    if args.max_coc == "from-stats":
        _check_stats_match(args.out_root, args)
    source = f"{STATS_FILE} (recommended_max_coc)" if args.max_coc == "from-stats" else "--max-coc"
    print(f"max_coc = {max_coc:.6g} m ({max_coc * 1e3:.4g} mm on the sensor), from {source}")
    params = render_stage_params(args, max_coc)
    record_max_coc(args.out_root, max_coc, source)
    codes = []
    if args.only in (None, "labels"):
        codes.append(run_scene_stage(args, "labels", params["labels"]))
        log = args.out_root / "logs" / WARNINGS_LOG
        n_warn = len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0
        if n_warn:
            print(f"{n_warn} focus maps with mean outside [0.2, 0.8]: see {log}")
    if args.only in (None, "renders"):
        codes.append(run_scene_stage(args, "renders", params["renders"]))
    return _combine(codes)


def _rerun_with_recorded_params(out_root: Path, workers: int) -> Callable[[str, list[str]], object]:
    """A ``run_stage(stage, scenes)`` for :func:`requeue`: the runner with the parameters the
    stage last ran with (``config.yaml``), forced."""
    from trainset.focus import stages  # noqa: F401  (registers the focus stages)
    from trainset.pipeline.runner import run_stage
    from trainset.pipeline.stage import get_stage

    def rerun(stage_name: str, scenes: list[str]) -> object:
        params = read_config(out_root).get(stage_name)
        if not isinstance(params, Mapping):
            raise InputError(
                f"no recorded parameters for stage '{stage_name}'; run `trainset focus "
                f"{'render' if stage_name in RENDER_ONLY else stage_name}` first",
                file=out_root / CONFIG_NAME,
                key=stage_name,
                expected="a mapping of stage parameters",
                found=params,
            )
        summary = run_stage(
            get_stage(stage_name), out_root, scenes, params, workers=workers, force=True
        )
        print(summary.report())
        return summary

    return rerun


def _print_report(report: Mapping[str, Any], path: Path) -> None:
    print(
        f"{report['passing_scenes']}/{report['total_scenes']} scenes pass, "
        f"{report['total_frames']} frames, splits {report['split_counts']}, "
        f"{report['total_gb_on_disk']:.3g} GB"
    )
    for scene_id in report["failed_scenes"]:
        stages = ", ".join(report["rerun_stages"][scene_id])
        print(f"  FAIL {scene_id} (re-run: {stages}): {report['failure_reasons'][scene_id]}")
    print(f"report: {path}")


def _validate(args: argparse.Namespace) -> int:
    out_root: Path = args.out_root
    if (
        args.scene_index is not None
        and args.scene_index.resolve() != (out_root / "scene_index.json").resolve()
    ):
        raise InputError(
            "the scene index must be the output root's",
            key="--scene-index",
            expected=out_root / "scene_index.json",
            found=args.scene_index,
        )
    report = validate_dataset(out_root)
    path = args.report or out_root / REPORT_FILE
    if args.requeue and report["failed_scenes"]:
        _print_report(report, path)
        print("requeue: re-running the failed stages")
        done = requeue(out_root, report, _rerun_with_recorded_params(out_root, args.workers))
        report = {**validate_dataset(out_root), "requeued": done}
    write_report(report, path)
    _print_report(report, path)
    if report["failed_scenes"] and not args.requeue:
        print(f"repair: trainset focus validate --out-root {out_root} --requeue")
    return EXIT_FAILURES if report["failed_scenes"] else EXIT_OK


def stats_usable(out_root: Path, coc_model: str, sets: int) -> bool:
    """Whether ``logs/coc_stats.json`` exists, reads, and describes ``coc_model`` and ``sets``."""
    try:
        stats = read_json(out_root / STATS_FILE)
        if not isinstance(stats, dict) or "recommended_max_coc" not in stats:
            return False
        _check_stats_match(out_root, argparse.Namespace(coc_model=coc_model, sets=sets))
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


def run_steps(args: argparse.Namespace) -> list[list[str]]:
    """The `trainset focus` commands (``[name, options...]``) of a run, in order: the local
    executor runs them here, the SLURM executor submits them as jobs."""
    out = str(args.out_root)
    common = ["--out-root", out, "--workers", str(args.workers)]
    sets = ["--sets", str(args.sets), "--coc-model", args.coc_model]
    depth = ["--backend", args.depth_backend]
    for option, value in (
        ("--checkpoint", args.checkpoint),
        ("--encoder", args.encoder),
        ("--input-size", args.input_size),
        ("--device", args.device),
        ("--depth-scale", args.depth_scale),
    ):
        if value is not None:
            depth += [option, str(value)]
    steps = [
        ["index", "--raw-root", str(args.raw_root), "--out-root", out,
         "--min-frames", str(args.min_frames), "--seed", str(args.seed)],
        ["deblur", *common, "--backend", args.deblur_backend],
        ["depth", *common, *depth],
    ]  # fmt: skip
    if calibration_needed(args.max_coc, stats_usable(args.out_root, args.coc_model, args.sets)):
        steps.append(
            ["calibrate", "--out-root", out, "--sample-fraction", str(args.sample_fraction), *sets]
        )
    if args.max_coc is not None:
        steps.append(
            [
                "render", *common, "--max-coc", args.max_coc, *sets,
                "--renderer", args.renderer, "--sensor-width", str(args.sensor_width),
                *(word for item in args.renderer_option or [] for word in ("--renderer-option", item)),
            ]
        )  # fmt: skip
        steps.append(["validate", "--out-root", out])
    return steps


def _run(args: argparse.Namespace) -> int:
    from trainset.cli import build_parser

    steps = run_steps(args)
    if args.executor == "slurm":
        from trainset.focus.slurm_executor import run_on_slurm

        return run_on_slurm(args, steps)
    for option, given in (("--dry-run", args.dry_run), ("--slurm-config", args.slurm_config)):
        if given:
            raise InputError(
                f"{option} only applies to the SLURM executor",
                key=option,
                expected="--executor slurm",
                found="--executor local",
            )
    out = str(args.out_root)
    parser = build_parser()
    if args.max_coc == "from-stats" and all(step[0] != "calibrate" for step in steps):
        print(
            f"== calibration kept: {STATS_FILE} describes these sets "
            "(run without --max-coc to recalibrate)"
        )
    for step in steps:
        print(f"== trainset focus {' '.join(step)}")
        step_args = parser.parse_args(["focus", *step])
        code = step_args.func(step_args)
        if code != EXIT_OK:
            print(f"stopped: `trainset focus {step[0]}` exited with {code}")
            return code
    if args.max_coc is None:
        stats = read_json(args.out_root / STATS_FILE)
        rec = stats["recommended_max_coc"]
        print(f"stopped at the manual gate: recommended max_coc = {rec:.6g} m ({rec * 1e3:.4g} mm)")
        print("continue (finished stages are skipped) with")
        print(
            f"  trainset focus run --raw-root {args.raw_root} --out-root {out} --max-coc {rec:.6g}"
        )
    return EXIT_OK


def register_commands(focus: argparse._SubParsersAction) -> None:
    """Add calibrate, render, validate and run to the ``trainset focus`` group."""
    from trainset.focus.cli import add_root_options, add_scene_options
    from trainset.focus.index import DEFAULT_MIN_FRAMES, DEFAULT_SPLIT_SEED

    p = focus.add_parser(
        "calibrate",
        help="CoC distribution of a sample of scenes -> logs/coc_stats.json, recommended max_coc",
        epilog="Exit codes: 0 statistics written, 2 bad usage or no depth to calibrate on.",
    )
    add_root_options(p)
    p.add_argument(
        *flag("--sample-fraction"),
        dest="sample_fraction",
        type=float,
        default=0.2,
        help="fraction of scenes read, chosen by sha256 of the id (plan: 0.2)",
    )
    _add_set_options(p)
    p.add_argument(
        *flag("--output-stats"), dest="output_stats", type=Path, help="default logs/coc_stats.json"
    )
    p.add_argument(
        *flag("--output-plot"), dest="output_plot", type=Path, help="default logs/coc_histogram.png"
    )
    p.set_defaults(func=_calibrate)

    p = focus.add_parser(
        "render",
        help="focus maps (focus_maps/) and defocus renders (bokeh_renders/) for a chosen max_coc",
        epilog="Exit codes: 0 all scenes done, 1 some scenes failed, 2 bad usage or input.",
    )
    add_scene_options(p)
    p.add_argument(
        *flag("--max-coc"),
        dest="max_coc",
        required=True,
        help="max CoC in metres on the sensor (e.g. 0.0005), or from-stats "
        "(logs/coc_stats.json recommended_max_coc): the plan's manual gate",
    )
    _add_set_options(p)
    _add_render_options(p)
    p.add_argument("--only", choices=RENDER_ONLY, help="run only the labels or only the renders")
    p.set_defaults(func=_render)

    p = focus.add_parser(
        "validate",
        help="check every scene's outputs -> logs/validation_report.json",
        epilog="Exit codes: 0 every scene passes, 1 some scene fails, 2 bad usage or input.",
    )
    add_root_options(p)
    p.add_argument("--report", type=Path, help="default logs/validation_report.json")
    p.add_argument(
        *flag("--scene-index"),
        dest="scene_index",
        type=Path,
        help="(plan) must be OUT/scene_index.json",
    )
    p.add_argument(
        "--requeue",
        action="store_true",
        help="re-run the failing stage(s) of each failed scene, then validate again",
    )
    p.add_argument("--workers", type=int, default=1, help="processes for --requeue")
    p.set_defaults(func=_validate)

    p = focus.add_parser(
        "run",
        help="index, deblur, depth, calibrate; with --max-coc also render and validate",
        epilog="Exit codes: 0 done (or stopped at the gate), 1 failures, 2 bad usage or input.",
    )
    add_root_options(p, raw=True)
    p.add_argument(
        *flag("--max-coc"),
        dest="max_coc",
        help="continue past the gate with this max CoC (metres) or from-stats",
    )
    p.add_argument(*flag("--min-frames"), dest="min_frames", type=int, default=DEFAULT_MIN_FRAMES)
    p.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED, help="split seed (plan: 42)")
    p.add_argument(*flag("--deblur-backend"), dest="deblur_backend", default="passthrough")
    p.add_argument(*flag("--depth-backend"), dest="depth_backend", default="provided")
    p.add_argument("--checkpoint", type=Path, help="depth model checkpoint (vda)")
    p.add_argument(
        "--encoder", choices=["vits", "vitb", "vitl"], help="vda model size (default: inferred)"
    )
    p.add_argument(
        *flag("--input-size"), dest="input_size", type=int, help="vda input size (default 518)"
    )
    p.add_argument("--device", help="vda device: auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        *flag("--depth-scale"),
        dest="depth_scale",
        type=float,
        help="units per metre of 16-bit PNG provided depth (default 1000)",
    )
    p.add_argument(*flag("--sample-fraction"), dest="sample_fraction", type=float, default=0.2)
    _add_set_options(p)
    _add_render_options(p)
    p.add_argument("--workers", type=int, default=1, help="scenes processed in parallel")
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="local: run here; slurm: submit sbatch array jobs (docs/slurm.md)",
    )
    p.add_argument(
        *flag("--slurm-config"),
        dest="slurm_config",
        type=Path,
        help="YAML file of per-stage SLURM resources (default: the plan's)",
    )
    p.add_argument(
        *flag("--dry-run"),
        dest="dry_run",
        action="store_true",
        help="with --executor slurm: write and print the job scripts and sbatch commands only",
    )
    p.set_defaults(func=_run)
