import numpy as np
import pytest

from trainset.errors import InputError
from trainset.ptycho.layout import detect_layout, to_canonical


def test_first_axis_matching_coordinate_count_is_canonical():
    assert detect_layout((1087, 64, 64), 1087) == "nhw"


def test_last_axis_matching_coordinate_count_is_legacy():
    assert detect_layout((64, 64, 1087), 1087) == "hwn"


def test_ambiguous_layout_is_an_error_naming_the_override():
    with pytest.raises(InputError, match=r"ambiguous.*--layout nhw\|hwn"):
        detect_layout((64, 64, 64), 64, file="f.npz")


@pytest.mark.parametrize("override", ["nhw", "hwn"])
def test_override_decides_an_ambiguous_layout(override):
    assert detect_layout((64, 64, 64), 64, override=override) == override


def test_override_contradicting_the_shape_is_refused():
    with pytest.raises(InputError, match=r"--layout nhw puts N on the first axis.*found shape"):
        detect_layout((64, 64, 1087), 1087, override="nhw")


def test_unknown_override_is_refused():
    with pytest.raises(InputError, match=r"unknown layout.*expected nhw or hwn, found 'nwh'"):
        detect_layout((64, 64, 1087), 1087, override="nwh")


def test_coordinate_count_matching_neither_axis_is_an_error():
    with pytest.raises(InputError, match=r"matches neither.*N=100.*found shape \(64, 64, 1087\)"):
        detect_layout((64, 64, 1087), 100)


def test_two_dimensional_stack_is_an_error():
    with pytest.raises(InputError, match=r"expected 3-D .*found 2-D shape \(64, 64\)"):
        detect_layout((64, 64), 64)


def test_legacy_stack_becomes_n_h_w_with_pattern_k_at_row_k():
    legacy = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (H=2, W=3, N=4)
    canonical = to_canonical(legacy, "hwn")
    assert canonical.shape == (4, 2, 3)
    for k in range(4):
        assert np.array_equal(canonical[k], legacy[:, :, k])
