"""Stage and scene states derived from sentinels, logs/failures.jsonl and the stage graph."""

from __future__ import annotations

import pytest

from trainset.pipeline import stage as stage_module
from trainset.pipeline.dataset_files import append_failure
from trainset.pipeline.scene_state import StageState, scene_status, stage_states
from trainset.pipeline.stage import Stage, register_stage
from trainset.store.sentinels import write_sentinel


def _noop(out_root, scene_id, params):
    return {}


# A diamond: grow -> (cut, paint) -> pack.
GROW = Stage("st_grow", 1, "grow", (), _noop)
CUT = Stage("st_cut", 1, "cut", ("st_grow",), _noop)
PAINT = Stage("st_paint", 1, "paint", ("st_grow",), _noop)
PACK = Stage("st_pack", 1, "pack", ("st_cut", "st_paint"), _noop)
STAGES = [GROW, CUT, PAINT, PACK]


@pytest.fixture(autouse=True)
def _diamond_registered(monkeypatch):
    """Register the diamond for one test only (the registry is process-wide)."""
    monkeypatch.setattr(stage_module, "_STAGES", dict(stage_module._STAGES))
    for stage in STAGES:
        register_stage(stage)


def _done(root, scene, stage):
    write_sentinel(stage.output_dir(root, scene), stage.name, stage.version, {})


def _fail(root, scene, stage, error):
    append_failure(root, {"stage": stage.name, "scene": scene, "error": error, "traceback": ""})


def _statuses(states):
    return {name: state.status for name, state in states.items()}


def test_a_failed_stage_blocks_every_stage_below_it(tmp_path):
    _done(tmp_path, "a", GROW)
    _fail(tmp_path, "a", CUT, "ValueError: bad cut")
    states = stage_states(tmp_path, ["a"], STAGES)["a"]
    assert _statuses(states) == {
        "st_grow": "done",
        "st_cut": "failed",
        "st_paint": "pending",
        "st_pack": "blocked",
    }
    assert states["st_cut"].reason == "ValueError: bad cut"
    assert states["st_pack"] == StageState("blocked", "st_cut failed", ("st_cut",))


def test_a_failure_upstream_of_two_branches_names_it_once(tmp_path):
    _fail(tmp_path, "a", GROW, "OSError: disk")
    states = stage_states(tmp_path, ["a"], STAGES)["a"]
    assert [s.status for s in states.values()] == ["failed", "blocked", "blocked", "blocked"]
    assert states["st_pack"].failed_stages == ("st_grow",)


def test_the_latest_failure_record_gives_the_reason(tmp_path):
    _fail(tmp_path, "a", GROW, "first")
    _fail(tmp_path, "a", GROW, "second")
    assert stage_states(tmp_path, ["a"], [GROW])["a"]["st_grow"].reason == "second"


def test_a_sentinel_written_after_a_failure_makes_the_stage_done(tmp_path):
    _fail(tmp_path, "a", GROW, "fixed since")
    _done(tmp_path, "a", GROW)
    assert stage_states(tmp_path, ["a"], [GROW])["a"]["st_grow"].status == "done"


def test_failures_of_one_scene_do_not_touch_another(tmp_path):
    _fail(tmp_path, "a", GROW, "broken")
    states = stage_states(tmp_path, ["a", "b"], STAGES)
    assert set(_statuses(states["b"]).values()) == {"pending"}


def test_scene_status_is_the_worst_of_its_stages(tmp_path):
    _done(tmp_path, "a", GROW)
    _fail(tmp_path, "b", GROW, "broken")
    for stage in STAGES:
        _done(tmp_path, "c", stage)
    states = stage_states(tmp_path, ["a", "b", "c"], STAGES)
    assert {s: scene_status(states[s]) for s in states} == {
        "a": "pending",
        "b": "failed",
        "c": "done",
    }
