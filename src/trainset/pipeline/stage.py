"""Scene stages: a named, versioned unit of per-scene work with a sentinel and prerequisites.

A stage's ``run(out_root, scene_id, params)`` does one scene (every write atomic) and returns
counts. The runner (:mod:`trainset.pipeline.runner`) decides whether a scene needs the work,
checks prerequisites, isolates failures and writes the sentinel after ``run`` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainset.errors import InputError
from trainset.store.sentinels import (
    Sentinel,
    read_sentinel,
    sentinel_fingerprint,
    sentinel_path,
)

StageRun = Callable[[Path, str, Mapping[str, Any]], dict[str, int]]


@dataclass(frozen=True)
class Stage:
    """One per-scene stage of a pipeline.

    ``sentinel_dir`` is relative to ``{out_root}/{scene_id}``; ``requires`` names the stages
    that must be done for a scene first; ``run`` must be a module-level function so a process
    pool can pickle it.
    """

    name: str
    version: int
    sentinel_dir: str
    requires: tuple[str, ...]
    run: StageRun

    def output_dir(self, out_root: str | Path, scene_id: str) -> Path:
        """``{out_root}/{scene_id}/{sentinel_dir}``: where this stage's sentinel lives."""
        return Path(out_root) / scene_id / self.sentinel_dir

    def sentinel(self, out_root: str | Path, scene_id: str) -> Sentinel | None:
        """This stage's sentinel for a scene, or None when the stage is not done there."""
        found = read_sentinel(self.output_dir(out_root, scene_id))
        if found is None or found.stage != self.name or found.stage_version != self.version:
            return None
        return found

    def input_fingerprints(self, out_root: str | Path, scene_id: str) -> dict[str, str]:
        """Fingerprints of the sentinels of the stages this one requires (those present)."""
        found = {}
        for name in self.requires:
            fingerprint = sentinel_fingerprint(get_stage(name).output_dir(out_root, scene_id))
            if fingerprint is not None:
                found[name] = fingerprint
        return found

    def done(self, out_root: str | Path, scene_id: str) -> bool:
        """Whether this stage's output for the scene is complete and still made from what is
        upstream: its sentinel is there, every required stage is done (recursively), and each
        required sentinel is the one this output was made from (a redone or half-redone upstream
        makes it stale). Sentinels from before inputs were recorded fall back to "not older than
        the required sentinels"."""
        own = self.sentinel(out_root, scene_id)
        if own is None:
            return False
        if not all(get_stage(name).done(out_root, scene_id) for name in self.requires):
            return False
        if own.inputs is not None:
            return own.inputs == self.input_fingerprints(out_root, scene_id)
        own_mtime = sentinel_path(self.output_dir(out_root, scene_id)).stat().st_mtime_ns
        return all(
            sentinel_path(get_stage(name).output_dir(out_root, scene_id)).stat().st_mtime_ns
            <= own_mtime
            for name in self.requires
        )


_STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    """Make ``stage`` known by name (so other stages can require it); returns the stage.

    Registering the same name again replaces the earlier stage.
    """
    _STAGES[stage.name] = stage
    return stage


def get_stage(name: str) -> Stage:
    """The registered stage called ``name``; InputError naming the known stages otherwise."""
    try:
        return _STAGES[name]
    except KeyError:
        raise InputError("unknown stage", key=name, expected=sorted(_STAGES), found=name) from None


def registered_stages() -> list[Stage]:
    """Every registered stage, in registration order."""
    return list(_STAGES.values())
