"""The ``trainset`` command: core sub-commands here, each domain registers its own.

Exit codes: 0 ok, 1 the work found failures (validation), 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from trainset import __version__
from trainset.cli_tools import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    Handler,
    Parser,
    add_group,
    flag,
)
from trainset.errors import InputError, TrainsetError

__all__ = ["EXIT_FAILURES", "EXIT_OK", "EXIT_USAGE", "add_group", "build_parser", "flag", "main"]


def _step(args: argparse.Namespace) -> int:
    from trainset.pipeline.plan import run_step_spec

    return run_step_spec(args.spec, args.unit_index)


def _register_step(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "step",
        help="run one step of a planned pipeline from its spec (what SLURM jobs run)",
        description="Run the step written at SPEC ({out_root}/slurm/<step>.step.json, written "
        "by an executor): for a per-unit step the unit at --unit-index (an array task), else "
        "the whole set.",
        epilog="Exit codes: those of the step: 0 ok, 1 failures found, 2 bad usage or input.",
    )
    p.add_argument("spec", type=Path, metavar="SPEC")
    p.add_argument(*flag("--unit-index"), dest="unit_index", type=int)
    p.set_defaults(func=_step)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    from trainset import demo, doctor
    from trainset.focus import cli as focus_cli
    from trainset.ptycho import cli as ptycho_cli
    from trainset.sar import cli as sar_cli

    parser = Parser(
        prog="trainset",
        description="Build, check and stream training sets for scientific imaging models.",
        epilog="Exit codes: 0 ok, 1 the work found failures, 2 bad usage or bad input.",
    )
    parser.add_argument("--version", action="version", version=f"trainset {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    doctor.register(sub)
    demo.register(sub)
    focus_cli.register(sub)
    sar_cli.register(sub)
    ptycho_cli.register(sub)
    _register_step(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    # The command as typed, for messages that tell the user what to run again.
    args.command_line = ["trainset", *words]
    handler: Handler = args.func
    try:
        return handler(args)
    except InputError as exc:
        print(f"trainset: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TrainsetError as exc:
        print(f"trainset: error: {exc}", file=sys.stderr)
        return EXIT_FAILURES
    except OSError as exc:
        # A full disk, a permission or a vanished file: what and where, not a traceback.
        print(f"trainset: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("trainset: interrupted", file=sys.stderr)
        return 130
