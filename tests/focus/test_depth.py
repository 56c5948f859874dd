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
    make_depth_backend,
    read_depth_file,
    register_depth_backend,
)
from trainset.focus.index import build_index
from trainset.focus.layout import scene_ids
from trainset.focus.stages import DEBLUR, DEPTH
from trainset.pipeline.dataset_files import read_failures
from trainset.pipeline.runner import run_stage
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
    assert list(stats) == ["d_min", "d_max", "d_median", "d_p5", "d_p95", "valid_fraction"]
    assert stats["valid_fraction"] == 1.0
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
    assert rows[0] == [
        *("scene_id", "frame", "nan", "inf", "nonpositive", "clamped", "fill_m", "invalid")
    ]
    assert rows[1][:6] == ["scene_000", "depth_0003.npz", "1", "2", "2", "0"]
    assert float(rows[1][6]) == pytest.approx(float(median), rel=1e-5)
    assert rows[1][7] == "0"
    assert len(rows) == 2


def test_patch_invalid_clamps_to_the_positive_float16_range():
    depth = np.array([[1.0, 1e6, 1e-9, np.nan]], np.float32)
    out, counts = patch_invalid(depth, 4.0)
    assert out.tolist() == [[1.0, FLOAT16_MAX, float(np.finfo(np.float16).tiny), 4.0]]
    assert counts == {"invalid": 0, "nan": 1, "inf": 0, "nonpositive": 0, "clamped": 2}
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
        ("all_nan", r"too few valid depth pixels in frame 0 .*found 0.000"),
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


def test_read_depth_file_reads_float_npz_in_metres(tmp_path):
    np.savez(tmp_path / "d.npz", depth=np.full((2, 3), 2.5, np.float32))
    depth, invalid = read_depth_file(tmp_path / "d.npz")
    assert depth.tolist() == [[2.5] * 3] * 2 and not invalid.any()
    np.savez(tmp_path / "other.npz", z=np.full((2, 3), 0.0, np.float32))
    depth, invalid = read_depth_file(tmp_path / "other.npz")
    assert depth.tolist() == [[0.0] * 3] * 2 and not invalid.any()  # float 0 is not a code


def test_16bit_png_depth_is_scaled_and_its_sensor_codes_masked(tmp_path):
    Image.fromarray(np.array([[1500, 65535, 0, 2955]], np.uint16)).save(tmp_path / "d.png")
    depth, invalid = read_depth_file(tmp_path / "d.png", depth_scale=1000)
    assert depth[0, [0, 3]].tolist() == [1.5, pytest.approx(2.955)]
    assert invalid.tolist() == [[False, True, True, False]]
    depth, _ = read_depth_file(tmp_path / "d.png", depth_scale=5000)  # TUM RGB-D
    assert depth[0, 0] == pytest.approx(0.3)


def test_integer_npy_depth_uses_its_dtypes_maximum_as_a_code(tmp_path):
    np.save(tmp_path / "d.npy", np.array([[255, 0, 100]], np.uint8))
    depth, invalid = read_depth_file(tmp_path / "d.npy", depth_scale=100)
    assert invalid.tolist() == [[True, True, False]]
    assert depth[0, 2] == pytest.approx(1.0)


def test_custom_invalid_codes_replace_the_defaults(tmp_path):
    Image.fromarray(np.array([[1500, 65535, 0, 4000]], np.uint16)).save(tmp_path / "d.png")
    _, invalid = read_depth_file(tmp_path / "d.png", invalid_codes=(4000,))
    assert invalid.tolist() == [[False, False, False, True]]
    _, invalid = read_depth_file(tmp_path / "d.png", invalid_codes=())
    assert not invalid.any()


@pytest.mark.parametrize(
    ("text", "codes"), [(None, None), ("default", None), ("none", ()), ("0,65535", (0, 65535))]
)
def test_depth_invalid_option_forms(text, codes):
    assert ProvidedDepth(invalid_codes=text).invalid_codes == codes


def test_depth_invalid_option_that_is_not_integers_is_refused():
    with pytest.raises(InputError, match=r"--depth-invalid.*expected e.g. 0,65535 or none"):
        ProvidedDepth(invalid_codes="0,x")


@pytest.mark.parametrize("text", ["3", "5,2", "0,8", "a,b", "1,inf"])
def test_depth_range_option_must_be_two_increasing_positive_numbers(text):
    with pytest.raises(InputError, match="--depth-range"):
        ProvidedDepth(depth_range=text)


def test_complex_depth_is_refused_naming_the_file(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((2, 2), np.complex64))
    with pytest.raises(InputError, match=r"d.npy: depth must be a 2-D array of real numbers"):
        read_depth_file(tmp_path / "d.npy")


def test_read_depth_file_rejects_8bit_png(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "d.png")
    with pytest.raises(InputError, match="PNG depth must be 16-bit single channel"):
        read_depth_file(tmp_path / "d.png")


def test_read_depth_file_rejects_3d_arrays(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(InputError, match=r"depth must be a 2-D array of real numbers"):
        read_depth_file(tmp_path / "d.npy")


def test_read_depth_file_refuses_pickled_npy(tmp_path):
    np.save(tmp_path / "d.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="unreadable depth file"):
        read_depth_file(tmp_path / "d.npy")


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


def _as_png_mm(raw, scene, edit=None):
    """Replace the scene's .npy depth (metres) by 16-bit PNG millimetres; ``edit(t, mm)``
    may write sensor codes into frame t. Returns the (T, H, W) uint16 stack written."""
    folder = raw / scene / "depth"
    written = []
    for path in sorted(folder.glob("depth_*.npy")):
        t = int(path.stem.split("_")[1])
        mm = np.round(np.load(path) * 1000).astype(np.uint16)
        if edit is not None:
            edit(t, mm)
        Image.fromarray(mm).save(folder / f"depth_{t:04d}.png")
        path.unlink()
        written.append(mm)
    return np.stack(written)


def _codes(t, mm):
    if t == 2:
        mm[0, :5] = 65535
        mm[1, :3] = 0


def test_sensor_codes_are_filled_counted_apart_and_left_out_of_the_stats(small_raw, tmp_path):
    mm = _as_png_mm(small_raw, "scene_000", _codes)
    out = _sharp(small_raw, tmp_path, ["scene_000"])
    summary = run_stage(DEPTH, out, ["scene_000"], PROVIDED)
    assert summary.outcomes[0].counts["invalid_pixels"] == 8
    assert summary.outcomes[0].counts["patched_pixels"] == 0
    rows = list(csv.reader((out / "logs" / "depth_nan_patches.csv").open()))
    assert rows[1][:6] == ["scene_000", "depth_0002.npz", "0", "0", "0", "0"]
    assert rows[1][7] == "8"
    valid = (mm != 0) & (mm != 65535)
    metres = (mm.astype(np.float32) / np.float32(1000)).astype(np.float16).astype(np.float64)
    stats = json.loads((out / "scene_000" / "depth_maps" / "stats.json").read_text())
    assert stats["d_max"] == pytest.approx(metres[valid].max())
    assert stats["d_max"] < 65
    assert stats["d_min"] == pytest.approx(metres[valid].min())
    assert stats["valid_fraction"] == pytest.approx(valid.mean())
    fill = np.float16(np.median((mm.astype(np.float32) / np.float32(1000))[valid]))
    stored = read_npz_array(out / "scene_000" / "depth_maps" / "depth_0002.npz", "depth")
    assert np.all(stored[0, :5] == fill) and np.all(stored[1, :3] == fill)


def test_depth_range_marks_implausible_values_invalid(small_raw, tmp_path):
    depth_dir = small_raw / "scene_000" / "depth"
    d = np.load(depth_dir / "depth_0001.npy")
    d[0, :4] = 500.0
    np.save(depth_dir / "depth_0001.npy", d)
    out = _sharp(small_raw, tmp_path, ["scene_000"])
    params = {**PROVIDED, "options": {"depth_range": "0.1,100"}}
    summary = run_stage(DEPTH, out, ["scene_000"], params)
    assert summary.outcomes[0].counts["invalid_pixels"] == 4
    stats = json.loads((out / "scene_000" / "depth_maps" / "stats.json").read_text())
    assert stats["d_max"] < 100


def test_scene_with_a_mostly_unmeasured_frame_fails_with_the_fraction(small_raw, tmp_path):
    def holes(t, mm):
        if t == 4:
            mm[: mm.shape[0] * 3 // 4] = 0  # 75 % of the frame unmeasured

    _as_png_mm(small_raw, "scene_001", holes)
    out = _sharp(small_raw, tmp_path, ["scene_001"])
    summary = run_stage(DEPTH, out, ["scene_001"], PROVIDED)
    assert summary.outcomes[0].status == "failed"
    assert re.search(
        r"frame_0004.png: key 'min_valid_fraction': scene scene_001: too few valid depth "
        r"pixels in frame 4 .*expected >= 0.5 of the pixels valid, found 0.250",
        summary.outcomes[0].message,
    )
    relaxed = {**PROVIDED, "min_valid_fraction": 0.2}
    assert run_stage(DEPTH, out, ["scene_001"], relaxed).outcomes[0].status == "done"


def test_custom_invalid_codes_through_the_stage(small_raw, tmp_path):
    def code_4000(t, mm):
        if t == 0:
            mm[0, 0] = 4000

    _as_png_mm(small_raw, "scene_002", code_4000)
    out = _sharp(small_raw, tmp_path, ["scene_002"])
    params = {**PROVIDED, "options": {"invalid_codes": "4000"}}
    assert run_stage(DEPTH, out, ["scene_002"], params).outcomes[0].counts["invalid_pixels"] == 1
