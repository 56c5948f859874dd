"""Local runner: one stage over many scenes in a process pool, re-entrant and failure-isolated.

For each scene the runner skips work whose sentinel is current (same stage, version and
parameter hash, and not older than the sentinels of the stages it requires), refuses scenes
whose required stages are not done, runs the rest (``workers`` processes), records each
failure's traceback in ``logs/failures.jsonl`` while the other scenes go on, writes each
scene's sentinel after its ``run`` returns, and finally rebuilds the shared logs.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from trainset.cli_tools import EXIT_FAILURES, EXIT_OK, EXIT_USAGE
from trainset.errors import InputError
from trainset.pipeline.dataset_files import (
    append_failure,
    rebuild_scene_logs,
    record_config,
    remove_scene_temps,
    remove_shared_temps,
    scene_lock,
)
from trainset.pipeline.progress import Progress
from trainset.pipeline.scene_state import latest_failures, stage_states
from trainset.pipeline.stage import Stage, get_stage, register_stage, registered_stages
from trainset.store.hashing import params_hash
from trainset.store.sentinels import sentinel_path, write_sentinel


@dataclass(frozen=True)
class SceneOutcome:
    """What happened to one scene: ``done``, ``skipped`` (already current), ``failed``, ``blocked``.

    A ``blocked`` scene lacks a stage it requires; ``upstream_failed`` says that stage failed
    (fix and re-run it) rather than never ran (run it first).
    """

    scene_id: str
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    message: str = ""
    traceback: str = ""
    upstream_failed: bool = False


@dataclass
class StageSummary:
    """Outcomes of one stage run over a set of scenes."""

    stage: str
    outcomes: list[SceneOutcome]

    def with_status(self, status: str) -> list[SceneOutcome]:
        """Outcomes with ``status``, in scene order."""
        return [o for o in self.outcomes if o.status == status]

    @property
    def exit_code(self) -> int:
        """0 every scene done; 1 some scene failed or is blocked by an upstream failure; 2 some
        scene could not start because a stage it needs was never run (stages out of order)."""
        blocked = self.with_status("blocked")
        if self.with_status("failed") or any(o.upstream_failed for o in blocked):
            return EXIT_FAILURES
        if blocked:
            return EXIT_USAGE
        return EXIT_OK

    def report(self) -> str:
        """A short human summary, one line per failed or blocked scene."""
        counts = {s: len(self.with_status(s)) for s in ("done", "skipped", "failed", "blocked")}
        lines = [
            f"{self.stage}: {counts['done']} done, {counts['skipped']} already done, "
            f"{counts['failed']} failed, {counts['blocked']} blocked"
        ]
        for outcome in self.outcomes:
            if outcome.status in ("failed", "blocked"):
                lines.append(f"  {outcome.status} {outcome.scene_id}: {outcome.message}")
        return "\n".join(lines)


def is_scene_current(
    stage: Stage, out_root: str | Path, scene_id: str, params: Mapping[str, Any]
) -> bool:
    """True when the scene's stage is done (:meth:`Stage.done`: sentinel present, made from the
    current upstream sentinels) with these parameters."""
    own = stage.sentinel(out_root, scene_id)
    return (
        own is not None
        and own.params_hash == params_hash(params)
        and stage.done(out_root, scene_id)
    )


def missing_requirements(stage: Stage, out_root: str | Path, scene_id: str) -> list[str]:
    """Names of the stages ``stage`` requires that are not done for ``scene_id``."""
    return [name for name in stage.requires if not get_stage(name).done(out_root, scene_id)]


def _blocked_outcomes(
    stage: Stage, root: Path, waiting: Mapping[str, list[str]], command_prefix: str | None
) -> dict[str, SceneOutcome]:
    """Outcomes of scenes lacking required stages: blocked by an upstream failure (named with
    its error, to be fixed and re-run) or waiting for a stage that never ran (run it first)."""
    if not waiting:
        return {}

    def command(name: str) -> str:
        return f"`{command_prefix} {name}`" if command_prefix else f"stage {name}"

    required = [get_stage(name) for name in stage.requires]
    states = stage_states(root, list(waiting), required)
    failures = latest_failures(root)
    outcomes = {}
    for scene_id, missing in waiting.items():
        failed = [s for state in states[scene_id].values() for s in state.failed_stages]
        if failed:
            first = failed[0]
            error = failures[(scene_id, first)]["error"]
            message = f"{first} failed ({error}): fix it and re-run {command(first)}"
        else:
            hint = ", ".join(command(name) for name in missing)
            message = f"{'/'.join(missing)} not done: run {hint} first"
        outcomes[scene_id] = SceneOutcome(
            scene_id, "blocked", message=message, upstream_failed=bool(failed)
        )
    return outcomes


def run_one_scene(
    stage: Stage,
    out_root: str | Path,
    scene_id: str,
    params: Mapping[str, Any],
    force: bool = False,
) -> SceneOutcome:
    """Run ``stage`` on one scene and write its sentinel; exceptions become a failed outcome.

    Holds the scene's lock (:func:`scene_lock`): a second process on the same output root waits
    for it, then finds the scene current and skips it. The old sentinel is removed first, so a
    run killed part-way is never taken as done; temp files of dead writers are removed, those
    of live ones kept. The sentinel records the upstream sentinels the output was made from.
    """
    root = Path(out_root)
    out_dir = stage.output_dir(root, scene_id)
    with scene_lock(root, scene_id):
        if not force and is_scene_current(stage, root, scene_id, params):
            return SceneOutcome(scene_id, "skipped")
        remove_scene_temps(root, scene_id)
        sentinel_path(out_dir).unlink(missing_ok=True)
        inputs = stage.input_fingerprints(root, scene_id)
        try:
            counts = stage.run(root, scene_id, params)
            write_sentinel(out_dir, stage.name, stage.version, params, counts, inputs)
        except Exception as exc:
            return SceneOutcome(
                scene_id,
                "failed",
                message=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
    return SceneOutcome(scene_id, "done", counts=dict(counts))


def run_stage(
    stage: Stage,
    out_root: str | Path,
    scenes: Sequence[str],
    params: Mapping[str, Any],
    *,
    workers: int = 1,
    force: bool = False,
    stream: TextIO | None = None,
    command_prefix: str | None = None,
) -> StageSummary:
    """Run ``stage`` over ``scenes`` with ``workers`` processes (1: in this process).

    ``force`` redoes scenes whose sentinel is current. A blocked scene's message names the
    stage to run first, as a command when ``command_prefix`` is given (``trainset focus``). The parameters are recorded as section
    ``stage.name`` of ``{out_root}/config.yaml``. Returns every scene's outcome.
    """
    if workers < 1:
        raise InputError(
            "workers must be at least 1", key="--workers", expected=">= 1", found=workers
        )
    root = Path(out_root)
    remove_shared_temps(root)
    record_config(root, stage.name, params)
    outcomes: dict[str, SceneOutcome] = {}
    todo: list[str] = []
    waiting: dict[str, list[str]] = {}
    for scene_id in scenes:
        # Blocked is decided before current: output made from an upstream that is gone or
        # half-redone is never "already done".
        missing = missing_requirements(stage, root, scene_id)
        if missing:
            waiting[scene_id] = missing
            continue
        if not force and is_scene_current(stage, root, scene_id, params):
            outcomes[scene_id] = SceneOutcome(scene_id, "skipped")
            continue
        todo.append(scene_id)
    outcomes.update(_blocked_outcomes(stage, root, waiting, command_prefix))

    with Progress(
        len(todo), stage.name, stream=stream if stream is not None else sys.stderr
    ) as bar:
        for outcome in _execute(stage, root, todo, params, workers, force):
            outcomes[outcome.scene_id] = outcome
            if outcome.status == "failed":
                _record_failure(root, stage.name, outcome)
            bar.update(1, outcome.scene_id)
    try:
        rebuild_scene_logs(root)
    except OSError as exc:
        print(f"trainset: could not rebuild the shared logs: {exc}", file=sys.stderr)
    return StageSummary(stage.name, [outcomes[s] for s in scenes])


def _record_failure(root: Path, stage_name: str, outcome: SceneOutcome) -> None:
    """Append a failure to ``logs/failures.jsonl``; when that file cannot be written (a full
    disk), say on stderr what was not recorded and go on with the other scenes."""
    record = {
        "stage": stage_name,
        "scene": outcome.scene_id,
        "error": outcome.message,
        "traceback": outcome.traceback,
    }
    try:
        append_failure(root, record)
    except OSError as exc:
        print(
            f"trainset: could not record the failure of {stage_name} on {outcome.scene_id} "
            f"({outcome.message}): {exc}",
            file=sys.stderr,
        )


def pool_start_method() -> str:
    """``fork`` (cheap: no re-import) unless torch is loaded here, then ``spawn``.

    A process that has run torch holds thread pools that a forked child can deadlock on.
    """
    if "torch" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    return "fork"


def _init_worker(threads: int, stages: list[Stage], parent_pid: int) -> None:
    """Pool initializer: die with the parent, know the parent's stages, share the cores.

    - A worker must not outlive a killed parent (it would hold ~100 MB and maybe a scene's
      lock forever): on Linux the kernel sends it SIGKILL when the parent dies
      (``PR_SET_PDEATHSIG``); elsewhere a thread checks the parent every second.
    - The stage registry is rebuilt here, so a spawned worker can follow ``requires``.
    - Each worker gets its share of the cores for numpy/torch thread pools (a user's own
      OMP_NUM_THREADS wins), so N workers do not run N x cores threads.
    """
    _die_with_parent(parent_pid)
    for stage in stages:
        register_stage(stage)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # the parent died before the call
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _execute(
    stage: Stage,
    root: Path,
    todo: list[str],
    params: Mapping[str, Any],
    workers: int,
    force: bool,
) -> Iterator[SceneOutcome]:
    if not todo:
        return
    if workers == 1 or len(todo) == 1:
        for scene_id in todo:
            yield run_one_scene(stage, root, scene_id, params, force)
        return
    context = multiprocessing.get_context(pool_start_method())
    n_workers = min(workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    with ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(threads, registered_stages(), os.getpid()),
    ) as pool:
        futures: dict[Future[SceneOutcome], str] = {
            pool.submit(run_one_scene, stage, root, scene_id, dict(params), force): scene_id
            for scene_id in todo
        }
        for future in as_completed(futures):
            scene_id = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:
                outcome = SceneOutcome(
                    scene_id,
                    "failed",
                    message=f"worker died: {type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                )
            yield outcome
