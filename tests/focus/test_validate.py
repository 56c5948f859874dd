"""Phase 6: validation report, stage to re-run per failed scene, requeue."""

from __future__ import annotations

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.focus.labels import labels_params, run_labels
from trainset.focus.renders import renders_params, run_renders
from trainset.focus.validate import requeue, validate_dataset
from trainset.store import atomic_write_json, atomic_write_npz, atomic_write_yaml
from trainset.store.sentinels import write_sentinel

MAX_COC = 5e-4
SETS = 2
SHAPE = (16, 20)


def run_stage(inputs, root, stage, scenes):
    """What the runner does for a scene stage: run it, then write its sentinel."""
    for scene_id in scenes:
        if stage == "depth":
            for t in range(2):
                inputs.write_depth(root, scene_id, t, SHAPE)
            write_sentinel(root / scene_id / "depth_maps", "depth", 1, {"backend": "test"})
        elif stage == "labels":
            params = labels_params(MAX_COC, n_sets=SETS)
            counts = run_labels(root, scene_id, params)
            write_sentinel(root / scene_id / "focus_maps", "labels", 1, params, counts)
        elif stage == "renders":
            params = renders_params(MAX_COC, n_sets=SETS)
            counts = run_renders(root, scene_id, params)
            write_sentinel(root / scene_id / "bokeh_renders", "renders", 1, params, counts)
        else:
            raise AssertionError(f"unexpected stage {stage}")


@pytest.fixture
def complete(tmp_path, scene_inputs):
    scenes = {"scene_a": 2, "scene_b": 2, "scene_c": 2}
    scene_inputs.build_dataset(tmp_path, scenes, shape=SHAPE)
    atomic_write_yaml(tmp_path / "config.yaml", {"labels": labels_params(MAX_COC, n_sets=SETS)})
    for stage in ("labels", "renders"):
        run_stage(scene_inputs, tmp_path, stage, sorted(scenes))
    return tmp_path


def test_a_complete_dataset_passes_with_the_plans_report_fields(complete):
    report = validate_dataset(complete)
    assert report["total_scenes"] == 3
    assert report["passing_scenes"] == 3
    assert report["failed_scenes"] == []
    assert report["failure_reasons"] == {}
    assert report["split_counts"] == {"train": 1, "val": 1, "test": 1}
    assert report["total_frames"] == 6
    assert report["total_gb_on_disk"] > 0
    assert report["rerun_stages"] == {}


def test_broken_files_are_named_with_reason_and_stage_and_requeue_repairs_them(
    complete, scene_inputs
):
    (complete / "scene_a" / "focus_maps" / "set_01" / "focus_0001.npz").unlink()
    scene_inputs.corrupt_file(complete / "scene_b" / "depth_maps" / "depth_0000.npz")
    (complete / "scene_c" / "split.txt").unlink()
    report = validate_dataset(complete)
    assert report["failed_scenes"] == ["scene_a", "scene_b", "scene_c"]
    assert report["passing_scenes"] == 0
    assert report["failure_reasons"]["scene_a"] == (
        "focus_map NPZ missing: 1 files in set_01 (first focus_0001.npz)"
    )
    assert "depth_0000.npz" in report["failure_reasons"]["scene_b"]
    assert "not a readable NPZ" in report["failure_reasons"]["scene_b"]
    assert (
        report["failure_reasons"]["scene_c"]
        == "split.txt missing, expected one of train, val, test"
    )
    assert [f["stage"] for f in report["failures"]["scene_b"]] == ["depth"]
    assert report["rerun_stages"] == {
        "scene_a": ["labels"],
        "scene_b": ["depth", "labels", "renders"],
        "scene_c": ["index"],
    }
    calls = []

    def rerun(stage, scenes):
        calls.append((stage, scenes))
        run_stage(scene_inputs, complete, stage, scenes)

    done = requeue(complete, report, rerun)
    assert calls == [
        ("depth", ["scene_b"]),
        ("labels", ["scene_a", "scene_b"]),
        ("renders", ["scene_b"]),
    ]
    assert done["index"] == ["scene_c"]
    assert (complete / "scene_c" / "split.txt").read_text().strip() == "test"
    again = validate_dataset(complete)
    assert again["failed_scenes"] == [], again["failure_reasons"]


def test_focus_values_outside_zero_to_one_fail_the_labels_stage(complete):
    path = complete / "scene_a" / "focus_maps" / "set_00" / "focus_0000.npz"
    atomic_write_npz(path, {"focus_map": np.full(SHAPE, 1.5, np.float16)})
    report = validate_dataset(complete)
    assert report["failure_reasons"]["scene_a"] == (
        "set_00/focus_0000.npz: values outside [0, 1]: min 1.5, max 1.5"
    )
    assert report["rerun_stages"]["scene_a"] == ["labels"]


def test_non_positive_depth_fails_the_depth_stage(complete):
    path = complete / "scene_b" / "depth_maps" / "depth_0001.npz"
    atomic_write_npz(path, {"depth": np.zeros(SHAPE, np.float16)})
    report = validate_dataset(complete)
    assert report["failure_reasons"]["scene_b"] == "depth_maps/depth_0001.npz: min depth 0 <= 0"


def test_a_render_of_another_size_fails_the_renders_stage(complete):
    from PIL import Image

    Image.new("RGB", (7, 5)).save(
        complete / "scene_a" / "bokeh_renders" / "set_01" / "bokeh_0000.png"
    )
    report = validate_dataset(complete)
    assert report["failure_reasons"]["scene_a"] == (
        "set_01/bokeh_0000.png: size (5, 7), frames are (16, 20)"
    )
    assert report["rerun_stages"]["scene_a"] == ["renders"]


def test_metadata_without_the_expected_sets_fails_the_labels_stage(complete):
    atomic_write_json(complete / "scene_c" / "metadata.json", {"sets": [{"f": 0.05}]})
    report = validate_dataset(complete)
    assert report["failure_reasons"]["scene_c"] == (
        "metadata.json has 1 sets, expected 2; "
        "metadata.json sets[0] lacks numbers f, N, S_focus, max_coc"
    )


def test_metadata_with_another_max_coc_than_config_fails(complete):
    atomic_write_yaml(complete / "config.yaml", {"labels": labels_params(6e-4, n_sets=SETS)})
    report = validate_dataset(complete)
    assert report["failed_scenes"] == ["scene_a", "scene_b", "scene_c"]
    assert "config.yaml says 0.0006" in report["failure_reasons"]["scene_a"]


def test_a_missing_sentinel_fails_its_stage(complete):
    (complete / "scene_b" / "bokeh_renders" / ".done").unlink()
    report = validate_dataset(complete)
    assert report["failure_reasons"]["scene_b"] == "bokeh_renders/.done missing or unreadable"
    assert report["rerun_stages"]["scene_b"] == ["renders"]


def test_validate_without_scene_index_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="scene index not found"):
        validate_dataset(tmp_path)
