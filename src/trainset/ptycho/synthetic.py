"""A seeded synthetic legacy source shaped like the Run1084 dataset, for tests and the demo.

Run1084 (``Run1084_recon3_postPC_shrunk_3.npz``): diffraction (64, 64, 1087) float64 in legacy
(H, W, N) layout with values 0..1.70, objectGuess (227, 226) complex128, probeGuess (64, 64)
complex128, 1087 coordinates and start coordinates (float64), no Y or scan_index.

The patterns are physical: the far-field amplitude ``|FFT(probe * object patch)|`` of a smooth
random phase object scanned on a jittered raster, scaled so the largest value is ``peak``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainset.store import atomic_write_npz

# Run1084 facts (../shared/reference/ptycho.md).
RUN1084_POSITIONS = 1087
RUN1084_PATTERN = 64
RUN1084_OBJECT = (227, 226)
RUN1084_PEAK = 1.70


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cutoff: float) -> np.ndarray:
    """Real noise low-passed to spatial frequencies below ``cutoff`` cycles/pixel, in [-1, 1]."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    smooth = np.fft.ifft2(np.fft.fft2(noise) * np.exp(-(fx**2 + fy**2) / (2 * cutoff**2))).real
    return smooth / np.abs(smooth).max()


def make_legacy_arrays(
    n_positions: int = RUN1084_POSITIONS,
    pattern: int = RUN1084_PATTERN,
    object_shape: tuple[int, int] = RUN1084_OBJECT,
    *,
    peak: float = RUN1084_PEAK,
    seed: int = 1084,
) -> dict[str, np.ndarray]:
    """Arrays of a legacy ptychography file: diffraction (pattern, pattern, n_positions) float64.

    Coordinates are patch centres in object pixels; ``x*_start`` are the nominal raster
    positions, ``x*`` the same plus a small seeded jitter (as after position correction), so
    every position, and hence every pattern, is distinct.
    """
    rng = np.random.default_rng(seed)
    rows, cols = object_shape
    if rows <= pattern or cols <= pattern:
        raise ValueError(f"object {object_shape} must be larger than the pattern {pattern}")
    amplitude = 0.75 + 0.25 * _smooth_noise(rng, object_shape, 0.05)
    phase = np.pi * _smooth_noise(rng, object_shape, 0.08)
    obj = (amplitude * np.exp(1j * phase)).astype(np.complex128)

    yy, xx = np.mgrid[:pattern, :pattern] - (pattern - 1) / 2.0
    r2 = (xx**2 + yy**2) / (pattern / 8.0) ** 2
    probe = (np.exp(-r2 / 2.0) * np.exp(1j * 1.5 * r2)).astype(np.complex128)

    half = pattern / 2.0
    side = int(np.ceil(np.sqrt(n_positions)))
    # Keep centres 1 px inside the range where a whole patch fits after jitter.
    ys = np.linspace(half + 1.0, rows - half - 2.0, side)
    xs = np.linspace(half + 1.0, cols - half - 2.0, side)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    ycoords_start = grid_y.ravel()[:n_positions].copy()
    xcoords_start = grid_x.ravel()[:n_positions].copy()
    ycoords = ycoords_start + rng.uniform(-0.5, 0.5, n_positions)
    xcoords = xcoords_start + rng.uniform(-0.5, 0.5, n_positions)

    top = np.floor(ycoords - half + 0.5).astype(np.int64)
    left = np.floor(xcoords - half + 0.5).astype(np.int64)
    offsets = np.arange(pattern)
    patches = obj[(top[:, None] + offsets)[:, :, None], (left[:, None] + offsets)[:, None, :]]
    far_field = np.abs(np.fft.fftshift(np.fft.fft2(patches * probe), axes=(-2, -1)))
    far_field *= peak / far_field.max()
    diffraction = np.ascontiguousarray(np.transpose(far_field, (1, 2, 0)))
    return {
        "diffraction": diffraction,
        "objectGuess": obj,
        "probeGuess": probe,
        "xcoords": xcoords,
        "ycoords": ycoords,
        "xcoords_start": xcoords_start,
        "ycoords_start": ycoords_start,
    }


def write_legacy_source(
    path: str | os.PathLike[str],
    n_positions: int = RUN1084_POSITIONS,
    pattern: int = RUN1084_PATTERN,
    object_shape: tuple[int, int] = RUN1084_OBJECT,
    *,
    seed: int = 1084,
    compress: bool = True,
) -> Path:
    """Write :func:`make_legacy_arrays` as an NPZ (atomically) and return its path."""
    arrays = make_legacy_arrays(n_positions, pattern, object_shape, seed=seed)
    return atomic_write_npz(path, arrays, compress=compress)
