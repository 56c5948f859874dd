"""The ``trainset`` command: core sub-commands here, each domain registers its own.

Exit codes: 0 ok, 1 the work found failures (validation), 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from trainset import __version__
from trainset.errors import InputError, TrainsetError

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def flag(name: str) -> list[str]:
    """Option strings for ``name`` plus the plans' underscore alias (``--raw-root``, ``--raw_root``)."""
    alias = name.replace("-", "_")
    alias = "--" + alias[2:] if name.startswith("--") else alias
    return [name] if alias == name else [name, alias]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add_group(
    sub: argparse._SubParsersAction, name: str, help_text: str
) -> argparse._SubParsersAction:
    """Add a command group (``trainset focus ...``); run alone it prints its help and exits 2."""
    group = sub.add_parser(name, help=help_text, description=help_text)

    def show_help(_: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    group.set_defaults(func=show_help)
    return group.add_subparsers(dest=f"{name}_command", metavar="COMMAND", parser_class=_Parser)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    from trainset import demo, doctor
    from trainset.focus import cli as focus_cli
    from trainset.ptycho import cli as ptycho_cli
    from trainset.sar import cli as sar_cli

    parser = _Parser(
        prog="trainset",
        description="Build, check and stream training sets for scientific imaging models.",
        epilog="Exit codes: 0 ok, 1 the work found failures, 2 bad usage or bad input.",
    )
    parser.add_argument("--version", action="version", version=f"trainset {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    doctor.register(sub)
    demo.register(sub)
    focus_cli.register(sub)
    sar_cli.register(sub)
    ptycho_cli.register(sub)
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


if __name__ == "__main__":
    sys.exit(main())
