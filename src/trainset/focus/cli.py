"""`trainset focus ...` sub-commands: index, deblur, depth, status.

Scene stages share ``--out-root``, ``--scene ID`` | ``--task-index I``, ``--workers N`` and
``--force`` (:func:`add_scene_options`) and run through :func:`run_scene_stage`, which records
the stage's parameters in ``{out_root}/config.yaml`` and maps the outcome to an exit code.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainset.cli import EXIT_FAILURES, EXIT_OK, add_group, flag
from trainset.errors import InputError


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


def add_depth_validity_options(parser: argparse.ArgumentParser) -> None:
    """Sensor conventions of provided depth and the valid-pixel threshold (depth and run)."""
    from trainset.focus.depth import DEFAULT_MIN_VALID_FRACTION
    from trainset.focus.depth_backends import DEFAULT_DEPTH_RANGE_M

    parser.add_argument(
        *flag("--depth-invalid"),
        dest="depth_invalid",
        metavar="CODES",
        help="provided: integer depth values meaning 'no measurement', e.g. 0,65535, or none "
        "(default: 0 and the dtype's maximum)",
    )
    parser.add_argument(
        *flag("--depth-range"),
        dest="depth_range",
        metavar="MIN,MAX",
        help="provided: metres outside which depth is 'no measurement' "
        f"(default {DEFAULT_DEPTH_RANGE_M[0]:g},{DEFAULT_DEPTH_RANGE_M[1]:g}; e.g. 0.3,8 for a "
        "Kinect)",
    )
    parser.add_argument(
        *flag("--min-valid-fraction"),
        dest="min_valid_fraction",
        type=float,
        default=DEFAULT_MIN_VALID_FRACTION,
        help="a scene fails when a frame has fewer valid depth pixels than this fraction "
        f"(default {DEFAULT_MIN_VALID_FRACTION:g}); holes are filled with the scene median",
    )


def parse_options(items: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` strings of ``--backend-option`` as a dict."""
    options: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError("backend option must be KEY=VALUE", key="--backend-option", found=item)
        options[key.replace("-", "_")] = value
    return options


def run_scene_stage(args: argparse.Namespace, stage_name: str, params: Mapping[str, Any]) -> int:
    """Run registered stage ``stage_name`` over the selected scenes; print a summary; exit code."""
    from trainset.focus import stages  # noqa: F401  (registers the focus stages)
    from trainset.pipeline.runner import run_stage, select_scenes
    from trainset.pipeline.stage import get_stage

    stage = get_stage(stage_name)
    scenes = select_scenes(args.out_root, scene=args.scene, task_index=args.task_index)
    summary = run_stage(
        stage,
        args.out_root,
        scenes,
        params,
        workers=args.workers,
        force=args.force,
        command_prefix="trainset focus",
    )
    print(summary.report())
    return summary.exit_code


def _extract(args: argparse.Namespace) -> int:
    from trainset.focus.video import describe, extract_videos

    results = extract_videos(
        args.videos, args.raw_root, every=args.every, max_frames=args.max_frames, force=args.force
    )
    print(describe(results))
    return EXIT_FAILURES if any(r.status == "failed" for r in results) else EXIT_OK


def _index(args: argparse.Namespace) -> int:
    from trainset.focus.index import build_index

    result = build_index(
        args.raw_root,
        args.out_root,
        min_frames=args.min_frames,
        seed=args.seed,
        workers=args.workers,
    )
    print(result.report())
    return EXIT_OK


def deblur_params(args: argparse.Namespace) -> dict[str, Any]:
    """The deblur stage's parameters (its sentinel hash) from `trainset focus deblur` options."""
    from trainset.focus.deblur import make_deblur_backend

    options = parse_options(args.backend_option)
    backend = make_deblur_backend(args.backend, **options)
    if not 0 < args.sharpness_ratio < 1:
        raise InputError(
            "sharpness ratio must be in (0, 1)",
            key="--sharpness-ratio",
            expected="0 < r < 1",
            found=args.sharpness_ratio,
        )
    params = {
        "backend": args.backend,
        "options": options,
        "backend_params": backend.params(),
        "sharpness_ratio": args.sharpness_ratio,
    }
    return params


def _deblur(args: argparse.Namespace) -> int:
    return run_scene_stage(args, "deblur", deblur_params(args))


def depth_params(args: argparse.Namespace) -> dict[str, Any]:
    """The depth stage's parameters (its sentinel hash) from `trainset focus depth` options."""
    from trainset.focus.depth import depth_backend_for

    options: dict[str, Any] = parse_options(args.backend_option)
    if args.checkpoint is not None:
        options["checkpoint"] = str(args.checkpoint)
    if args.depth_scale is not None:
        options["depth_scale"] = args.depth_scale
    if args.depth_invalid is not None:
        options["invalid_codes"] = args.depth_invalid
    if args.depth_range is not None:
        options["depth_range"] = args.depth_range
    for key in ("encoder", "input_size", "device"):  # vda options, passed only when given
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    low, high = args.median_range
    if not 0 < low < high:
        raise InputError(
            "median range must be 0 < LOW < HIGH",
            key="--median-range",
            expected="0 < LOW < HIGH",
            found=(low, high),
        )
    if not 0 < args.min_valid_fraction <= 1:
        raise InputError(
            "minimum valid fraction must be in (0, 1]",
            key="--min-valid-fraction",
            expected="0 < f <= 1",
            found=args.min_valid_fraction,
        )
    base = {"backend": args.backend, "options": options}
    backend = depth_backend_for(base)
    params = {
        **base,
        "backend_params": backend.params(),
        "median_range_m": [low, high],
        "consistency_threshold": args.consistency_threshold,
        "min_valid_fraction": args.min_valid_fraction,
    }
    return params


def _depth(args: argparse.Namespace) -> int:
    return run_scene_stage(args, "depth", depth_params(args))


def status_table(out_root: Path) -> tuple[str, bool]:
    """Stages x (done, pending, failed, blocked) as text, and whether any scene failed.

    ``failed``: the stage's last run on the scene raised; ``blocked``: a stage it needs failed
    (the line names that stage); ``pending``: not run yet.
    """
    from trainset.focus.pack import PACK_DIR, PACK_FILE, open_packed
    from trainset.focus.problems import rejected_scenes
    from trainset.focus.stages import FOCUS_STAGES
    from trainset.pipeline.runner import scene_ids
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
    from trainset.focus.pack import pack_dataset
    from trainset.pipeline.progress import Progress
    from trainset.pipeline.runner import scene_ids

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
    from trainset.focus.index import DEFAULT_MIN_FRAMES, DEFAULT_SPLIT_SEED
    from trainset.focus.report import FocusReportOptions

    focus = add_group(
        sub, "focus", "FocusMamba data pipeline: index, deblur, depth, calibrate, render, validate."
    )
    epilog = "Exit codes: 0 all scenes done, 1 some scenes failed, 2 bad usage or input."

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
    p.add_argument(*flag("--min-frames"), dest="min_frames", type=int, default=DEFAULT_MIN_FRAMES)
    p.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED, help="split seed (plan: 42)")
    p.add_argument(
        "--workers", type=int, default=1, help="scenes validated in parallel (processes)"
    )
    p.set_defaults(func=_index)

    p = focus.add_parser("deblur", help="sharp frames (frames_sharp/)", epilog=epilog)
    add_scene_options(p)
    p.add_argument(
        "--backend",
        default="passthrough",
        help="passthrough | unsharp | genfocus (GenFocus DeblurNet on FLUX.1-dev; "
        "docs/focus-genfocus.md)",
    )
    p.add_argument(
        "--backend-option", action="append", metavar="KEY=VALUE", help="backend option (repeat)"
    )
    p.add_argument(
        *flag("--sharpness-ratio"),
        dest="sharpness_ratio",
        type=float,
        default=0.25,
        help="flag frames below this fraction of their scene's median sharpness",
    )
    p.set_defaults(func=_deblur)

    p = focus.add_parser("depth", help="metric depth (depth_maps/)", epilog=epilog)
    add_scene_options(p)
    p.add_argument("--backend", default="provided", help="provided | vda")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint (vda)")
    p.add_argument(
        "--encoder",
        choices=["vits", "vitb", "vitl"],
        help="vda model size (default: inferred from the checkpoint)",
    )
    p.add_argument(
        *flag("--input-size"),
        dest="input_size",
        type=int,
        help="vda: short side fed to the model, multiple of 14 (default 518)",
    )
    p.add_argument("--device", help="vda: auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        *flag("--depth-scale"),
        dest="depth_scale",
        type=float,
        help="provided: units per metre of integer depth (16-bit PNG, integer .npy; default 1000 = mm)",
    )
    add_depth_validity_options(p)
    p.add_argument(
        "--backend-option", action="append", metavar="KEY=VALUE", help="backend option (repeat)"
    )
    p.add_argument(
        *flag("--median-range"),
        dest="median_range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=[2.0, 50.0],
        help="median depth outside this range (m) is logged as a sanity warning",
    )
    p.add_argument(
        *flag("--consistency-threshold"),
        dest="consistency_threshold",
        type=float,
        default=0.15,
        help="flag scenes where mean|d[t+1]-d[t]|/mean(d[t]) exceeds this",
    )
    p.set_defaults(func=_depth)

    p = focus.add_parser(
        "status",
        help="stages x (done, pending, failed)",
        epilog="Exit codes: 0 no failed scene, 1 some failed, 2 bad usage.",
    )
    add_root_options(p)
    p.set_defaults(func=_status)

    from trainset.focus.cli_phases import register_commands

    register_commands(focus)

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
