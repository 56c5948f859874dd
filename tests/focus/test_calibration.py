"""Phase 4: streaming CoC histogram, scene sampling, coc_stats.json, max_coc checks."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from tests.focus.plan_formulas import plan_sample_coc_params, sha256_scene_seed
from trainset.errors import InputError
from trainset.focus.calibration import (
    LogHistogram,
    calibrate,
    check_max_coc,
    resolve_max_coc,
    select_calibration_scenes,
)
from trainset.store import atomic_write_json, read_json


def plan_sets(stats, seed, n_sets=4):
    """The plan's sample_coc_params as (f, N, S_focus) tuples."""
    return [(p["f"], p["N"], p["S_focus"]) for p in plan_sample_coc_params(stats, n_sets, seed)]


def test_histogram_percentiles_are_within_half_a_percent_of_exact():
    rng = np.random.default_rng(0)
    values = rng.lognormal(mean=-7.0, sigma=1.5, size=300_000)
    hist = LogHistogram()
    for chunk in np.array_split(values, 7):
        hist.add(chunk)
    for q in (50, 90, 95, 99):
        exact = np.percentile(values, q)
        assert abs(hist.percentile(q) - exact) / exact < 0.005
    assert hist.percentile(100) == values.max()
    assert hist.n == values.size


def test_histogram_reads_values_below_its_range_as_zero():
    hist = LogHistogram()
    hist.add(np.array([0.0, 0.0, 0.0, 1e-3]))
    assert hist.percentile(50) == 0.0
    assert hist.vmax == 1e-3


def test_histogram_memory_does_not_grow_with_the_values_added():
    hist = LogHistogram()
    size = hist.counts.nbytes
    hist.add(np.full(100_000, 2e-4))
    assert hist.counts.nbytes == size
    assert size < 200_000


def test_histogram_refuses_negative_values():
    with pytest.raises(InputError, match="finite and non-negative"):
        LogHistogram().add(np.array([1e-3, -1e-4]))


def test_scene_sample_is_the_smallest_sha256_ids_sorted():
    ids = [f"scene_{i:03d}" for i in range(10)]
    ranked = sorted(ids, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    assert select_calibration_scenes(ids, 0.2) == sorted(ranked[:2])
    assert select_calibration_scenes(ids, 0.01) == sorted(ranked[:1])
    assert select_calibration_scenes(list(reversed(ids)), 0.2) == sorted(ranked[:2])


def test_sample_fraction_outside_zero_to_one_is_refused():
    with pytest.raises(InputError, match=r"sample_fraction.*0 < fraction <= 1, found 1.5"):
        select_calibration_scenes(["a"], 1.5)


def test_calibrate_reports_percentiles_of_the_render_parameter_sets(tmp_path, scene_inputs):
    scene_inputs.build_dataset(tmp_path, {"scene_a": 2, "scene_b": 3})
    stats = calibrate(tmp_path, sample_fraction=1.0, show_progress=False)
    values = []
    for scene_id, n in (("scene_a", 2), ("scene_b", 3)):
        depth_stats = read_json(tmp_path / scene_id / "depth_maps" / "stats.json")
        for t in range(n):
            depth = np.load(tmp_path / scene_id / "depth_maps" / f"depth_{t:04d}.npz")["depth"]
            d = np.maximum(depth.astype(np.float32), 1e-6)
            for f, N, S in plan_sets(depth_stats, sha256_scene_seed(scene_id)):
                values.append((f**2 / (N * S)) * np.abs(d - S) / d)
    exact = np.concatenate([v.ravel() for v in values])
    for q in (50, 90, 95, 99):
        assert stats[f"p{q}"] == pytest.approx(np.percentile(exact, q), rel=0.005)
    assert stats["max"] == pytest.approx(float(exact.max()), rel=1e-6)
    assert stats["recommended_max_coc"] == stats["p95"]
    assert stats["recommended_max_coc_mm"] == pytest.approx(stats["p95"] * 1e3)
    assert stats["units"] == "m (CoC diameter on the sensor)"
    assert stats["coc_model"] == "plan"
    assert stats["counts"] == {
        "scenes_total": 2,
        "scenes_with_depth": 2,
        "scenes_sampled": 2,
        "scenes_used": 2,
        "frames": 5,
        "values": exact.size,
    }
    assert read_json(tmp_path / "logs" / "coc_stats.json") == stats
    assert (tmp_path / "logs" / "coc_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_thin_lens_gives_larger_coc_than_the_plan_model(tmp_path, scene_inputs):
    scene_inputs.build_dataset(tmp_path, {"scene_a": 1})
    plan = calibrate(tmp_path, sample_fraction=1.0, show_progress=False)
    thin = calibrate(tmp_path, sample_fraction=1.0, coc_model="thin_lens", show_progress=False)
    assert thin["coc_model"] == "thin_lens"
    assert thin["p95"] > plan["p95"]


def test_calibrate_samples_only_scenes_whose_depth_is_done_and_lists_the_others(
    tmp_path, scene_inputs
):
    scene_inputs.build_dataset(tmp_path, {"scene_a": 1, "scene_b": 1})
    (tmp_path / "scene_b" / "depth_maps" / ".done").unlink()
    stats = calibrate(tmp_path, sample_fraction=1.0, show_progress=False)
    assert stats["scenes_without_depth"] == ["scene_b"]
    assert stats["sampled_scenes"] == ["scene_a"]
    assert stats["counts"]["scenes_used"] == 1


@pytest.mark.parametrize("broken", ["s0", "s1", "s2", "s3", "s4"])
def test_calibration_sample_is_never_a_scene_whose_depth_failed(tmp_path, scene_inputs, broken):
    """5 scenes, the plan's 0.2: one scene is sampled, the smallest sha256 among those with
    depth, whichever scene is broken (the one the whole-set rule would pick included)."""
    ids = ["s0", "s1", "s2", "s3", "s4"]
    scene_inputs.build_dataset(tmp_path, dict.fromkeys(ids, 1))
    (tmp_path / broken / "depth_maps" / ".done").unlink()
    good = [s for s in ids if s != broken]
    expected = min(good, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    stats = calibrate(tmp_path, sample_fraction=0.2, show_progress=False)
    assert stats["sampled_scenes"] == [expected]
    assert stats["scenes_without_depth"] == [broken]


def test_calibrate_without_any_depth_is_an_input_error(tmp_path, scene_inputs):
    scene_inputs.build_dataset(tmp_path, {"scene_a": 1})
    (tmp_path / "scene_a" / "depth_maps" / ".done").unlink()
    with pytest.raises(InputError, match="no scene has depth maps"):
        calibrate(tmp_path, sample_fraction=1.0, show_progress=False)


def test_calibrate_without_scene_index_names_the_file(tmp_path):
    with pytest.raises(InputError, match=r"scene_index.json: scene index not found"):
        calibrate(tmp_path, show_progress=False)


def test_max_coc_in_the_plans_units_is_refused_with_the_physical_range():
    with pytest.raises(
        InputError, match=r"max_coc.*expected 1e-06..0.05 m \(0.001..50 mm\), found 0.2 m"
    ):
        check_max_coc(0.2)
    assert check_max_coc(6.3e-4) == 6.3e-4


def test_max_coc_from_stats_reads_the_recommended_value(tmp_path):
    atomic_write_json(tmp_path / "logs" / "coc_stats.json", {"recommended_max_coc": 4.2e-4})
    assert resolve_max_coc("from-stats", tmp_path) == 4.2e-4
    assert resolve_max_coc("0.0005", tmp_path) == 5e-4


def test_max_coc_from_stats_without_calibration_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"coc_stats.json: no calibration statistics"):
        resolve_max_coc("from-stats", tmp_path)


def test_max_coc_that_is_not_a_number_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"expected a number in metres or 'from-stats', found p95"):
        resolve_max_coc("p95", tmp_path)


def test_max_coc_must_be_finite():
    with pytest.raises(InputError, match="max_coc"):
        check_max_coc(math.nan)
