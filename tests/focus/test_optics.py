"""Optics against an independent transcription of the plan's formulas (Phases 4 and 5)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.focus.plan_formulas import (
    plan_compute_focus_map,
    plan_compute_raw_coc,
    plan_sample_coc_params,
)
from trainset.errors import InputError
from trainset.focus.optics import (
    coc_px,
    compute_focus_map,
    compute_raw_coc,
    sample_coc_params,
    scene_coc_params,
    scene_seed,
    signed_coc_px,
)

STATS = {"d_min": 0.7, "d_max": 18.4, "d_median": 3.2, "d_p5": 0.8, "d_p95": 12.1}


def _depth(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 30.0, size=(37, 41)).astype(np.float16).astype(np.float32)
    depth[0, :5] = [0.0, 1e-7, 2.5, 2.5, 100.0]
    return depth


def test_focus_maps_are_bit_identical_to_the_plan_in_float16():
    depth = _depth()
    for params in plan_sample_coc_params(STATS, N_sets=6, seed=123):
        for max_coc in (1e-4, 6.3e-4, 2e-3):
            ours = compute_focus_map(depth, max_coc=max_coc, **params)
            plans = plan_compute_focus_map(depth, max_coc=max_coc, **params)
            assert ours.dtype == np.float16
            assert ours.tobytes() == plans.tobytes()


def test_raw_coc_is_identical_to_the_plan():
    depth = _depth(1)
    for params in plan_sample_coc_params(STATS, N_sets=4, seed=7):
        ours = compute_raw_coc(depth, **params)
        assert ours.dtype == np.float32
        assert ours.tobytes() == plan_compute_raw_coc(depth, **params).tobytes()


def test_sample_coc_params_draws_the_plans_sets_for_a_seed():
    for seed in (0, 1, 2**32 - 1):
        assert sample_coc_params(STATS, N_sets=5, seed=seed) == plan_sample_coc_params(
            STATS, N_sets=5, seed=seed
        )


def test_scene_seed_is_the_first_8_bytes_of_sha256_mod_2_pow_32():
    digest = hashlib.sha256(b"scene_042").digest()
    assert scene_seed("scene_042") == int.from_bytes(digest[:8], "big") % 2**32


def test_scene_coc_params_are_the_plans_sets_seeded_by_the_scene_seed():
    expected = plan_sample_coc_params(STATS, N_sets=4, seed=scene_seed("scene_042"))
    assert scene_coc_params("scene_042", STATS) == expected


def test_parameter_sets_are_identical_across_processes_with_different_hash_seeds():
    code = (
        "import json; from trainset.focus.optics import scene_coc_params; "
        f"print(json.dumps(scene_coc_params('scene_042', {STATS!r})))"
    )
    outputs = []
    for hash_seed in ("1", "987"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1] == scene_coc_params("scene_042", STATS)


def test_focus_map_is_one_at_the_focus_distance_and_zero_far_from_it():
    depth = np.array([[2.0, 1000.0]], dtype=np.float32)
    focus = compute_focus_map(depth, f=0.05, N=2.0, S_focus=2.0, max_coc=1e-4)
    assert focus.tolist() == [[1.0, 0.0]]


def test_thin_lens_coc_is_the_exact_thin_lens_formula():
    f, N, S = 0.085, 1.4, 0.5
    depth = np.array([[0.3, 0.5, 4.0, 50.0]], dtype=np.float32)
    d = depth.astype(np.float64)
    expected = f**2 * np.abs(d - S) / (N * d * (S - f))
    ours = compute_raw_coc(depth, f, N, S, coc_model="thin_lens")
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_thin_lens_focus_map_uses_the_thin_lens_coc():
    f, N, S, max_coc = 0.085, 1.4, 0.5, 0.01
    depth = np.array([[0.4, 0.6, 5.0]], dtype=np.float32)
    d = depth.astype(np.float64)
    coc = f**2 * np.abs(d - S) / (N * d * (S - f))
    expected = (1.0 - np.clip(coc / max_coc, 0, 1)).astype(np.float16)
    ours = compute_focus_map(depth, f, N, S, max_coc, coc_model="thin_lens")
    np.testing.assert_allclose(ours.astype(np.float32), expected.astype(np.float32), atol=1e-3)


def test_thin_lens_needs_the_focus_distance_beyond_the_focal_length():
    with pytest.raises(InputError, match=r"S_focus.*beyond the focal length"):
        compute_raw_coc(np.ones((2, 2), np.float32), 0.05, 2.0, 0.04, coc_model="thin_lens")


def test_unknown_coc_model_is_refused():
    with pytest.raises(InputError, match=r"coc_model.*unknown CoC model.*plan or thin_lens"):
        compute_raw_coc(np.ones((2, 2), np.float32), 0.05, 2.0, 2.0, coc_model="paraxial")


def test_coc_in_pixels_matches_the_reference_example():
    # reference/models.md: f 50 mm, N 2, S 2 m, 1024 px, full frame: infinity ~18.2 px.
    f, N, S, width = 0.05, 2.0, 2.0, 1024
    k_diam = f**2 * S * width / (N * (S - f) * 0.036)
    far = signed_coc_px(np.array([[1e9]], np.float32), f, N, S, width, coc_model="thin_lens")
    assert far[0, 0] == pytest.approx(k_diam / S, rel=1e-5)
    assert far[0, 0] == pytest.approx(18.234, abs=1e-3)


def test_signed_coc_is_negative_in_front_zero_at_focus_positive_behind():
    depth = np.array([[1.0, 2.0, 8.0]], np.float32)
    signed = signed_coc_px(depth, 0.05, 2.0, 2.0, 640)
    assert signed[0, 0] < 0 and signed[0, 1] == 0 and signed[0, 2] > 0
    expected = coc_px(plan_compute_raw_coc(depth, 0.05, 2.0, 2.0), 640)
    np.testing.assert_allclose(np.abs(signed), expected, rtol=1e-5)


def test_coc_px_scales_sensor_metres_by_width_over_sensor_width():
    assert coc_px(0.0036, 1000, 0.036) == pytest.approx(100.0)


def test_scene_parameters_need_positive_depth_statistics():
    with pytest.raises(InputError, match=r"scene_7/depth_maps/stats.json: key 'd_max'"):
        scene_coc_params("scene_7", {"d_min": 0.5})


def test_focus_range_p5_p95_draws_s_focus_between_the_percentiles():
    stats = {**STATS, "d_p5": 1.2, "d_p95": 2.8}
    bounds = {"d_min": 1.2, "d_max": 2.8}
    expected = plan_sample_coc_params(bounds, N_sets=8, seed=scene_seed("scene_042"))
    drawn = scene_coc_params("scene_042", stats, 8, focus_range="p5-p95")
    assert drawn == expected
    assert all(1.2 <= p["S_focus"] <= 2.8 for p in drawn)


def test_focus_range_minmax_is_the_plans_default():
    stats = {**STATS, "d_p5": 1.2, "d_p95": 2.8}
    assert scene_coc_params("scene_042", stats, focus_range="minmax") == scene_coc_params(
        "scene_042", stats
    )


def test_unknown_focus_range_is_refused():
    with pytest.raises(InputError, match=r"focus_range.*expected minmax or p5-p95, found p10"):
        scene_coc_params("scene_042", STATS, focus_range="p10")
