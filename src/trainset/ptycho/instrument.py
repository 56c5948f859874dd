"""Measured ptychography data from instrument formats (CXI, tike) -> a canonical DATA-001 NPZ.

Readers (:mod:`trainset.ptycho.cxi`, :mod:`trainset.ptycho.tike`) return a :class:`Measurement`:
intensities with the zero frequency at the centre, probe-corner positions in object pixels, the
probe when the file has one, the detector mask. :func:`write_import` does the rest the same way
for every format:

- amplitude = sqrt(intensity), then PtychoPINN's normalisation (``ptycho/raw_data.py`` and
  ``ptycho/loader.py``, ``normalize_data``): amplitudes times
  ``sqrt((N/2)**2 / mean_i(sum_hw amplitude_i**2))`` for N x N patterns (``H*W/4`` in place of
  ``(N/2)**2`` for H x W), so the mean total intensity of a pattern is ``H*W/4``;
- the probe from the file times the same factor (so |FFT(probe x object)| stays on the scale of
  the amplitudes), or, without one, the inverse unitary FFT of the root-mean-square amplitude
  pattern with zero phase (the "SHARP-style" guess of cdtools ``SHARP_style_probe``);
- coordinates: patch centres (probe corner + H//2, W//2) shifted by whole pixels so the scan
  starts :data:`MARGIN_PX` pixels inside the object guess; the offsets are recorded;
- objectGuess: ones (full transmission), just large enough to hold every patch;
- the result is checked against DATA-001 before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.ptycho.convert import require_contract
from trainset.ptycho.sidecar import common_fields, sidecar_path_for, write_npz_with_sidecar
from trainset.store import sha256_file

# Whole pixels of object guess kept free on every side of the scanned area.
MARGIN_PX = 1
GENERATOR_SCRIPT = "trainset ptycho import (trainset.ptycho.instrument)"
NORMALISATION_RULE = (
    "amplitude *= sqrt((H*W/4) / mean_i(sum_hw amplitude_i**2)): PtychoPINN's normalize_data "
    "(ptycho/raw_data.py, ptycho/loader.py), whose (N/2)**2 is H*W/4 for N x N patterns"
)
VALIDATION_NOTES = "Compliant with DATA-001, checked by trainset.ptycho.DATA001 before writing"


@dataclass
class Measurement:
    """What a format reader found, before the common conversion.

    ``intensity`` (N, H, W) float32: measured intensity (counts), zero frequency at the centre,
    bad pixels 0, no negative values. ``corner_rows``/``corner_cols`` (N,) float64: position of
    the probe's (0, 0) pixel in object pixels (any origin). ``probe`` (H, W) complex or None.
    ``good_pixels`` (H, W) bool or None (no mask in the file). ``notes``: what the reader did,
    one line per step; ``record``: format facts for the sidecar (geometry, where positions
    came from).
    """

    intensity: np.ndarray
    corner_rows: np.ndarray
    corner_cols: np.ndarray
    probe: np.ndarray | None
    probe_note: str
    good_pixels: np.ndarray | None
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class IntensityCleaner:
    """Turn blocks of raw detector values into clean float32 intensities, counting what changed.

    Non-finite values are refused (InputError naming the pattern); negative values (dark
    subtraction, detector error codes such as Pilatus' -1/-2) become 0; for integer data of 16
    bits or more, the dtype's largest value (the overflow/invalid code of counting detectors)
    becomes 0; pixels the mask flags bad become 0.
    """

    file: Path
    key: str
    good_pixels: np.ndarray | None
    negative: int = 0
    codes: int = 0

    def clean(self, block: np.ndarray, first: int) -> np.ndarray:
        """(n, H, W) float32 intensities of a raw block whose first pattern has index ``first``."""
        code = None
        if block.dtype.kind in "iu" and block.dtype.itemsize >= 2:
            code = np.iinfo(block.dtype).max
        out = block.astype(np.float32)
        bad = ~np.isfinite(out)
        if bad.any():
            pattern = first + int(np.argwhere(bad)[0][0])
            raise InputError(
                "intensities must be finite",
                file=self.file,
                key=self.key,
                expected="finite values",
                found=f"{int(bad.sum())} NaN or infinite value(s), the first in pattern {pattern}",
            )
        if code is not None:
            at_code = block == code
            self.codes += int(at_code.sum())
            out[at_code] = 0.0
        negative = out < 0
        self.negative += int(negative.sum())
        out[negative] = 0.0
        if self.good_pixels is not None:
            out[:, ~self.good_pixels] = 0.0
        return out

    def notes(self, dtype: np.dtype[Any]) -> list[str]:
        """One line per kind of value changed (none when nothing changed)."""
        lines = []
        if self.negative:
            lines.append(f"{self.key}: {self.negative} negative value(s) set to 0")
        if self.codes:
            code = np.iinfo(dtype).max
            lines.append(
                f"{self.key}: {self.codes} value(s) at the {dtype.name} maximum {code} "
                "(overflow/invalid code) set to 0"
            )
        if self.good_pixels is not None:
            lines.append(
                f"{self.key}: {int((~self.good_pixels).sum())} pixel(s) flagged bad by the mask "
                "set to 0 in every pattern"
            )
        return lines


@dataclass(frozen=True)
class ImportResult:
    """What :func:`write_import` wrote."""

    output: Path
    sidecar: Path
    sha256: str
    n_scan: int
    pattern: tuple[int, int]
    scale: float
    transformations: tuple[str, ...]


def normalisation_scale(intensity: np.ndarray) -> tuple[float, float]:
    """(scale, mean total intensity) of PtychoPINN's ``normalize_data`` for (N, H, W)
    intensities (squared amplitudes): ``scale = sqrt((H*W/4) / mean_i(sum_hw intensity_i))``,
    the factor that makes the mean total intensity of a pattern ``H*W/4``."""
    h, w = intensity.shape[-2:]
    total = float(np.mean(np.sum(intensity, axis=(-2, -1), dtype=np.float64)))
    return math.sqrt(h * w / 4.0 / total), total


def probe_guess(amplitude: np.ndarray) -> np.ndarray:
    """(H, W) complex64: inverse unitary FFT of the root-mean-square amplitude pattern (zero
    frequency at the centre), zero phase, centred: a probe whose far field alone reproduces
    the mean measured intensity."""
    rms = np.sqrt(np.mean(np.square(amplitude, dtype=np.float64), axis=0))
    field_ = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(rms), norm="ortho"))
    return field_.astype(np.complex64)


def centre_offset(corners: np.ndarray, size: int) -> int:
    """Whole-pixel offset that turns probe corners into patch centres with the scan starting
    :data:`MARGIN_PX` pixels inside the object: ``MARGIN_PX + size // 2 - floor(min)``."""
    return MARGIN_PX + size // 2 - int(np.floor(corners.min()))


def object_extent(centres: np.ndarray, size: int) -> int:
    """Object pixels along one axis that hold every patch (bilinear samples included) plus
    :data:`MARGIN_PX` on the far side."""
    return int(np.floor(centres.max())) + (size - size // 2) + 1 + MARGIN_PX


def write_import(
    measurement: Measurement,
    source: Path,
    output: Path,
    *,
    source_format: str,
    metadata_path: Path | None = None,
) -> ImportResult:
    """Convert a :class:`Measurement` to canonical DATA-001 arrays and write them with a sidecar
    (see the module docstring); ``measurement.intensity`` becomes the amplitudes in place.
    Raises InputError, writing nothing, when the result would break DATA-001 (every broken rule
    with its measured value is named)."""
    sidecar_path = sidecar_path_for(source, output, metadata_path)
    notes = list(measurement.notes)
    if not np.any(measurement.intensity):
        raise InputError(
            "every pattern is zero",
            file=source,
            key="diffraction",
            expected="some measured intensity",
            found=f"{measurement.intensity.shape[0]} patterns of zeros",
        )
    scale, total = normalisation_scale(measurement.intensity)
    amplitude = np.sqrt(measurement.intensity, out=measurement.intensity)
    notes.append("diffraction: amplitude = sqrt(intensity), float32")
    amplitude *= np.float32(scale)
    notes.append(
        f"diffraction: normalised (x {scale:.6g}; mean total intensity {total:.6g} → "
        f"{amplitude.shape[1] * amplitude.shape[2] / 4:g})"
    )
    n, h, w = amplitude.shape
    if measurement.probe is not None:
        probe = (measurement.probe * scale).astype(np.complex64)
        probe_note = f"{measurement.probe_note}, times the normalisation factor {scale:.6g}"
    else:
        probe = probe_guess(amplitude)
        probe_note = (
            "no probe in the file: inverse unitary FFT of the root-mean-square amplitude "
            "pattern, zero phase (SHARP-style guess)"
        )
    notes.append(f"probeGuess: {probe_note}")
    y_offset = centre_offset(measurement.corner_rows, h)
    x_offset = centre_offset(measurement.corner_cols, w)
    ycoords = measurement.corner_rows + float(y_offset)
    xcoords = measurement.corner_cols + float(x_offset)
    notes.append(
        f"coordinates: patch centres = probe corner + ({h // 2}, {w // 2}), shifted to start "
        f"{MARGIN_PX} px inside the object: ycoords = row + {y_offset}, xcoords = col + {x_offset}"
    )
    object_shape = (object_extent(ycoords, h), object_extent(xcoords, w))
    notes.append(f"objectGuess: none in the file; ones {object_shape} (full transmission)")
    arrays: dict[str, np.ndarray] = {
        "diffraction": amplitude,
        "objectGuess": np.ones(object_shape, dtype=np.complex64),
        "probeGuess": probe,
        "xcoords": np.ascontiguousarray(xcoords, dtype=np.float64),
        "ycoords": np.ascontiguousarray(ycoords, dtype=np.float64),
    }
    if measurement.good_pixels is not None:
        arrays["mask"] = measurement.good_pixels.astype(np.uint8)
        notes.append("mask: (H, W) uint8, 1 = good pixel, 0 = flagged by the file (set to 0)")
    require_contract(arrays, source)
    head, provenance = common_fields(GENERATOR_SCRIPT, source)
    source_sha = sha256_file(source)

    def sidecar(checksum: str) -> dict[str, Any]:
        return {
            **head,
            "source_format": source_format,
            "source_sha256": source_sha,
            "positions": n,
            "transformations": notes,
            "normalisation": {
                "rule": NORMALISATION_RULE,
                "scale": scale,
                "mean_total_intensity": total,
            },
            "coordinates": {
                "ycoords": f"probe-corner row + {y_offset}",
                "xcoords": f"probe-corner column + {x_offset}",
                "y_offset_px": y_offset,
                "x_offset_px": x_offset,
            },
            **measurement.record,
            "sha256_checksum": checksum,
            "validation_notes": VALIDATION_NOTES,
            "provenance": provenance,
        }

    checksum = write_npz_with_sidecar(output, arrays, sidecar_path, sidecar)
    return ImportResult(output, sidecar_path, checksum, n, (h, w), scale, tuple(notes))
