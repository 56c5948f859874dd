import numpy as np
import pytest

from trainset.errors import InputError
from trainset.focus.chunking import chunk_windows, chunked_predict


def test_scenes_up_to_300_frames_are_one_window():
    assert chunk_windows(300) == [(0, 300)]
    assert chunk_windows(1) == [(0, 1)]
    assert chunk_windows(0) == []


def test_long_scenes_use_256_frame_windows_overlapping_by_32():
    assert chunk_windows(301) == [(0, 256), (224, 301)]
    assert chunk_windows(600) == [(0, 256), (224, 480), (448, 600)]


def test_window_must_exceed_overlap():
    with pytest.raises(InputError, match="chunk window must exceed its overlap"):
        chunk_windows(10, window=4, overlap=4)


def test_single_window_is_passed_through():
    calls = []

    def predict(start, end):
        calls.append((start, end))
        return np.arange(start, end, dtype=np.float32)[:, None]

    out = list(chunked_predict(5, predict))
    assert calls == [(0, 5)]
    assert [float(o[0]) for o in out] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_overlaps_are_cross_faded_linearly():
    # Window i predicts the constant i; overlap of 2 frames -> weights 1/3, 2/3 for the later.
    windows = chunk_windows(10, window=5, overlap=2, max_single=4)
    assert windows == [(0, 5), (3, 8), (6, 10)]

    def predict(start, end):
        value = [w[0] for w in windows].index(start)
        return np.full((end - start, 1, 1), float(value), np.float32)

    out = [float(o[0, 0]) for o in chunked_predict(10, predict, window=5, overlap=2, max_single=4)]
    expected = [0, 0, 0, 1 / 3, 2 / 3, 1, 1 + 1 / 3, 1 + 2 / 3, 2, 2]
    assert out == pytest.approx(expected, abs=1e-6)


def test_frame_identity_is_kept_across_windows():
    def predict(start, end):
        return np.arange(start, end, dtype=np.float64)[:, None] * 2.0

    out = list(chunked_predict(700, predict))
    assert len(out) == 700
    assert [float(o[0]) for o in out] == pytest.approx([2.0 * t for t in range(700)])


def test_wrong_window_length_is_an_input_error():
    with pytest.raises(InputError, match="window prediction has the wrong frame count"):
        list(chunked_predict(3, lambda s, e: np.zeros((e - s - 1, 1))))
