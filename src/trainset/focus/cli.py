"""`trainset focus ...`: a thin command line over :mod:`trainset.focus.steps`.

The options of every stage come from its config dataclass (:mod:`trainset.focus.config`): a
stage command (``focus depth``) and ``focus run`` build them with
:func:`trainset.cli_tools.add_options` from the same fields, and the commands call the same
step actions the executors run. Scene stages share ``--out-root``, ``--scene ID`` |
``--task-index I``, ``--workers N`` and ``--force``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from trainset.cli_tools import (
    EXIT_FAILURES,
    EXIT_OK,
    add_group,
    add_options,
    config_dict,
    flag,
    from_args,
)
from trainset.errors import InputError
from trainset.focus.config import (
    CalibrateConfig,
    DeblurConfig,
    DepthConfig,
    IndexConfig,
    LensConfig,
    RenderConfig,
    RunConfig,
)

STAGE_EPILOG = (
    "Exit codes: 0 all scenes done, 1 some scenes failed or are blocked by a failure "
    "(listed), 2 bad usage or input."
)


def add_root_options(parser: argparse.ArgumentParser, *, raw: bool = False) -> None:
    """Required ``--out-root`` (and with ``raw``, first, ``--raw-root``), plus the plan's
    underscore spellings."""
    if raw:
        parser.add_argument(*flag("--raw-root"), dest="raw_root", type=Path, required=True)
    parser.add_argument(*flag("--out-root"), dest="out_root", type=Path, required=True)


def add_scene_options(parser: argparse.ArgumentParser) -> None:
    """Options every scene stage takes: output root, scene selection, workers, force."""
    add_root_options(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--scene", help="run one scene by id")
    which.add_argument(
        *flag("--task-index"),
        dest="task_index",
        type=int,
        help="run the scene at this position of the sorted scene index (SLURM array task id)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="scenes processed in parallel (processes)"
    )
    parser.add_argument(
        "--force", action="store_true", help="redo scenes whose output is already current"
    )


def _scenes(args: argparse.Namespace) -> list[str]:
    from trainset.focus.layout import select_scenes

    return select_scenes(args.out_root, scene=args.scene, task_index=args.task_index)


def _extract(args: argparse.Namespace) -> int:
    from trainset.focus.video import describe, extract_videos

    results = extract_videos(
        args.videos, args.raw_root, every=args.every, max_frames=args.max_frames, force=args.force
    )
    print(describe(results))
    return EXIT_FAILURES if any(r.status == "failed" for r in results) else EXIT_OK


def _index(args: argparse.Namespace) -> int:
    from trainset.focus.index import build_index

    config = from_args(IndexConfig, args)
    result = build_index(
        args.raw_root,
        args.out_root,
        min_frames=config.min_frames,
        seed=config.seed,
        workers=args.workers,
    )
    print(result.report())
    return EXIT_OK


def _deblur(args: argparse.Namespace) -> int:
    from trainset.focus.steps import deblur_action

    params = config_dict(from_args(DeblurConfig, args))
    return deblur_action(
        args.out_root, params, _scenes(args), workers=args.workers, force=args.force
    )


def _depth(args: argparse.Namespace) -> int:
    from trainset.focus.steps import depth_action

    params = config_dict(from_args(DepthConfig, args))
    return depth_action(
        args.out_root, params, _scenes(args), workers=args.workers, force=args.force
    )


def _calibrate(args: argparse.Namespace) -> int:
    from trainset.focus.steps import calibrate_action

    params = {
        "calibrate": config_dict(from_args(CalibrateConfig, args)),
        "lens": config_dict(from_args(LensConfig, args)),
    }
    return calibrate_action(args.out_root, params, None)


def _render(args: argparse.Namespace) -> int:
    from trainset.focus.steps import render_action

    params = {
        "max_coc": args.max_coc,
        "lens": config_dict(from_args(LensConfig, args)),
        "render": config_dict(from_args(RenderConfig, args)),
        "only": args.only,
    }
    return render_action(
        args.out_root, params, _scenes(args), workers=args.workers, force=args.force
    )


def _validate(args: argparse.Namespace) -> int:
    from trainset.focus.steps import validate_action

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
    params = {"report": str(args.report) if args.report else None, "requeue": args.requeue}
    return validate_action(out_root, params, None, workers=args.workers)


def run_config(args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` of a parsed `trainset focus run`."""
    stages = {
        name: from_args(type(default), args, prefix=name)
        for name, default in RunConfig(Path(), Path()).stages().items()
    }
    return RunConfig(
        raw_root=args.raw_root,
        out_root=args.out_root,
        max_coc=args.max_coc,
        workers=args.workers,
        **stages,
    )


def _run(args: argparse.Namespace) -> int:
    from trainset.focus.steps import SlurmOptions, run

    if args.executor == "local":
        for option, given in (("--dry-run", args.dry_run), ("--slurm-config", args.slurm_config)):
            if given:
                raise InputError(
                    f"{option} only applies to the SLURM executor",
                    key=option,
                    expected="--executor slurm",
                    found="--executor local",
                )
    slurm = SlurmOptions(config_file=args.slurm_config, dry_run=args.dry_run)
    command = getattr(args, "command_line", ["trainset", "focus", "run"])
    return run(run_config(args), executor=args.executor, slurm=slurm, command=command)


def status_table(out_root: Path) -> tuple[str, bool]:
    """Stages x (done, pending, failed, blocked) as text, and whether any scene failed.

    ``failed``: the stage's last run on the scene raised; ``blocked``: a stage it needs failed
    (the line names that stage); ``pending``: not run yet.
    """
    from trainset.focus.layout import scene_ids
    from trainset.focus.pack import PACK_DIR, PACK_FILE, open_packed
    from trainset.focus.problems import rejected_scenes
    from trainset.focus.stages import FOCUS_STAGES
    from trainset.pipeline.scene_state import stage_states

    ids = scene_ids(out_root)
    states = stage_states(out_root, ids, FOCUS_STAGES)
    lines = [
        f"{len(ids)} scenes in {out_root}",
        f"{'stage':<10} {'done':>6} {'pending':>8} {'failed':>7} {'blocked':>8}",
    ]
    any_failed = False
    for stage in FOCUS_STAGES:
        by_scene = {s: states[s][stage.name] for s in ids}
        count = {k: sum(st.status == k for st in by_scene.values()) for k in ("done", "pending")}
        failed = sorted(s for s, st in by_scene.items() if st.status == "failed")
        blocked = sorted(s for s, st in by_scene.items() if st.status == "blocked")
        any_failed = any_failed or bool(failed or blocked)
        lines.append(
            f"{stage.name:<10} {count['done']:>6} {count['pending']:>8} {len(failed):>7} "
            f"{len(blocked):>8}"
        )
        lines.extend(f"  failed: {s}: {by_scene[s].reason}" for s in failed)
        lines.extend(f"  blocked: {s} ({by_scene[s].reason})" for s in blocked)
    rejected = rejected_scenes(out_root)
    if rejected:
        lines.append(
            f"{len(rejected)} raw scene(s) rejected by the index (logs/rejected_scenes.json)"
        )
    packed = [s for s in ids if (out_root / s / PACK_DIR / PACK_FILE).exists()]
    if packed:
        current = sum(open_packed(out_root / s) is not None for s in packed)
        lines.append(
            f"{'pack':<10} {current:>6} {len(ids) - current:>8} {0:>7} {0:>8}"
            f"  (optional; {len(packed) - current} stale: run `trainset focus pack`)"
        )
    return "\n".join(lines), any_failed


def _status(args: argparse.Namespace) -> int:
    from trainset.focus.slurm_status import slurm_status_lines

    text, any_failed = status_table(args.out_root)
    print(text)
    for line in slurm_status_lines(args.out_root):
        print(line)
    return EXIT_FAILURES if any_failed else EXIT_OK


def _pack(args: argparse.Namespace) -> int:
    from trainset.focus.layout import scene_ids
    from trainset.focus.pack import pack_dataset
    from trainset.pipeline.progress import Progress

    scenes = args.scene or None
    with Progress(len(scenes) if scenes else len(scene_ids(args.out_root)), "pack") as bar:
        result = pack_dataset(
            args.out_root, scenes=scenes, force=args.force, progress=lambda s: bar.update(note=s)
        )
    print(
        f"packed {len(result.packed)} scene(s), {len(result.current)} already current, "
        f"{len(result.failed)} failed: {args.out_root}/<scene>/packed/"
    )
    for scene_id, reason in result.failed.items():
        print(f"  failed {scene_id}: {reason}")
    return EXIT_FAILURES if result.failed else EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from trainset.focus.report import FocusReportOptions, build_focus_report

    start = time.monotonic()
    options = FocusReportOptions(scenes=args.scenes, frames=args.frames, seed=args.seed)
    report = build_focus_report(args.out_root, options, output=args.output)
    print(
        f"focus report: {len(report.scenes_shown)} of {report.scenes_total} scenes shown "
        f"({len(report.flagged)} failed, blocked or invalid), {report.images} images, "
        f"{report.size_bytes / 1e6:.2f} MB, {time.monotonic() - start:.1f} s\n"
        f"  open: {report.path}"
    )
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `trainset focus` and its sub-commands."""
    from trainset.focus.report import FocusReportOptions
    from trainset.focus.steps import RENDER_ONLY

    focus = add_group(
        sub, "focus", "FocusMamba data pipeline: index, deblur, depth, calibrate, render, validate."
    )

    p = focus.add_parser(
        "extract",
        help="video files -> scenes of the raw layout (raw_root/{scene}/frame_XXXX.png)",
        description="Decode each video (mp4, mov, avi, mkv, m4v, webm) with PyAV into "
        "RAW/{scene}/frame_XXXX.png, the scene id made from the file name. A video already "
        "extracted with the same options is skipped; one that cannot be decoded fails alone. "
        "Needs PyAV: pip install 'trainset[video]'.",
        epilog="Exit codes: 0 every video extracted, 1 some video failed, 2 bad usage or input.",
    )
    p.add_argument("videos", nargs="+", type=Path, metavar="VIDEO")
    p.add_argument(*flag("--raw-root"), dest="raw_root", type=Path, required=True)
    p.add_argument("--every", type=int, default=1, help="keep every N-th frame (default 1)")
    p.add_argument(
        *flag("--max-frames"), dest="max_frames", type=int, help="keep at most M frames per video"
    )
    p.add_argument("--force", action="store_true", help="extract again even when current")
    p.set_defaults(func=_extract)

    p = focus.add_parser(
        "index",
        help="scan and validate the raw set, write scene_index.json and splits",
        epilog="Exit codes: 0 index written, 2 bad usage or no usable scene.",
    )
    add_root_options(p, raw=True)
    add_options(p, IndexConfig)
    p.add_argument(
        "--workers", type=int, default=1, help="scenes validated in parallel (processes)"
    )
    p.set_defaults(func=_index)

    p = focus.add_parser("deblur", help="sharp frames (frames_sharp/)", epilog=STAGE_EPILOG)
    add_scene_options(p)
    add_options(p, DeblurConfig)
    p.set_defaults(func=_deblur)

    p = focus.add_parser("depth", help="metric depth (depth_maps/)", epilog=STAGE_EPILOG)
    add_scene_options(p)
    add_options(p, DepthConfig)
    p.set_defaults(func=_depth)

    p = focus.add_parser(
        "calibrate",
        help="CoC distribution of a sample of scenes -> logs/coc_stats.json, recommended max_coc",
        epilog="Exit codes: 0 statistics written, 2 bad usage or no depth to calibrate on.",
    )
    add_root_options(p)
    add_options(p, CalibrateConfig)
    add_options(p, LensConfig)
    p.set_defaults(func=_calibrate)

    p = focus.add_parser(
        "render",
        help="focus maps (focus_maps/) and defocus renders (bokeh_renders/) for a chosen max_coc",
        epilog=STAGE_EPILOG,
    )
    add_scene_options(p)
    p.add_argument(
        *flag("--max-coc"),
        dest="max_coc",
        required=True,
        help="max CoC in metres on the sensor (e.g. 0.0005), or from-stats "
        "(logs/coc_stats.json recommended_max_coc): the plan's manual gate",
    )
    add_options(p, LensConfig)
    add_options(p, RenderConfig)
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
        description="Every option of the stage commands is an option of run too (those that "
        "would collide carry the stage's name: --deblur-backend, --depth-option, ...).",
        epilog="Exit codes: 0 done (or stopped at the gate), 1 some scenes failed or are "
        "blocked (listed, with the command that retries them), 2 bad usage or input.",
    )
    add_root_options(p, raw=True)
    p.add_argument(
        *flag("--max-coc"),
        dest="max_coc",
        help="continue past the gate with this max CoC (metres) or from-stats",
    )
    for name, default in RunConfig(Path(), Path()).stages().items():
        add_options(p, type(default), prefix=name)
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

    p = focus.add_parser(
        "status",
        help="stages x (done, pending, failed, blocked)",
        epilog="Exit codes: 0 no failed scene, 1 some failed, 2 bad usage.",
    )
    add_root_options(p)
    p.set_defaults(func=_status)

    p = focus.add_parser(
        "pack",
        help="per-scene packed, memory-mappable copy of the outputs for fast clip loading",
        description="Write {scene}/packed/: uint8 frames and renders, float16 depth and focus "
        "maps as page-aligned .npy, bit-identical to the plan's files (which stay). "
        "FocusClipDataset reads packs when present; validate checks them.",
        epilog="Exit codes: 0 packs written or current, 1 some scene could not be packed "
        "(named, with the reason; the others are packed), 2 bad usage or input.",
    )
    add_root_options(p)
    p.add_argument("--scene", action="append", help="pack only this scene (repeat)")
    p.add_argument("--force", action="store_true", help="re-pack scenes whose pack is current")
    p.set_defaults(func=_pack)

    p = focus.add_parser(
        "report",
        help="static HTML report: summary, failures, distributions, thumbnails per scene",
        description="Write one HTML page (plus a folder of its images) that opens from disk: "
        "scenes by status with failure reasons and the repair command, max_coc, splits, disk, "
        "validation; the CoC histogram and the f, N, S_focus distributions; for a seeded "
        "sample of scenes (every failed one included) sharp frame | depth | focus map and "
        "render of each set, depth statistics and warnings. Written atomically.",
        epilog="Exit codes: 0 report written (whatever the data set's state), 2 bad usage or "
        "input (e.g. no scene index).",
    )
    add_root_options(p)
    p.add_argument(
        "--scenes",
        type=int,
        default=FocusReportOptions.scenes,
        help="scenes shown in detail: a seeded sample; failed/blocked ones come in addition "
        f"(default {FocusReportOptions.scenes})",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=FocusReportOptions.frames,
        help=f"frames per shown scene, evenly spaced (default {FocusReportOptions.frames})",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=FocusReportOptions.seed,
        help=f"seed of the scene sample (default {FocusReportOptions.seed})",
    )
    p.add_argument("--output", type=Path, help="page to write (default OUT_ROOT/report/index.html)")
    p.set_defaults(func=_report)
