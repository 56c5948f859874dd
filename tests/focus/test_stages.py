"""Scene stages 'labels' (focus_maps/) and 'renders' (bokeh_renders/), metadata.json."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.focus.plan_formulas import plan_sample_coc_params, sha256_scene_seed
from trainset.errors import InputError
from trainset.focus.labels import labels_params, run_labels
from trainset.focus.optics import signed_coc_px
from trainset.focus.render import LayeredRenderer
from trainset.focus.renders import renders_params, run_renders
from trainset.pipeline.dataset_files import rebuild_scene_logs
from trainset.store import read_json

MAX_COC = 5e-4


def plan_sets(stats, scene_id, n_sets=4):
    """The plan's sample_coc_params seeded by sha256 of the scene id."""
    return plan_sample_coc_params(stats, n_sets, sha256_scene_seed(scene_id))


def plan_focus_map(depth_map, f, N, S_focus, max_coc):
    depth_safe = np.maximum(depth_map, 1e-6)
    coc = (f**2 / (N * S_focus)) * np.abs(depth_safe - S_focus) / depth_safe
    return (1.0 - np.clip(coc / max_coc, 0.0, 1.0)).astype(np.float16)


@pytest.fixture
def dataset(tmp_path, scene_inputs):
    scene_inputs.build_dataset(tmp_path, {"scene_a": 2})
    return tmp_path


def test_labels_writes_the_plans_focus_maps_for_every_set_and_frame(dataset):
    counts = run_labels(dataset, "scene_a", labels_params(MAX_COC, n_sets=3))
    assert counts == {"frames": 2, "sets": 3, "focus_maps": 6, "warnings": counts["warnings"]}
    stats = read_json(dataset / "scene_a" / "depth_maps" / "stats.json")
    for s, params in enumerate(plan_sets(stats, "scene_a", 3)):
        for t in range(2):
            depth = np.load(dataset / "scene_a" / "depth_maps" / f"depth_{t:04d}.npz")["depth"]
            with np.load(
                dataset / "scene_a" / "focus_maps" / f"set_{s:02d}" / f"focus_{t:04d}.npz"
            ) as z:
                assert z.files == ["focus_map"]
                ours = z["focus_map"]
            expected = plan_focus_map(depth.astype(np.float32), max_coc=MAX_COC, **params)
            assert ours.dtype == np.float16
            assert ours.tobytes() == expected.tobytes()


def test_labels_metadata_holds_the_sets_max_coc_and_coc_model(dataset):
    run_labels(dataset, "scene_a", labels_params(MAX_COC, n_sets=2))
    meta = read_json(dataset / "scene_a" / "metadata.json")
    stats = read_json(dataset / "scene_a" / "depth_maps" / "stats.json")
    assert meta["sets"] == [{**p, "max_coc": MAX_COC} for p in plan_sets(stats, "scene_a", 2)]
    assert meta["coc_model"] == "plan"
    assert meta["max_coc_mm"] == pytest.approx(0.5)
    assert meta["n_frames"] == 2


def test_labels_logs_frames_whose_focus_mean_is_outside_0_2_to_0_8(dataset):
    counts = run_labels(dataset, "scene_a", labels_params(1e-6, n_sets=1))
    rebuild_scene_logs(dataset)
    lines = (dataset / "logs" / "focus_map_warnings.txt").read_text().splitlines()
    assert counts["warnings"] == 2
    assert [line.split(":")[0] for line in lines] == [
        "scene_a set_00 frame 0000",
        "scene_a set_00 frame 0001",
    ]
    means = [float(line.split("=")[1]) for line in lines]
    assert all(m < 0.2 for m in means)
    run_labels(dataset, "scene_a", labels_params(0.05, n_sets=1))
    rebuild_scene_logs(dataset)
    lines = (dataset / "logs" / "focus_map_warnings.txt").read_text().splitlines()
    assert len(lines) == 2
    assert all(float(line.split("=")[1]) > 0.8 for line in lines)


def test_labels_refuse_a_max_coc_outside_the_physical_range(dataset):
    with pytest.raises(InputError, match=r"max_coc.*found 0.063 m"):
        run_labels(dataset, "scene_a", {"max_coc": 0.063, "n_sets": 4, "coc_model": "plan"})


def test_labels_without_depth_statistics_name_the_missing_file(dataset):
    (dataset / "scene_a" / "depth_maps" / "stats.json").unlink()
    with pytest.raises(
        InputError, match=r"scene_a/depth_maps/stats.json: depth statistics missing"
    ):
        run_labels(dataset, "scene_a", labels_params(MAX_COC))


def test_labels_with_a_gap_in_the_depth_maps_are_refused(dataset, scene_inputs):
    scene_inputs.write_depth(dataset, "scene_a", 3, (24, 32))
    with pytest.raises(InputError, match="not numbered contiguously"):
        run_labels(dataset, "scene_a", labels_params(MAX_COC))


def test_renders_write_the_renderers_output_for_each_set_and_frame(dataset, scene_inputs):
    params = renders_params(MAX_COC, n_sets=2, sensor_width_m=0.024)
    counts = run_renders(dataset, "scene_a", params)
    assert counts == {"frames": 2, "sets": 2, "renders": 4}
    stats = read_json(dataset / "scene_a" / "depth_maps" / "stats.json")
    renderer = LayeredRenderer(device="cpu")
    for s, lens in enumerate(plan_sets(stats, "scene_a", 2)):
        for t in range(2):
            depth = np.load(dataset / "scene_a" / "depth_maps" / f"depth_{t:04d}.npz")["depth"]
            coc = signed_coc_px(depth.astype(np.float32), **lens, width_px=32, sensor_width_m=0.024)
            expected = renderer.render(scene_inputs.scene_frame("scene_a", t, (24, 32)), coc)
            path = dataset / "scene_a" / "bokeh_renders" / f"set_{s:02d}" / f"bokeh_{t:04d}.png"
            assert np.array_equal(np.asarray(Image.open(path)), expected)


def test_renders_record_renderer_and_sensor_width_and_labels_keep_them(dataset):
    run_labels(dataset, "scene_a", labels_params(MAX_COC, n_sets=2))
    run_renders(dataset, "scene_a", renders_params(MAX_COC, n_sets=2))
    meta = read_json(dataset / "scene_a" / "metadata.json")
    assert meta["renderer"] == "layered"
    assert meta["sensor_width_m"] == 0.036
    run_labels(dataset, "scene_a", labels_params(MAX_COC, n_sets=2))
    assert read_json(dataset / "scene_a" / "metadata.json") == meta
    run_labels(dataset, "scene_a", labels_params(MAX_COC, n_sets=1))
    assert "renderer" not in read_json(dataset / "scene_a" / "metadata.json")


def test_renders_record_the_renderers_version_and_every_option(dataset):
    params = renders_params(MAX_COC, n_sets=2, renderer_options={"highlight_gain": "12"})
    run_renders(dataset, "scene_a", params)
    meta = read_json(dataset / "scene_a" / "metadata.json")
    assert meta["renderer_version"] == params["renderer_version"] == 2
    assert (
        meta["renderer_params"]
        == params["renderer_params"]
        == {
            "renderer": "layered",
            "layer_step_px": 1.0,
            "max_layers": 24,
            "hidden": "extend",
            "highlight_gain": 12.0,
            "highlight_threshold": 0.95,
        }
    )
    assert [sorted(s) for s in meta["sets"]] == [["N", "S_focus", "f", "max_coc"]] * 2


def test_renders_read_version_one_layer_settings_as_layered_options():
    params = renders_params(MAX_COC, renderer_options={"max_layers": "12"})
    old_style = {k: v for k, v in params.items() if k != "renderer_options"}
    old_style |= {"layer_step_px": 2.0, "max_layers": 12}
    from trainset.focus.renders import _given_options

    assert _given_options(old_style) == {"layer_step_px": 2.0, "max_layers": 12}


def test_renders_refuse_an_option_the_renderer_does_not_take():
    with pytest.raises(InputError, match="renderer backend 'layered' rejected its options"):
        renders_params(MAX_COC, renderer_options={"aperture_blades": "6"})


def test_fewer_sets_remove_the_folders_of_the_dropped_sets(dataset):
    run_labels(dataset, "scene_a", labels_params(MAX_COC, n_sets=3))
    run_labels(dataset, "scene_a", labels_params(MAX_COC, n_sets=1))
    assert sorted(p.name for p in (dataset / "scene_a" / "focus_maps").iterdir()) == ["set_00"]


def test_renders_refuse_depth_of_another_size_than_the_frame(dataset, scene_inputs):
    scene_inputs.write_depth(dataset, "scene_a", 1, (24, 30))
    with pytest.raises(
        InputError, match=r"depth_0001.npz: key 'depth': depth map and sharp frame differ"
    ):
        run_renders(dataset, "scene_a", renders_params(MAX_COC, n_sets=1))


def test_renders_refuse_an_implausible_sensor_width():
    with pytest.raises(InputError, match=r"sensor_width.*found 36"):
        renders_params(MAX_COC, sensor_width_m=36)
