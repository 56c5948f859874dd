import math

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.sar.preprocessing import (
    compute_clip_bounds,
    denormalize,
    from_db,
    handle_invalid_values,
    normalize,
    preprocess_sar_complete,
    to_db,
)


def test_handle_invalid_values_replaces_nonpositive_nan_and_inf_only():
    image = np.array([0.5, 0.0, -2.0, np.nan, np.inf, -np.inf, 3.0], dtype=np.float32)
    out = handle_invalid_values(image)
    expected = np.array([0.5, 1e-10, 1e-10, 1e-10, 1e-10, 1e-10, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(out, expected)


def test_handle_invalid_values_does_not_mutate_input():
    image = np.array([0.0, np.nan, 1.0])
    handle_invalid_values(image, noise_floor=1e-3)
    assert image[0] == 0.0 and np.isnan(image[1])


def test_from_db_is_ten_to_the_tenth():
    np.testing.assert_allclose(from_db(np.array([10.0, -10.0, 0.0, 3.0])), [10, 0.1, 1, 10**0.3])


def test_to_db_inverts_from_db():
    x = np.array([1e-4, 0.05, 1.0, 250.0])
    np.testing.assert_allclose(from_db(to_db(x)), x, rtol=1e-12)
    np.testing.assert_allclose(to_db(np.array([100.0])), [20.0])


def test_compute_clip_bounds_percentile_defaults_are_1_and_99_of_pooled_pixels():
    rng = np.random.default_rng(0)
    a, b = rng.normal(-12, 4, 1000), rng.normal(-20, 5, 500)
    expected = np.percentile(np.concatenate([a, b]), [1, 99])
    assert compute_clip_bounds([a, b]) == pytest.approx(tuple(expected))


def test_compute_clip_bounds_percentile_uses_low_and_high_pct():
    x = np.arange(101, dtype=np.float64)
    assert compute_clip_bounds(x, "percentile", low_pct=5, high_pct=95) == (5.0, 95.0)


def test_compute_clip_bounds_ignores_non_finite_pixels():
    x = np.array([np.nan, 0.0, 100.0, np.inf])
    assert compute_clip_bounds(x, "percentile", low_pct=0, high_pct=100) == (0.0, 100.0)


def test_compute_clip_bounds_fixed_defaults_are_minus_25_and_5_db():
    assert compute_clip_bounds(np.zeros(3), "fixed") == (-25.0, 5.0)
    assert compute_clip_bounds(np.zeros(3), "fixed", vmin=-30, vmax=0) == (-30.0, 0.0)


def test_compute_clip_bounds_sigma_is_mean_plus_minus_k_std():
    x = np.array([-2.0, 0.0, 2.0, 4.0])  # mean 1, population std sqrt(5)
    vmin, vmax = compute_clip_bounds(x, "sigma")
    assert (vmin, vmax) == pytest.approx((1 - 3 * math.sqrt(5), 1 + 3 * math.sqrt(5)))
    assert compute_clip_bounds(x, "sigma", k=1) == pytest.approx(
        (1 - math.sqrt(5), 1 + math.sqrt(5))
    )


def test_compute_clip_bounds_unknown_method_is_an_input_error():
    with pytest.raises(InputError, match="unknown clip method"):
        compute_clip_bounds(np.zeros(3), "median")


def test_compute_clip_bounds_degenerate_bounds_are_an_input_error():
    with pytest.raises(InputError, match="degenerate"):
        compute_clip_bounds(np.full(10, -7.0), "percentile")


def test_compute_clip_bounds_without_finite_pixels_is_an_input_error():
    with pytest.raises(InputError, match="no finite pixel"):
        compute_clip_bounds(np.array([np.nan]), "sigma")


def test_normalize_maps_bounds_to_0_and_1_and_clips():
    db = np.array([-25.0, -10.0, 5.0, 10.0, -30.0])
    out = normalize(db, -25.0, 5.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([0.0, 0.5, 1.0, 1.0, 0.0], dtype=np.float32))


def test_denormalize_inverts_normalize_for_unclipped_pixels():
    db = np.linspace(-24.9, 4.9, 301)
    np.testing.assert_allclose(denormalize(normalize(db, -25.0, 5.0), -25.0, 5.0), db, atol=3e-6)


def test_preprocess_amplitude_squares_before_db():
    # DN 10 -> intensity 100 -> 20 dB -> (20 - 0) / 40 = 0.5
    norm, valid = preprocess_sar_complete(np.array([[10]], np.uint16), 0.0, 40.0, units="amplitude")
    assert norm.dtype == np.float32 and norm[0, 0] == np.float32(0.5) and valid[0, 0]


def test_preprocess_intensity_is_plan_formula():
    image = np.array([[0.1, 1.0, 10.0]], np.float32)  # -10, 0, 10 dB
    norm, _ = preprocess_sar_complete(image, -20.0, 20.0, units="intensity")
    np.testing.assert_allclose(norm, [[0.25, 0.5, 0.75]], atol=1e-6)


def test_preprocess_db_units_pass_through():
    norm, valid = preprocess_sar_complete(np.array([[-15.0, np.nan]]), -25.0, 5.0, units="db")
    np.testing.assert_allclose(norm, [[1 / 3, 0.0]], atol=1e-6)
    np.testing.assert_array_equal(valid, [[True, False]])


def test_preprocess_invalid_pixels_are_zero_and_masked():
    image = np.array([[0.0, np.nan, 0.5, 0.5]], np.float32)
    mask = np.array([[1, 1, 0, 1]], bool)
    norm, valid = preprocess_sar_complete(image, -25.0, 5.0, mask=mask)
    np.testing.assert_array_equal(valid, [[False, False, False, True]])
    np.testing.assert_array_equal(norm[~valid], [0.0, 0.0, 0.0])
    assert norm[0, 3] == pytest.approx((10 * math.log10(0.5) + 25) / 30, abs=1e-6)


def test_preprocess_unknown_units_is_an_input_error():
    with pytest.raises(InputError, match="unknown SAR units"):
        preprocess_sar_complete(np.ones((2, 2)), -25.0, 5.0, units="sigma0")
