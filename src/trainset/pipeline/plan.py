"""Typed pipelines: a domain plans :class:`Step` objects, an executor runs them.

A step names an *action*, a function ``"package.module:function"`` with the signature
``action(out_root, params, units, *, workers, force) -> exit code``, its JSON-able parameters
(a domain's frozen dataclass as a dict), and either the *units* it works on one at a time
(scenes, rasters: a SLURM array, a process pool locally) or ``None`` for one job over the whole
set. The core knows no domain: the action is imported by name where it runs.

Executors: :func:`run_locally` calls the actions here, in order; the SLURM executor
(:func:`trainset.pipeline.slurm.submit_plan`) writes each step as a spec file that a job hands
to ``python -m trainset step SPEC --unit-index I`` (:func:`run_step_spec`), which calls the same
action with the same parameters. Both follow one rule: a step that exits 1 (some units failed)
lets the later steps go on with the units that can; exit 2 (an error of the whole invocation)
stops the local run.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trainset.cli_tools import EXIT_FAILURES, EXIT_OK, EXIT_USAGE
from trainset.errors import InputError
from trainset.store import atomic_write_json, read_json

SPEC_FORMAT = "trainset.step"


@dataclass(frozen=True)
class StageResources:
    """What one job (or each task of an array) asks SLURM for.

    ``mem`` and ``time`` are SLURM strings ("48G", "512M"; "04:00:00", "1-00:00:00");
    ``throttle`` is the array's ``%K`` (at most K tasks at once); ``gres`` e.g. "gpu:1";
    ``constraint`` a node feature (e.g. a GPU model with the memory a model needs).
    """

    partition: str
    cpus: int
    mem: str
    time: str
    gres: str | None = None
    throttle: int | None = None
    account: str | None = None
    constraint: str | None = None


class Action(Protocol):
    def __call__(
        self,
        out_root: Path,
        params: Mapping[str, Any],
        units: Sequence[str] | None,
        *,
        workers: int = 1,
        force: bool = False,
    ) -> int: ...


@dataclass(frozen=True)
class Step:
    """One step of a plan.

    ``units``: the units a per-unit step works on, in order (array task i is ``units[i]``);
    None for a step over the whole set. ``pending``: the units that still need it (None: not
    known before earlier steps run, so all). ``after``: steps whose jobs must end first; for a
    whole-set step these are waited for whatever their outcome, a per-unit step names the
    whole-set steps it needs to have succeeded. ``resources``: the default SLURM resources.
    """

    name: str
    action: str
    params: Mapping[str, Any]
    units: tuple[str, ...] | None = None
    pending: frozenset[str] | None = None
    after: tuple[str, ...] = ()
    resources: StageResources = StageResources("cpu", 1, "4G", "01:00:00")


@dataclass(frozen=True)
class Plan:
    """The steps of a run over ``out_root``, in order, and the command that planned it."""

    out_root: Path
    steps: tuple[Step, ...]
    command: tuple[str, ...] = ()
    notes: Mapping[str, Any] = field(default_factory=dict)


def load_action(name: str) -> Action:
    """The function ``"package.module:function"`` (InputError when it cannot be imported)."""
    module_name, _, func_name = name.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise InputError("unknown step action", key="action", found=name) from exc
    return func


def run_step(
    step: Step, out_root: Path, *, units: Sequence[str] | None = None, workers: int = 1
) -> int:
    """Run one step here: its action over ``units`` (default: the step's own), or the set."""
    action = load_action(step.action)
    chosen = list(step.units) if units is None and step.units is not None else units
    return action(Path(out_root), step.params, chosen, workers=workers)


@dataclass
class LocalResult:
    """Exit codes of the steps a local run ran, and the error that stopped it, if any."""

    codes: list[tuple[str, int]] = field(default_factory=list)
    stopped_by: InputError | None = None

    @property
    def some_failed(self) -> bool:
        return any(code == EXIT_FAILURES for _, code in self.codes)

    @property
    def exit_code(self) -> int:
        if any(code == EXIT_USAGE for _, code in self.codes):
            return EXIT_USAGE
        return EXIT_FAILURES if self.some_failed or self.stopped_by else EXIT_OK


def run_locally(
    plan: Plan,
    *,
    workers: int = 1,
    before_step: Callable[[Step], None] | None = None,
) -> LocalResult:
    """Run every step of ``plan`` here, in order (the local executor).

    A step exiting 1 lets the later ones go on; exit 2 stops. An InputError raised by a step
    after an earlier one found failures ends the run as a consequence of those failures
    (``stopped_by``: e.g. nothing left to calibrate on); before that it is the caller's error.
    ``before_step`` is called with each step first (progress lines).
    """
    result = LocalResult()
    for step in plan.steps:
        if before_step is not None:
            before_step(step)
        try:
            code = run_step(step, plan.out_root, workers=workers)
        except InputError as exc:
            if not result.some_failed:
                raise
            result.stopped_by = exc
            break
        result.codes.append((step.name, code))
        if code == EXIT_USAGE:
            break
    return result


# -- step specs: what a SLURM job runs -------------------------------------------------------


def spec_path(out_root: str | os.PathLike[str], step: str, slurm_dir: str = "slurm") -> Path:
    """Where a step's spec is written: ``{out_root}/slurm/{step}.step.json``."""
    return Path(out_root) / slurm_dir / f"{step}.step.json"


def write_step_spec(path: Path, step: Step, out_root: Path) -> Path:
    """Write ``step`` as the JSON a job reads (:func:`run_step_spec`); returns the path."""
    atomic_write_json(
        path,
        {
            "format": SPEC_FORMAT,
            "step": step.name,
            "action": step.action,
            "out_root": str(out_root),
            "params": dict(step.params),
            "units": None if step.units is None else list(step.units),
        },
    )
    return path


def run_step_spec(path: str | os.PathLike[str], unit_index: int | None = None) -> int:
    """Run the step written at ``path``: unit ``unit_index`` of a per-unit step, or the set."""
    source = Path(path)
    spec = read_json(source)
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise InputError(
            "not a step spec", file=source, key="format", expected=SPEC_FORMAT, found=spec
        )
    units = spec.get("units")
    step = Step(str(spec["step"]), str(spec["action"]), spec.get("params") or {})
    if units is None:
        if unit_index is not None:
            raise InputError("a whole-set step takes no unit index", file=source, key="units")
        return run_step(step, Path(spec["out_root"]))
    if unit_index is None or not 0 <= unit_index < len(units):
        raise InputError(
            "unit index out of range",
            file=source,
            key="--unit-index",
            expected=f"0..{len(units) - 1}",
            found=unit_index,
        )
    return run_step(step, Path(spec["out_root"]), units=[str(units[unit_index])])
