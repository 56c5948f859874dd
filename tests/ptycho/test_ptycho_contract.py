import numpy as np
import pytest

from trainset.errors import InputError
from trainset.ptycho.contract import DATA001, check_npz
from trainset.store import atomic_write_npz


def canonical(n=20, size=8):
    rng = np.random.default_rng(0)
    return {
        "diffraction": rng.uniform(0.1, 1.0, (n, size, size)).astype(np.float32),
        "objectGuess": np.ones((30, 29), np.complex64),
        "probeGuess": np.ones((size, size), np.complex64),
        "xcoords": np.arange(n, dtype=np.float64),
        "ycoords": np.arange(n, dtype=np.float64),
    }


def test_canonical_arrays_pass():
    assert DATA001.validate_arrays(canonical()).ok


def test_optional_keys_are_checked_when_present():
    arrays = canonical()
    arrays["scan_index"] = np.zeros(20, np.int64)
    arrays["Y"] = np.ones((20, 8, 8), np.complex64)
    arrays["xcoords_start"] = np.arange(19, dtype=np.float64)
    report = DATA001.validate_arrays(arrays)
    assert [(f.key, f.rule, f.found) for f in report.failures] == [
        ("xcoords_start", "shape", "N=19 in shape (19,)")
    ]


def test_diff3d_is_accepted_as_the_old_name_of_diffraction():
    arrays = canonical()
    arrays["diff3d"] = arrays.pop("diffraction")
    assert DATA001.validate_arrays(arrays).ok


def test_intensity_instead_of_amplitude_fails_peak_to_mean():
    arrays = canonical()
    diff = np.zeros((20, 8, 8), np.float32)
    diff[:, 0, 0] = 1.0  # max/mean = 64
    diff[0, 0, 0] = 3.0  # max 3, mean 22/1280: max/mean = 3840/22 = 174.545
    arrays["diffraction"] = diff
    report = DATA001.validate_arrays(arrays)
    assert [(f.rule, f.found) for f in report.failures] == [("max/mean", "max/mean 174.545")]


def test_probe_shape_must_equal_pattern_shape():
    arrays = canonical()
    arrays["probeGuess"] = np.ones((8, 9), np.complex64)
    report = DATA001.validate_arrays(arrays)
    assert [(f.key, f.expected) for f in report.failures] == [
        ("probeGuess", "W=8 (as in 'diffraction')")
    ]


def test_every_problem_of_a_bad_file_is_listed(tmp_path):
    arrays = canonical()
    arrays["diffraction"] = arrays["diffraction"] * 20.0  # max >= 10
    arrays["diffraction"][0, 0, 0] = -1.0
    arrays["objectGuess"] = arrays["objectGuess"].astype(np.complex128)
    arrays["ycoords"] = arrays["ycoords"].astype(np.float32)
    del arrays["probeGuess"]
    path = atomic_write_npz(tmp_path / "bad.npz", arrays)
    report = check_npz(path)
    assert [(f.key, f.rule) for f in report.failures] == [
        ("diffraction", "min"),
        ("diffraction", "max"),
        ("objectGuess", "dtype"),
        ("probeGuess", "required"),
        ("ycoords", "dtype"),
    ]


def test_pickled_array_is_reported_not_loaded(tmp_path):
    arrays = canonical()
    arrays["xcoords"] = np.array([{"a": 1}] * 20, dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)  # numpy pickles the object array
    report = check_npz(tmp_path / "obj.npz")
    assert [(f.key, f.found) for f in report.failures] == [
        ("xcoords", "object array (needs pickle)")
    ]


def test_check_of_missing_file_raises_input_error(tmp_path):
    with pytest.raises(InputError, match=r"missing\.npz: file not found"):
        check_npz(tmp_path / "missing.npz")


def test_check_of_non_zip_raises_input_error(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("not a zip")
    with pytest.raises(InputError, match=r"not an NPZ file \(expected an NPZ \(zip\) archive"):
        check_npz(path)
