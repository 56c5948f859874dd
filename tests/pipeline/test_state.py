"""Stage states derived from sentinels and logs/failures.jsonl (trainset.pipeline.state)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainset.pipeline.runner import run_stage
from trainset.pipeline.stage import Stage, register_stage
from trainset.pipeline.state import SceneState, stage_states


def _make(name: str):
    def run(out_root: Path, scene_id: str, params: Mapping[str, Any]) -> dict[str, int]:
        if scene_id in params.get("fail", []):
            raise RuntimeError(f"{name} broke on {scene_id}{params.get('tag', '')}")
        return {}

    return run


A = register_stage(Stage("state_a", 1, "a", (), _make("a")))
B = register_stage(Stage("state_b", 1, "b", ("state_a",), _make("b")))
C = register_stage(Stage("state_c", 1, "c", ("state_b",), _make("c")))


def test_failed_blocked_pending_and_done_are_told_apart(tmp_path):
    run_stage(A, tmp_path, ["x", "y", "z"], {"fail": ["y"]})
    run_stage(B, tmp_path, ["x", "y"], {})
    states = stage_states(tmp_path, ["x", "y", "z"], [A, B, C])
    assert states["state_a"] == {
        "x": SceneState("done"),
        "y": SceneState("failed", "state_a", "RuntimeError: a broke on y"),
        "z": SceneState("done"),
    }
    assert states["state_b"]["y"] == SceneState("blocked", "state_a", "RuntimeError: a broke on y")
    assert states["state_b"]["z"] == SceneState("pending")
    # Two stages down, the root failure is still named.
    assert states["state_c"]["y"] == SceneState("blocked", "state_a", "RuntimeError: a broke on y")
    assert states["state_c"]["x"] == SceneState("pending")


def test_the_newest_failure_record_of_a_stage_is_the_reason(tmp_path):
    run_stage(A, tmp_path, ["x"], {"fail": ["x"], "tag": " (first)"})
    run_stage(A, tmp_path, ["x"], {"fail": ["x"], "tag": " (second)"})
    state = stage_states(tmp_path, ["x"], [A])["state_a"]["x"]
    assert state == SceneState("failed", "state_a", "RuntimeError: a broke on x (second)")
