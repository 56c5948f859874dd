import json

import numpy as np
import pytest

from trainset.contracts import ArraySpec, Contract, Finite, MaxValue, MinValue, NpzSource, Predicate
from trainset.errors import InputError
from trainset.store import atomic_write_npz

CONTRACT = Contract(
    "toy",
    (
        ArraySpec(
            "diffraction",
            ("N", "H", "W"),
            ("float32",),
            rules=(MinValue(0.0), MaxValue(10.0), Finite()),
            aliases=("diff3d",),
        ),
        ArraySpec("probe", ("H", "W"), ("complex64",)),
        ArraySpec("xcoords", ("N",), ("float64",)),
        ArraySpec("scan_index", ("N",), (), required=False),
    ),
)


def good():
    return {
        "diffraction": np.full((5, 4, 4), 0.5, np.float32),
        "probe": np.ones((4, 4), np.complex64),
        "xcoords": np.arange(5, dtype=np.float64),
    }


def test_valid_arrays_pass():
    report = CONTRACT.validate_arrays(good())
    assert report.ok and report.failures == []
    assert report.checked == ["diffraction", "probe", "xcoords"]


def test_shared_dim_mismatch_names_both_keys():
    arrays = good()
    arrays["xcoords"] = np.arange(3, dtype=np.float64)
    report = CONTRACT.validate_arrays(arrays)
    assert [(f.key, f.rule) for f in report.failures] == [("xcoords", "shape")]
    assert report.failures[0].expected == "N=5 (as in 'diffraction')"
    assert report.failures[0].found == "N=3 in shape (3,)"


def test_every_failure_is_collected():
    arrays = good()
    arrays["diffraction"] = np.full((5, 4, 4), 12.0, np.float64)
    arrays["diffraction"][0, 0, 0] = np.nan
    arrays["probe"] = np.ones((4, 4), np.complex128)
    del arrays["xcoords"]
    report = CONTRACT.validate_arrays(arrays)
    assert [(f.key, f.rule) for f in report.failures] == [
        ("diffraction", "dtype"),
        ("probe", "dtype"),
        ("xcoords", "required"),
    ]


def test_value_rules_report_all_problems_of_an_array():
    arrays = good()
    arrays["diffraction"][0, 0, 0] = -1.0
    arrays["diffraction"][1, 0, 0] = 20.0
    arrays["diffraction"][2, 0, 0] = np.inf
    report = CONTRACT.validate_arrays(arrays)
    assert [(f.rule, f.found) for f in report.failures] == [
        ("min", "min -1"),
        ("max", "max 20"),
        ("finite", "0 NaN and 1 infinite value(s)"),
    ]
    assert report.failures[1].expected == "values < 10"


def test_alias_accepted_and_wrong_ndim_reported():
    arrays = good()
    arrays["diff3d"] = arrays.pop("diffraction")[0]
    report = CONTRACT.validate_arrays(arrays)
    assert [(f.key, f.rule, f.expected, f.found) for f in report.failures] == [
        ("diff3d", "ndim", "3-D (N, H, W)", "2-D shape (4, 4)")
    ]


def test_predicate_rule_and_text_json_forms():
    contract = Contract(
        "ratio",
        (
            ArraySpec(
                "a",
                rules=(
                    Predicate(
                        "max/mean",
                        "max/mean < 100",
                        lambda x: (
                            None
                            if x.max() / x.mean() < 100
                            else f"max/mean {x.max() / x.mean():.1f}"
                        ),
                    ),
                ),
            ),
        ),
    )
    arr = np.full(1000, 0.01)
    arr[0] = 100.0
    report = contract.validate_arrays({"a": arr}, name="f.npz")
    assert report.to_text() == (
        "f.npz: ratio: FAIL (1 problem(s))\n  - a: max/mean: expected max/mean < 100, found max/mean 909.2"
    )
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["failures"][0]["rule"] == "max/mean"


def test_npz_source_reads_headers_first_and_values_only_when_needed(tmp_path, monkeypatch):
    path = tmp_path / "f.npz"
    atomic_write_npz(path, good())
    loaded = []
    original = NpzSource.load

    def spy(self, key):
        loaded.append(key)
        return original(self, key)

    monkeypatch.setattr(NpzSource, "load", spy)
    report = CONTRACT.validate_npz(path)
    assert report.ok
    assert loaded == ["diffraction"]


def test_object_array_in_npz_is_a_failure_not_an_unpickle(tmp_path):
    path = tmp_path / "p.npz"
    arrays = good()
    np.savez(path, **arrays, probe_obj=np.array([None]), **{})
    bad = tmp_path / "q.npz"
    np.savez(
        bad,
        diffraction=np.array([{"x": 1}], dtype=object),
        probe=arrays["probe"],
        xcoords=arrays["xcoords"],
    )
    report = CONTRACT.validate_npz(bad)
    assert [(f.key, f.rule, f.found) for f in report.failures] == [
        ("diffraction", "dtype", "object array (needs pickle)")
    ]


def test_validation_does_not_mutate_input():
    arrays = good()
    before = {k: v.copy() for k, v in arrays.items()}
    CONTRACT.validate_arrays(arrays)
    for key, value in before.items():
        np.testing.assert_array_equal(arrays[key], value)


def test_unreadable_npz_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        CONTRACT.validate_npz(tmp_path / "nope.npz")
