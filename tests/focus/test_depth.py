import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from trainset.errors import InputError
from trainset.focus.depth import (
    FLOAT16_MAX,
    depth_stats,
    patch_invalid,
    temporal_change,
)
from trainset.focus.depth_backends import (
    DepthScene,
    ProvidedDepth,
    load_depth_file,
    make_depth_backend,
    register_depth_backend,
)
from trainset.focus.index import build_index
from trainset.focus.stages import DEBLUR, DEPTH
from trainset.pipeline.dataset_files import read_failures
from trainset.pipeline.runner import run_stage, scene_ids
from trainset.store.codecs import read_npz_array

PASSTHROUGH = {
    "backend": "passthrough",
    "options": {},
    "backend_params": {},
    "sharpness_ratio": 0.25,
}
PROVIDED = {
    "backend": "provided",
    "options": {},
    "backend_params": {"depth_scale": 1000.0},
    "median_range_m": [2.0, 50.0],
    "consistency_threshold": 0.15,
}


def _sharp(raw, tmp_path, scenes=None):
    out = tmp_path / "out"
    build_index(raw, out, min_frames=4)
    run_stage(DEBLUR, out, scenes or scene_ids(out), PASSTHROUGH)
    return out


def _provided(raw, scene, t):
    return np.load(raw / scene / "depth" / f"depth_{t:04d}.npy")


def test_stored_depth_equals_provided_depth_to_float16_precision(small_raw, tmp_path):
    out = _sharp(small_raw, tmp_path)
    summary = run_stage(DEPTH, out, scene_ids(out), PROVIDED)
    assert summary.exit_code == 0
    for scene in scene_ids(out):
        names = sorted(p.name for p in (out / scene / "depth_maps").iterdir())
        assert names == [".done"] + [f"depth_{t:04d}.npz" for t in range(6)] + ["stats.json"]
        for t in range(6):
            stored = np.load(out / scene / "depth_maps" / f"depth_{t:04d}.npz")
            assert list(stored.keys()) == ["depth"]
            assert stored["depth"].dtype == np.float16
            assert np.array_equal(
                stored["depth"], _provided(small_raw, scene, t).astype(np.float16)
            )


def test_stats_json_holds_the_plans_fields_of_the_stored_values(small_raw, tmp_path):
    out = _sharp(small_raw, tmp_path, ["scene_001"])
    run_stage(DEPTH, out, ["scene_001"], PROVIDED)
    stats = json.loads((out / "scene_001" / "depth_maps" / "stats.json").read_text())
    values = np.stack(
        [_provided(small_raw, "scene_001", t).astype(np.float16) for t in range(6)]
    ).astype(np.float64)
    assert list(stats) == ["d_min", "d_max", "d_median", "d_p5", "d_p95"]
    assert stats["d_min"] == values.min() and stats["d_max"] == values.max()
    assert stats["d_median"] == pytest.approx(np.median(values), rel=1e-6)
    assert stats["d_p5"] == pytest.approx(np.percentile(values, 5), rel=1e-6)
    assert stats["d_p95"] == pytest.approx(np.percentile(values, 95), rel=1e-6)


def test_invalid_pixels_are_patched_with_the_scene_median_and_counted(small_raw, tmp_path):
    depth_dir = small_raw / "scene_000" / "depth"
    maps = [np.load(depth_dir / f"depth_{t:04d}.npy") for t in range(6)]
    bad = maps[3].copy()
    bad[0, 0], bad[0, 1], bad[0, 2], bad[0, 3], bad[0, 4] = np.nan, np.inf, -np.inf, 0.0, -2.0
    np.save(depth_dir / "depth_0003.npy", bad)
    maps[3] = bad
    valid = np.concatenate([m[np.isfinite(m) & (m > 0)] for m in maps])
    median = np.float32(np.median(valid))
    out = _sharp(small_raw, tmp_path, ["scene_000"])
    summary = run_stage(DEPTH, out, ["scene_000"], PROVIDED)
    assert summary.outcomes[0].counts["patched_pixels"] == 5
    stored = read_npz_array(out / "scene_000" / "depth_maps" / "depth_0003.npz", "depth")
    assert np.all(stored[0, :5] == median.astype(np.float16))
    assert np.array_equal(stored[1:], bad[1:].astype(np.float16))
    rows = list(csv.reader((out / "logs" / "depth_nan_patches.csv").open()))
    assert rows[0] == ["scene_id", "frame", "nan", "inf", "nonpositive", "clamped", "fill_m"]
    assert rows[1][:6] == ["scene_000", "depth_0003.npz", "1", "2", "2", "0"]
    assert float(rows[1][6]) == pytest.approx(float(median), rel=1e-5)
    assert len(rows) == 2


def test_patch_invalid_clamps_to_the_positive_float16_range():
    depth = np.array([[1.0, 1e6, 1e-9, np.nan]], np.float32)
    out, counts = patch_invalid(depth, 4.0)
    assert out.tolist() == [[1.0, FLOAT16_MAX, float(np.finfo(np.float16).tiny), 4.0]]
    assert counts == {"nan": 1, "inf": 0, "nonpositive": 0, "clamped": 2}
    assert np.all(out.astype(np.float16) > 0) and np.all(np.isfinite(out.astype(np.float16)))


def test_depth_stats_of_known_values():
    stats = depth_stats([np.arange(1, 11, dtype=np.float32).reshape(2, 5), np.array([[11.0]])])
    assert stats == {"d_min": 1.0, "d_max": 11.0, "d_median": 6.0, "d_p5": 1.5, "d_p95": 10.5}


def test_temporal_change_is_the_plans_ratio():
    a = np.full((2, 2), 4.0, np.float32)
    b = np.array([[4.0, 4.0], [4.0, 8.0]], np.float32)
    assert temporal_change([a, b, b]) == [pytest.approx(0.25), 0.0]


def test_sanity_and_consistency_warnings_are_logged(small_raw, tmp_path):
    depth_dir = small_raw / "scene_002" / "depth"
    for t in range(6):
        np.save(
            depth_dir / f"depth_{t:04d}.npy", np.full((32, 48), 1.0 if t % 2 else 1.5, np.float32)
        )
    out = _sharp(small_raw, tmp_path, ["scene_002"])
    run_stage(DEPTH, out, ["scene_002"], PROVIDED)
    sanity = (out / "logs" / "depth_sanity_warnings.txt").read_text().splitlines()
    assert len(sanity) == 1
    assert any(line.startswith("scene_002: median depth 1.250 m outside 2-50 m") for line in sanity)
    consistency = (out / "logs" / "depth_consistency_warnings.txt").read_text()
    assert (
        "scene_002: temporal change 0.500 > 0.15 between depth_0001.npz and depth_0002.npz"
        in consistency
    )
    assert "(5 of 5 frame pairs above)" in consistency


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", r"depth file count differs from frame count \(expected 6, found 5\)"),
        ("shape", r"depth shape differs from its frame \(expected \(32, 48\), found \(32, 47\)\)"),
        ("all_nan", "no valid depth pixel in the scene"),
    ],
)
def test_bad_provided_depth_fails_the_scene_with_its_reason(small_raw, tmp_path, damage, message):
    depth_dir = small_raw / "scene_001" / "depth"
    if damage == "missing":
        (depth_dir / "depth_0005.npy").unlink()
    elif damage == "shape":
        np.save(depth_dir / "depth_0004.npy", np.ones((32, 47), np.float32))
    else:
        for t in range(6):
            np.save(depth_dir / f"depth_{t:04d}.npy", np.full((32, 48), np.nan, np.float32))
    out = _sharp(small_raw, tmp_path)
    summary = run_stage(DEPTH, out, scene_ids(out), PROVIDED)
    assert [o.status for o in summary.outcomes] == ["done", "failed", "done"]
    assert summary.exit_code == 1
    (failure,) = read_failures(out)
    assert failure["scene"] == "scene_001"
    assert re.search(message, failure["error"])
    assert not (out / "scene_001" / "depth_maps" / ".done").exists()


def test_depth_before_deblur_is_blocked(small_raw, tmp_path):
    out = tmp_path / "out"
    build_index(small_raw, out, min_frames=4)
    summary = run_stage(DEPTH, out, scene_ids(out), PROVIDED)
    assert summary.exit_code == 2
    assert summary.outcomes[0].message == "deblur not done: run stage deblur first"


def test_load_depth_file_reads_npz_and_16bit_png_in_metres(tmp_path):
    np.savez(tmp_path / "d.npz", depth=np.full((2, 3), 2.5, np.float32))
    assert load_depth_file(tmp_path / "d.npz").tolist() == [[2.5] * 3] * 2
    np.savez(tmp_path / "other.npz", z=np.full((2, 3), 1.5, np.float32))
    assert load_depth_file(tmp_path / "other.npz").tolist() == [[1.5] * 3] * 2
    Image.fromarray(np.array([[1500, 65535]], np.uint16)).save(tmp_path / "d.png")
    assert load_depth_file(tmp_path / "d.png", depth_scale=1000).tolist() == [
        [1.5, float(np.float32(65.535))]
    ]
    assert load_depth_file(tmp_path / "d.png", depth_scale=256).tolist() == [
        [pytest.approx(1500 / 256), pytest.approx(65535 / 256)]
    ]


def test_load_depth_file_rejects_8bit_png(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "d.png")
    with pytest.raises(InputError, match="PNG depth must be 16-bit single channel"):
        load_depth_file(tmp_path / "d.png")


def test_load_depth_file_rejects_3d_arrays(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(InputError, match=r"depth must be a 2-D numeric array"):
        load_depth_file(tmp_path / "d.npy")


def test_load_depth_file_refuses_pickled_npy(tmp_path):
    np.save(tmp_path / "d.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="unreadable depth file"):
        load_depth_file(tmp_path / "d.npy")


def test_provided_backend_rejects_non_positive_scale():
    with pytest.raises(InputError, match="depth scale must be a positive number"):
        ProvidedDepth(depth_scale=0)


def test_unknown_depth_backend_is_an_input_error():
    with pytest.raises(InputError, match="unknown depth backend"):
        make_depth_backend("nope")


class _ConstantDepth:
    name = "constant"

    def __init__(self, value="3.0"):
        self.value = float(value)

    def params(self):
        return {"value": self.value}

    def predict(self, scene: DepthScene):
        for frame in scene.iter_frames():
            yield np.full(frame.shape[:2], self.value, np.float32)


def test_a_registered_backend_gets_the_shared_writer(small_raw, tmp_path):
    register_depth_backend("constant", _ConstantDepth)
    out = _sharp(small_raw, tmp_path, ["scene_000"])
    params = {**PROVIDED, "backend": "constant", "options": {"value": "3.0"}, "backend_params": {}}
    assert run_stage(DEPTH, out, ["scene_000"], params).exit_code == 0
    stored = read_npz_array(out / "scene_000" / "depth_maps" / "depth_0000.npz", "depth")
    assert stored.dtype == np.float16 and np.all(stored == 3.0)


class _ShortDepth(_ConstantDepth):
    """Drops the last frame's map."""

    name = "short"

    def predict(self, scene: DepthScene):
        maps = list(super().predict(scene))
        yield from maps[:-1]


class _MisshapenDepth(_ConstantDepth):
    """Gives maps one row short."""

    name = "misshapen"

    def predict(self, scene: DepthScene):
        for depth in super().predict(scene):
            yield depth[1:]


@pytest.mark.parametrize(
    ("name", "factory", "message"),
    [
        ("short", _ShortDepth, r"depth backend 'short' gave the wrong number of maps "
         r"\(expected 6, found 5\)"),
        ("misshapen", _MisshapenDepth, r"frame_0000\.png: depth backend 'misshapen' map 0 has the "
         r"wrong shape \(expected \(32, 48\), found \(31, 48\)\)"),
    ],
)  # fmt: skip
def test_backend_output_of_the_wrong_count_or_shape_fails_the_scene(
    small_raw, tmp_path, name, factory, message
):
    register_depth_backend(name, factory)
    out = _sharp(small_raw, tmp_path, ["scene_000"])
    params = {**PROVIDED, "backend": name, "options": {}, "backend_params": {}}
    summary = run_stage(DEPTH, out, ["scene_000"], params)
    assert summary.exit_code == 1
    (failed,) = summary.with_status("failed")
    assert re.search(message, failed.message)
    assert not (out / "scene_000" / "depth_maps" / ".done").exists()
