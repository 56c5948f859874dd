"""Long videos through a video model: overlapping windows blended by a linear cross-fade.

The plan: a scene of more than 300 frames goes through the model in 256-frame windows with a
32-frame overlap; in each overlap the earlier window's prediction fades out linearly while the
later one fades in. Frame ``k`` (0-based) of an overlap of ``L`` frames takes weight
``(k + 1) / (L + 1)`` from the later window and the rest from the earlier one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from trainset.errors import InputError

# The plan's chunking: windows of 256 frames overlapping by 32, for scenes above 300 frames.
DEFAULT_WINDOW = 256
DEFAULT_OVERLAP = 32
DEFAULT_MAX_SINGLE = 300


def chunk_windows(
    n_frames: int,
    window: int = DEFAULT_WINDOW,
    overlap: int = DEFAULT_OVERLAP,
    max_single: int = DEFAULT_MAX_SINGLE,
) -> list[tuple[int, int]]:
    """Frame ranges ``[start, end)``: one window when ``n_frames <= max_single``, else windows
    of ``window`` frames starting every ``window - overlap`` frames, the last one cut at the end."""
    if window < 2 or not 0 <= overlap < window:
        raise InputError(
            "chunk window must exceed its overlap",
            expected="window > overlap >= 0",
            found=(window, overlap),
        )
    if n_frames <= 0:
        return []
    if n_frames <= max_single:
        return [(0, n_frames)]
    windows = []
    start = 0
    while True:
        end = min(start + window, n_frames)
        windows.append((start, end))
        if end == n_frames:
            return windows
        start += window - overlap


def chunked_predict(
    n_frames: int,
    predict_window: Callable[[int, int], np.ndarray],
    *,
    window: int = DEFAULT_WINDOW,
    overlap: int = DEFAULT_OVERLAP,
    max_single: int = DEFAULT_MAX_SINGLE,
) -> Iterator[np.ndarray]:
    """Per-frame predictions for ``n_frames`` frames, one at a time, in order.

    ``predict_window(start, end)`` returns a (end - start, ...) float array for those frames.
    Only one window's predictions are held at a time.
    """
    windows = chunk_windows(n_frames, window, overlap, max_single)
    carry: np.ndarray | None = None  # previous window's predictions for the coming overlap
    for i, (start, end) in enumerate(windows):
        pred = np.asarray(predict_window(start, end))
        if pred.shape[0] != end - start:
            raise InputError(
                "window prediction has the wrong frame count",
                expected=end - start,
                found=pred.shape[0],
            )
        head = 0
        if carry is not None:
            length = carry.shape[0]
            for k in range(length):
                w = (k + 1) / (length + 1)
                yield ((1.0 - w) * carry[k] + w * pred[k]).astype(pred.dtype, copy=False)
            head = length
        next_start = windows[i + 1][0] if i + 1 < len(windows) else end
        yield from pred[head : next_start - start]
        carry = pred[next_start - start :] if i + 1 < len(windows) else None
