"""`trainset focus ...` sub-commands: index, deblur, depth, status.

Scene stages share ``--out-root``, ``--scene ID`` | ``--task-index I``, ``--workers N`` and
``--force`` (:func:`add_scene_options`) and run through :func:`run_scene_stage`, which records
the stage's parameters in ``{out_root}/config.yaml`` and maps the outcome to an exit code.
"""

from __future__ import annotations

import argparse
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


def parse_options(items: list[str] | None, *, key: str = "--backend-option") -> dict[str, str]:
    """``KEY=VALUE`` strings of an option flag (``--backend-option``) as a dict."""
    options: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            label = key.strip("-").replace("-", " ")
            raise InputError(f"{label} must be KEY=VALUE", key=key, found=item)
        options[name.replace("-", "_")] = value
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
    base = {"backend": args.backend, "options": options}
    backend = depth_backend_for(base)
    params = {
        **base,
        "backend_params": backend.params(),
        "median_range_m": [low, high],
        "consistency_threshold": args.consistency_threshold,
    }
    return params


def _depth(args: argparse.Namespace) -> int:
    return run_scene_stage(args, "depth", depth_params(args))


def status_table(out_root: Path) -> tuple[str, bool]:
    """Stages x (done, pending, failed) as text, and whether any scene has failed."""
    from trainset.focus import stages  # noqa: F401  (registers the focus stages)
    from trainset.focus.pack import PACK_DIR, PACK_FILE, open_packed
    from trainset.pipeline.dataset_files import read_failures
    from trainset.pipeline.runner import scene_ids
    from trainset.pipeline.stage import registered_stages

    ids = scene_ids(out_root)
    failed_by_stage: dict[str, set[str]] = {}
    for record in read_failures(out_root):
        failed_by_stage.setdefault(str(record.get("stage")), set()).add(str(record.get("scene")))
    lines = [
        f"{len(ids)} scenes in {out_root}",
        f"{'stage':<10} {'done':>6} {'pending':>8} {'failed':>7}",
    ]
    any_failed = False
    for stage in registered_stages():
        done = {s for s in ids if stage.sentinel(out_root, s) is not None}
        failed = (failed_by_stage.get(stage.name, set()) & set(ids)) - done
        pending = len(ids) - len(done) - len(failed)
        any_failed = any_failed or bool(failed)
        lines.append(f"{stage.name:<10} {len(done):>6} {pending:>8} {len(failed):>7}")
        lines.extend(f"  failed: {s}" for s in sorted(failed))
    packed = [s for s in ids if (out_root / s / PACK_DIR / PACK_FILE).exists()]
    if packed:
        current = sum(open_packed(out_root / s) is not None for s in packed)
        lines.append(
            f"{'pack':<10} {current:>6} {len(ids) - current:>8} {0:>7}"
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
        counts = pack_dataset(
            args.out_root, scenes=scenes, force=args.force, progress=lambda s: bar.update(note=s)
        )
    print(
        f"packed {counts['packed']} scene(s), {counts['current']} already current: "
        f"{args.out_root}/<scene>/packed/"
    )
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `trainset focus` and its sub-commands."""
    from trainset.focus.index import DEFAULT_MIN_FRAMES, DEFAULT_SPLIT_SEED

    focus = add_group(
        sub, "focus", "FocusMamba data pipeline: index, deblur, depth, calibrate, render, validate."
    )
    epilog = "Exit codes: 0 all scenes done, 1 some scenes failed, 2 bad usage or input."

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
    p.add_argument("--backend", default="passthrough", help="passthrough | unsharp")
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
        help="units per metre of 16-bit PNG depth (provided; default 1000)",
    )
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
        epilog="Exit codes: 0 packs written or current, 2 bad usage or input.",
    )
    add_root_options(p)
    p.add_argument("--scene", action="append", help="pack only this scene (repeat)")
    p.add_argument("--force", action="store_true", help="re-pack scenes whose pack is current")
    p.set_defaults(func=_pack)
