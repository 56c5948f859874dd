"""Fixtures of the VDA tests.

- One torch thread: small models on a shared 2-core machine run several times faster than with two.
- An independent transcription of the window rules in models.md (reference procedure on whole
  lists): pad the tail with the last frame; windows of 32 every 22 frames; the first 10 inputs
  of a later window are the previous window's inputs at 0, 12, 24..31; the 8 overlapping outputs
  are cross-faded linearly; no scale alignment (metric). Served as fixtures because test modules
  are imported with pytest's importlib mode (no imports between test files).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.focus.torch_threads import _one_torch_thread  # noqa: F401  (a fixture)


def transcribed_windows(n: int) -> list[list[int]]:
    padded = list(range(n))
    pad = (22 - n % 22) % 22 + 10
    padded += [n - 1] * pad
    windows: list[list[int]] = []
    for start in range(0, n, 22):
        window = padded[start : start + 32]
        if windows:
            previous = windows[-1]
            window[:10] = [previous[i] for i in (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)]
        windows.append(window)
    return windows


def transcribed_outputs(n: int) -> list[dict[tuple[int, int], float]]:
    """Each output frame as {(window, slot): weight}."""
    outputs: list[dict[tuple[int, int], float]] = []
    for k in range(len(transcribed_windows(n))):
        slot_out = [{(k, s): 1.0} for s in range(32)]
        if k == 0:
            outputs += slot_out
            continue
        for i in range(8):
            w = i / 7
            old = outputs[len(outputs) - 8 + i]
            mixed = {key: v * (1 - w) for key, v in old.items()}
            mixed[(k, 2 + i)] = mixed.get((k, 2 + i), 0.0) + w
            outputs[len(outputs) - 8 + i] = mixed
        outputs += slot_out[10:]
    return outputs[:n]


@pytest.fixture
def windows_rule() -> Callable[[int], list[list[int]]]:
    """``transcribed_windows``: input frame of every slot of every window."""
    return transcribed_windows


@pytest.fixture
def outputs_rule() -> Callable[[int], list[dict[tuple[int, int], float]]]:
    """``transcribed_outputs``: each output frame as {(window, slot): weight}."""
    return transcribed_outputs
