"""Where each scene stands in each stage, derived from the files alone.

A stage of a scene is ``done`` (its sentinel is there), ``failed`` (its last run raised: a record
in ``logs/failures.jsonl`` and no sentinel since), ``blocked`` (a stage it requires, directly or
through others, failed: re-run that one) or ``pending`` (not run yet, or waiting for a stage that
has not run). Both executors write the same files, so this reads the same for a local run and for
SLURM array jobs; ``focus status``, the end of ``focus run`` and the reports ask it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainset.pipeline.dataset_files import read_failures
from trainset.pipeline.stage import Stage, get_stage

DONE, FAILED, BLOCKED, PENDING = "done", "failed", "blocked", "pending"


@dataclass(frozen=True)
class SceneState:
    """One stage of one scene. ``stage`` is the stage that failed (itself when ``failed``, the
    upstream stage to re-run when ``blocked``); ``reason`` is that failure's error."""

    status: str
    stage: str = ""
    reason: str = ""


def latest_failures(out_root: str | Path) -> dict[tuple[str, str], str]:
    """``(stage, scene) -> error`` of the newest record of each pair in ``logs/failures.jsonl``."""
    found: dict[tuple[str, str], str] = {}
    for record in read_failures(out_root):
        found[(str(record.get("stage")), str(record.get("scene")))] = str(record.get("error", ""))
    return found


def upstream_failure(
    stage: Stage,
    out_root: str | Path,
    scene_id: str,
    failures: Mapping[tuple[str, str], str],
) -> SceneState | None:
    """The failure that keeps ``stage`` from running on ``scene_id``: the first stage it requires
    (directly or through others, in declaration order) that is not done and whose last run failed.
    None when nothing upstream failed (the missing stages simply have not run)."""
    for name in stage.requires:
        required = get_stage(name)
        if required.sentinel(out_root, scene_id) is not None:
            continue
        if (name, scene_id) in failures:
            return SceneState(BLOCKED, name, failures[(name, scene_id)])
        deeper = upstream_failure(required, out_root, scene_id, failures)
        if deeper is not None:
            return deeper
    return None


def scene_state(
    stage: Stage,
    out_root: str | Path,
    scene_id: str,
    failures: Mapping[tuple[str, str], str],
) -> SceneState:
    """``stage``'s state for one scene (see the module docstring)."""
    if stage.sentinel(out_root, scene_id) is not None:
        return SceneState(DONE)
    if (stage.name, scene_id) in failures:
        return SceneState(FAILED, stage.name, failures[(stage.name, scene_id)])
    return upstream_failure(stage, out_root, scene_id, failures) or SceneState(PENDING)


def stage_states(
    out_root: str | Path, scenes: Sequence[str], stages: Sequence[Stage]
) -> dict[str, dict[str, SceneState]]:
    """``{stage name: {scene: SceneState}}`` for every given stage and scene."""
    failures = latest_failures(out_root)
    return {
        stage.name: {s: scene_state(stage, out_root, s, failures) for s in scenes}
        for stage in stages
    }
