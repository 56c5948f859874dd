"""Where each scene stands in each stage, derived from the files alone.

For every (scene, registered stage), from the sentinels, ``logs/failures.jsonl`` and the
stages' ``requires`` (the stage graph), never from console output:

| status | meaning |
|---|---|
| ``done`` | the stage's sentinel is there (this stage and version) and made from the current upstream sentinels (:meth:`Stage.done`) |
| ``failed`` | no sentinel, and ``logs/failures.jsonl`` holds a failure of this stage for the scene |
| ``blocked`` | no sentinel, not failed, and a stage it requires (directly or further up) failed: it never ran |
| ``pending`` | none of these: not run yet |

A scene as a whole is ``failed`` when any of its stages failed, else ``blocked`` when any is
blocked, else ``pending`` when any is pending, else ``done`` (:func:`scene_status`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainset.pipeline.dataset_files import read_failures
from trainset.pipeline.stage import Stage, get_stage, registered_stages

STATUSES = ("done", "failed", "blocked", "pending")


@dataclass(frozen=True)
class StageState:
    """One stage of one scene: ``status`` (one of :data:`STATUSES`) and why.

    ``reason``: for ``failed`` the recorded error, for ``blocked`` which failed stage(s) it
    waits for; ``failed_stages``: the failed stage itself, or the failed stages upstream of a
    blocked one; ``time``: when the failure was recorded (UTC, ISO 8601).
    """

    status: str
    reason: str = ""
    failed_stages: tuple[str, ...] = ()
    time: str = ""


def latest_failures(out_root: str | Path) -> dict[tuple[str, str], dict[str, str]]:
    """The last record of ``logs/failures.jsonl`` per (scene, stage): ``{error, time}``."""
    latest: dict[tuple[str, str], dict[str, str]] = {}
    for record in read_failures(out_root):
        key = (str(record.get("scene")), str(record.get("stage")))
        latest[key] = {"error": str(record.get("error", "")), "time": str(record.get("time", ""))}
    return latest


def _state(
    root: Path,
    scene_id: str,
    stage: Stage,
    failures: Mapping[tuple[str, str], Mapping[str, str]],
    known: dict[str, StageState],
) -> StageState:
    """State of ``stage`` for one scene; ``known`` memoises the scene's stages already seen."""
    if stage.name in known:
        return known[stage.name]
    failure = failures.get((scene_id, stage.name))
    if stage.done(root, scene_id):
        state = StageState("done")
    elif failure is not None:
        state = StageState("failed", failure["error"], (stage.name,), failure["time"])
    else:
        upstream: list[str] = []
        for name in stage.requires:
            required = _state(root, scene_id, get_stage(name), failures, known)
            if required.status in ("failed", "blocked"):
                upstream += [s for s in required.failed_stages if s not in upstream]
        if upstream:
            state = StageState("blocked", f"{', '.join(upstream)} failed", tuple(upstream))
        else:
            state = StageState("pending")
    known[stage.name] = state
    return state


def stage_states(
    out_root: str | Path, scene_ids: Iterable[str], stages: Sequence[Stage] | None = None
) -> dict[str, dict[str, StageState]]:
    """``{scene: {stage name: StageState}}`` for ``stages`` (default: every registered stage)."""
    root = Path(out_root)
    chosen = list(stages) if stages is not None else registered_stages()
    failures = latest_failures(root)
    result: dict[str, dict[str, StageState]] = {}
    for scene_id in scene_ids:
        known: dict[str, StageState] = {}
        result[scene_id] = {s.name: _state(root, scene_id, s, failures, known) for s in chosen}
    return result


def scene_status(states: Mapping[str, StageState]) -> str:
    """The scene's status from its stages' states (see the module docstring)."""
    found = {state.status for state in states.values()}
    for status in ("failed", "blocked", "pending"):
        if status in found:
            return status
    return "done"
