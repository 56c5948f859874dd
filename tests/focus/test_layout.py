"""Reading the scene index (trainset.focus.layout): the one owner of the plan's layout."""

import json

import pytest

from trainset.errors import InputError
from trainset.focus.layout import select_scenes


def _index(root, scenes=("a", "b", "c")):
    root.mkdir(parents=True, exist_ok=True)
    (root / "scene_index.json").write_text(
        json.dumps({s: {"frames": [], "split": "train"} for s in scenes})
    )


def test_select_scenes_by_task_index_uses_sorted_order(tmp_path):
    _index(tmp_path, ["z", "m", "a"])
    assert select_scenes(tmp_path, task_index=1) == ["m"]
    assert select_scenes(tmp_path, scene="z") == ["z"]
    assert select_scenes(tmp_path) == ["a", "m", "z"]


def test_select_scenes_rejects_out_of_range_task_index(tmp_path):
    _index(tmp_path)
    with pytest.raises(InputError, match=r"task index out of range \(expected 0..2, found 3\)"):
        select_scenes(tmp_path, task_index=3)


def test_select_scenes_rejects_unknown_scene(tmp_path):
    _index(tmp_path)
    with pytest.raises(InputError, match="scene is not in the scene index"):
        select_scenes(tmp_path, scene="nope")


def test_select_scenes_without_index_says_to_run_index(tmp_path):
    with pytest.raises(InputError, match="run `trainset focus index` first"):
        select_scenes(tmp_path)
