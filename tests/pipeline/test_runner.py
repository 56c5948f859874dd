import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainset.errors import InputError
from trainset.pipeline.dataset_files import (
    read_failures,
    rebuild_scene_logs,
    record_config,
    write_scene_log,
)
from trainset.pipeline.runner import run_stage
from trainset.pipeline.stage import Stage, get_stage, register_stage
from trainset.store.hashing import params_hash
from trainset.store.sentinels import read_sentinel


def _toy_first(out_root: Path, scene_id: str, params: Mapping[str, Any]) -> dict[str, int]:
    if scene_id in params.get("fail", []):
        raise ValueError(f"bad scene {scene_id}")
    out = out_root / scene_id / "first"
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs.txt"
    runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
    write_scene_log(out_root, "toy.csv", scene_id, f"scene,value\n{scene_id},{params['value']}\n")
    return {"frames": 3}


def _toy_second(out_root: Path, scene_id: str, params: Mapping[str, Any]) -> dict[str, int]:
    out = out_root / scene_id / "second"
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs.txt"
    runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
    return {}


FIRST = register_stage(Stage("toy_first", 1, "first", (), _toy_first))
SECOND = register_stage(Stage("toy_second", 1, "second", ("toy_first",), _toy_second))
SCENES = ["a", "b", "c"]


def _index(root: Path, scenes=SCENES) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "scene_index.json").write_text(
        json.dumps({s: {"frames": [], "split": "train"} for s in scenes})
    )


def _runs(root: Path, scene: str, stage: str = "first") -> int:
    path = root / scene / stage / "runs.txt"
    return len(path.read_text()) if path.exists() else 0


def test_run_stage_writes_sentinel_with_stage_version_and_params_hash(tmp_path):
    summary = run_stage(FIRST, tmp_path, SCENES, {"value": 1})
    assert summary.exit_code == 0
    sentinel = read_sentinel(tmp_path / "a" / "first")
    assert sentinel is not None
    assert (sentinel.stage, sentinel.stage_version) == ("toy_first", 1)
    assert sentinel.params_hash == params_hash({"value": 1})
    assert sentinel.counts == {"frames": 3}


def test_second_run_with_same_params_skips_every_scene(tmp_path):
    run_stage(FIRST, tmp_path, SCENES, {"value": 1})
    summary = run_stage(FIRST, tmp_path, SCENES, {"value": 1})
    assert [o.status for o in summary.outcomes] == ["skipped"] * 3
    assert [_runs(tmp_path, s) for s in SCENES] == [1, 1, 1]


def test_changed_params_redo_every_scene(tmp_path):
    run_stage(FIRST, tmp_path, SCENES, {"value": 1})
    summary = run_stage(FIRST, tmp_path, SCENES, {"value": 2})
    assert [o.status for o in summary.outcomes] == ["done"] * 3
    assert [_runs(tmp_path, s) for s in SCENES] == [2, 2, 2]


def test_force_redoes_current_scenes(tmp_path):
    run_stage(FIRST, tmp_path, SCENES, {"value": 1})
    run_stage(FIRST, tmp_path, ["b"], {"value": 1}, force=True)
    assert [_runs(tmp_path, s) for s in SCENES] == [1, 2, 1]


def test_failing_scene_is_isolated_and_its_traceback_logged(tmp_path):
    summary = run_stage(FIRST, tmp_path, SCENES, {"value": 1, "fail": ["b"]})
    assert [o.status for o in summary.outcomes] == ["done", "failed", "done"]
    assert summary.exit_code == 1
    assert "failed b: ValueError: bad scene b" in summary.report()
    (record,) = read_failures(tmp_path)
    assert (record["stage"], record["scene"]) == ("toy_first", "b")
    assert "Traceback" in record["traceback"] and "bad scene b" in record["traceback"]
    assert read_sentinel(tmp_path / "b" / "first") is None


def test_scene_whose_required_stage_is_not_done_is_blocked_with_the_stage_to_run(tmp_path):
    run_stage(FIRST, tmp_path, ["a"], {"value": 1})
    summary = run_stage(SECOND, tmp_path, ["a", "b"], {})
    assert [o.status for o in summary.outcomes] == ["done", "blocked"]
    assert summary.exit_code == 2
    assert summary.outcomes[1].message == "toy_first not done: run stage toy_first first"
    assert _runs(tmp_path, "b", "second") == 0


def test_blocked_message_names_the_command_when_given_a_prefix(tmp_path):
    summary = run_stage(SECOND, tmp_path, ["a"], {}, command_prefix="trainset toy")
    assert summary.outcomes[0].message == "toy_first not done: run `trainset toy toy_first` first"


def test_redoing_a_required_stage_makes_the_dependent_stage_stale(tmp_path):
    run_stage(FIRST, tmp_path, ["a"], {"value": 1})
    run_stage(SECOND, tmp_path, ["a"], {})
    assert run_stage(SECOND, tmp_path, ["a"], {}).outcomes[0].status == "skipped"
    run_stage(FIRST, tmp_path, ["a"], {"value": 2})
    assert run_stage(SECOND, tmp_path, ["a"], {}).outcomes[0].status == "done"
    assert _runs(tmp_path, "a", "second") == 2


def test_scene_logs_are_merged_in_scene_order_with_one_csv_header(tmp_path):
    run_stage(FIRST, tmp_path, ["c", "a"], {"value": 7})
    assert (tmp_path / "logs" / "toy.csv").read_text() == "scene,value\na,7\nc,7\n"


def test_rebuild_scene_logs_rewrites_nothing_when_parts_are_unchanged(tmp_path):
    write_scene_log(tmp_path, "w.txt", "a", "warn a\n")
    assert rebuild_scene_logs(tmp_path) == [tmp_path / "logs" / "w.txt"]
    assert rebuild_scene_logs(tmp_path) == []


def test_record_config_merges_sections(tmp_path):
    record_config(tmp_path, "index", {"seed": 42})
    record_config(tmp_path, "deblur", {"backend": "passthrough"})
    record_config(tmp_path, "index", {"seed": 7})
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config == {"index": {"seed": 7}, "deblur": {"backend": "passthrough"}}


def test_run_stage_rejects_zero_workers(tmp_path):
    with pytest.raises(InputError, match="workers must be at least 1"):
        run_stage(FIRST, tmp_path, SCENES, {"value": 1}, workers=0)


def test_get_stage_of_unknown_name_lists_known_stages():
    with pytest.raises(InputError, match="unknown stage"):
        get_stage("no_such_stage")


def test_scene_blocked_by_an_upstream_failure_names_it_and_exits_1(tmp_path):
    run_stage(FIRST, tmp_path, SCENES, {"value": 1, "fail": ["b"]})
    summary = run_stage(SECOND, tmp_path, SCENES, {}, command_prefix="trainset toy")
    assert [o.status for o in summary.outcomes] == ["done", "blocked", "done"]
    assert summary.outcomes[1].upstream_failed
    assert summary.outcomes[1].message == (
        "toy_first failed (ValueError: bad scene b): fix it and re-run `trainset toy toy_first`"
    )
    assert summary.exit_code == 1


def test_a_failure_that_was_since_repaired_no_longer_blocks(tmp_path):
    run_stage(FIRST, tmp_path, SCENES, {"value": 1, "fail": ["b"]})
    run_stage(FIRST, tmp_path, ["b"], {"value": 1})
    summary = run_stage(SECOND, tmp_path, SCENES, {})
    assert [o.status for o in summary.outcomes] == ["done"] * 3
    assert summary.exit_code == 0
