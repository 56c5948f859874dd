"""Ptychography test data: made here, never downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainset.ptycho.synthetic import make_legacy_arrays
from trainset.store import atomic_write_npz


@pytest.fixture(scope="session")
def run1084_arrays() -> dict[str, np.ndarray]:
    """The synthetic Run1084-shaped legacy arrays: diffraction (64, 64, 1087) float64."""
    return make_legacy_arrays()


@pytest.fixture(scope="session")
def run1084_source(tmp_path_factory, run1084_arrays) -> Path:
    """The synthetic Run1084-shaped legacy source as an NPZ file (written once per session)."""
    path = tmp_path_factory.mktemp("run1084") / "Run1084_synthetic.npz"
    return atomic_write_npz(path, run1084_arrays, compress=False)


def small_legacy_arrays(n: int = 40, size: int = 16) -> dict[str, np.ndarray]:
    """A small legacy (H, W, N) source: N=40 positions of 16x16 patterns, object 48x47."""
    return make_legacy_arrays(n, size, (48, 47), seed=7)


@pytest.fixture
def small_arrays():
    """Factory of small legacy sources (see :func:`small_legacy_arrays`)."""
    return small_legacy_arrays
