import numpy as np
import pytest
import torch

from trainset.errors import InputError
from trainset.loading import apply_d4, d4_codes, d4_copy_into, d4_view

SQ = np.arange(16, dtype=np.float32).reshape(4, 4)

# What each code stands for, written with numpy's own flips and rotations.
NUMPY_D4 = {
    0: lambda x: x,
    1: lambda x: np.rot90(x, 1),
    2: lambda x: np.flipud(np.fliplr(x)),
    3: lambda x: np.rot90(x, -1),
    4: lambda x: np.fliplr(x),
    5: lambda x: np.transpose(x),
    6: lambda x: np.flipud(x),
    7: lambda x: np.transpose(np.flipud(np.fliplr(x))),
}


@pytest.mark.parametrize("code", range(8))
def test_d4_view_equals_the_numpy_operation_it_stands_for(code):
    np.testing.assert_array_equal(d4_view(SQ, code), NUMPY_D4[code](SQ))


def test_code_7_is_the_anti_transpose():
    # rot90 of the mirror image: x[i, j] -> x[W-1-j, H-1-i]
    want = np.array([[SQ[3 - j, 3 - i] for j in range(4)] for i in range(4)])
    np.testing.assert_array_equal(d4_view(SQ, 7), want)


def test_the_eight_codes_give_eight_different_images():
    images = {d4_view(SQ, c).tobytes() for c in range(8)}
    assert len(images) == 8


@pytest.mark.parametrize("code", range(8))
def test_fused_copy_equals_numpy(code):
    dst = np.empty_like(SQ)
    d4_copy_into(SQ, code, dst)
    np.testing.assert_array_equal(dst, NUMPY_D4[code](SQ))


def test_device_gather_equals_numpy_for_every_code_in_one_batch():
    batch = np.stack([SQ + 100 * k for k in range(8)])[:, None]  # (8, 1, 4, 4)
    codes = np.arange(8, dtype=np.uint8)
    got = apply_d4(torch.from_numpy(batch), codes).numpy()
    want = np.stack([NUMPY_D4[c](batch[c, 0]) for c in range(8)])[:, None]
    np.testing.assert_array_equal(got, want)


def test_device_gather_on_three_dim_batch():
    got = apply_d4(torch.from_numpy(np.stack([SQ, SQ])), torch.tensor([5, 2])).numpy()
    np.testing.assert_array_equal(got, np.stack([SQ.T, SQ[::-1, ::-1]]))


def test_codes_are_a_function_of_seed_epoch_and_record():
    idx = np.array([5, 0, 99, 7])
    a = d4_codes(3, 1, idx)
    np.testing.assert_array_equal(a[[1, 3]], d4_codes(3, 1, np.array([0, 7])))
    assert a.dtype == np.uint8
    assert not np.array_equal(d4_codes(3, 1, np.arange(64)), d4_codes(3, 2, np.arange(64)))
    assert not np.array_equal(d4_codes(3, 1, np.arange(64)), d4_codes(4, 1, np.arange(64)))


def test_codes_are_close_to_uniform():
    counts = np.bincount(d4_codes(0, 0, np.arange(80000)), minlength=8)
    assert counts.min() > 9500 and counts.max() < 10500


def test_codes_do_not_change_between_releases():
    # Pinned values: a changed hash would silently change every user's augmentation.
    assert d4_codes(42, 0, np.arange(8)).tolist() == [3, 5, 6, 1, 0, 1, 5, 5]


def test_code_out_of_range_is_refused():
    with pytest.raises(InputError, match=r"D4 code out of range \(expected 0..7, found 8\)"):
        d4_view(SQ, 8)


def test_gather_refuses_non_square_batches():
    with pytest.raises(InputError, match="D4 augmentation needs square patches"):
        apply_d4(torch.zeros(2, 3, 4), np.array([0, 1]))


def test_gather_refuses_wrong_code_count():
    with pytest.raises(
        InputError, match=r"one D4 code per sample is needed \(expected \(2,\), found \(3,\)\)"
    ):
        apply_d4(torch.zeros(2, 4, 4), np.array([0, 1, 2]))


def test_gather_refuses_codes_out_of_range():
    with pytest.raises(InputError, match="D4 code out of range"):
        apply_d4(torch.zeros(1, 4, 4), np.array([9]))


@pytest.mark.parametrize("code", range(8))
def test_d4_view_acts_on_the_last_two_axes_of_a_stack(code):
    stack = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    want = np.stack([np.stack([NUMPY_D4[code](m) for m in row]) for row in stack])
    np.testing.assert_array_equal(d4_view(stack, code), want)


@pytest.mark.parametrize("code", range(8))
def test_fused_copy_into_a_strided_destination_equals_numpy(code):
    wide = np.zeros((4, 8), np.float32)
    d4_copy_into(SQ, code, wide[:, ::2])
    np.testing.assert_array_equal(wide[:, ::2], NUMPY_D4[code](SQ))
    assert not wide[:, 1::2].any()
