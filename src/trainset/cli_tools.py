"""What every command line of trainset shares; imports no domain.

- Exit codes: 0 ok, 1 the work found failures, 2 bad usage or bad input (one definition).
- :func:`flag` (the plans' underscore aliases), :class:`Parser` (usage errors exit 2),
  :func:`add_group` (``trainset focus ...``).
- Options from frozen dataclasses: a field declared with :func:`option` becomes a command-line
  option (:func:`add_options`) and comes back as the dataclass (:func:`from_args`), so the
  defaults, types and help of a stage's parameters live in one place, and a command that runs
  several stages (``focus run``) offers every option of each by construction.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]
C = TypeVar("C")


def flag(name: str) -> list[str]:
    """Option strings for ``name`` plus the plans' underscore alias (``--raw-root``, ``--raw_root``)."""
    alias = name.replace("-", "_")
    alias = "--" + alias[2:] if name.startswith("--") else alias
    return [name] if alias == name else [name, alias]


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with :data:`EXIT_USAGE`."""

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
    return group.add_subparsers(dest=f"{name}_command", metavar="COMMAND", parser_class=Parser)


# -- options declared on dataclass fields ------------------------------------------------------

_OPTION = "trainset.option"


@dataclasses.dataclass(frozen=True)
class Option:
    """How a dataclass field appears on the command line.

    ``flag``: its option in the stage's own command; ``run_flag``: its option where several
    stages share one command (``focus run``), when it must differ (``--backend`` of deblur is
    ``--deblur-backend`` there). ``kind``: ``value`` (one value of ``type``), ``pair`` (two
    values), ``kv`` (repeated ``KEY=VALUE``, kept as a tuple of pairs) or ``switch`` (a flag).
    """

    flag: str
    help: str
    type: Callable[[str], Any] | None = None
    run_flag: str | None = None
    kind: str = "value"
    choices: tuple[str, ...] | None = None
    metavar: str | tuple[str, ...] | None = None


def option(default: Any, flag: str, help: str, **kwargs: Any) -> Any:
    """A dataclass field with ``default`` that is the command-line option ``flag``."""
    return dataclasses.field(default=default, metadata={_OPTION: Option(flag, help, **kwargs)})


def options_of(cls: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    """The fields of dataclass ``cls`` declared with :func:`option`, in order."""
    return [(f, f.metadata[_OPTION]) for f in dataclasses.fields(cls) if _OPTION in f.metadata]


def dest_of(cls: type, name: str, prefix: str | None) -> str:
    """The argparse ``dest`` of a field: its name, prefixed in shared commands."""
    return f"{prefix}__{name}" if prefix else name


def add_options(parser: argparse.ArgumentParser, cls: type, *, prefix: str | None = None) -> None:
    """Add the options of dataclass ``cls`` to ``parser``; with ``prefix`` (a command running
    several stages) use each field's ``run_flag`` and keep the values apart under the prefix."""
    for field, opt in options_of(cls):
        name = opt.run_flag if prefix and opt.run_flag else opt.flag
        default = field.default
        shown = "" if default in (None, (), False) else f" (default {_show(default)})"
        kwargs: dict[str, Any] = {
            "dest": dest_of(cls, field.name, prefix),
            "help": opt.help + shown,
        }
        if opt.kind == "switch":
            parser.add_argument(*flag(name), action="store_true", **kwargs)
            continue
        if opt.kind == "kv":
            kwargs.update(action="append", metavar=opt.metavar or "KEY=VALUE", default=None)
            parser.add_argument(*flag(name), **kwargs)
            continue
        kwargs["type"] = opt.type or type(default)
        kwargs["default"] = default
        if opt.choices is not None:
            kwargs["choices"] = opt.choices
        kwargs["metavar"] = opt.metavar or field.name.upper()
        if opt.kind == "pair":
            kwargs["nargs"] = 2
        parser.add_argument(*flag(name), **kwargs)


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


def parse_kv(items: Sequence[str] | None, key: str) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` strings as sorted ``(key, value)`` pairs (``-`` in keys becomes ``_``);
    a string without ``=`` is an InputError naming the option ``key``."""
    from trainset.errors import InputError

    pairs: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError("option must be KEY=VALUE", key=key, found=item)
        pairs[name.replace("-", "_")] = value
    return tuple(sorted(pairs.items()))


def from_args(cls: type[C], args: argparse.Namespace, *, prefix: str | None = None) -> C:
    """The dataclass ``cls`` made from the parsed options that :func:`add_options` added."""
    values: dict[str, Any] = {}
    for field, opt in options_of(cls):
        raw = getattr(args, dest_of(cls, field.name, prefix))
        if opt.kind == "kv":
            name = opt.run_flag if prefix and opt.run_flag else opt.flag
            values[field.name] = parse_kv(raw, name)
        elif opt.kind == "pair":
            values[field.name] = tuple(raw)
        elif isinstance(raw, Path) and field.default is None:
            values[field.name] = str(raw)
        else:
            values[field.name] = raw
    return cls(**values)


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON-able data (tuples as lists, paths as strings)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """The dataclass ``cls`` from :func:`config_dict` output (lists back to tuples: configs are
    frozen and hold tuples)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _tuples(v) for k, v in data.items() if k in names})


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
