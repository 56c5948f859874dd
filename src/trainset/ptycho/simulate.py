"""Diffraction simulated from a reconstruction: object, probe and scan positions -> amplitudes.

As PtychoPINN builds its simulated sets (``ptycho/raw_data.py`` ``RawData.from_simulation``
-> ``get_image_patches``, ``ptycho/diffsim.py`` ``illuminate_and_diffract``,
``ptycho/tf_helper.py`` ``pad_and_diffract``): the object patch of the pattern's size centred on
each scan position (pixel ``H // 2`` of the patch lies on the position, sub-pixel positions by
bilinear interpolation of the real and imaginary parts, zeros outside the object), times the
probe, then the amplitude of the unitary 2-D FFT with the zero frequency at the centre:
``|fftshift(fft2(probe * patch)) / sqrt(H * W)|``. No noise is added.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.pipeline.progress import Progress
from trainset.ptycho.convert import require_contract
from trainset.ptycho.layout import LAYOUTS
from trainset.ptycho.sidecar import common_fields, sidecar_path_for, write_npz_with_sidecar
from trainset.ptycho.source import DIFFRACTION_ALIAS, source_headers
from trainset.store import MAX_ARRAY_BYTES, read_npz_array, sha256_file

RECON_KEYS = ("objectGuess", "probeGuess", "xcoords", "ycoords")
START_KEYS = ("xcoords_start", "ycoords_start")
GENERATOR_SCRIPT = "trainset ptycho simulate (trainset.ptycho.simulate)"
# Patterns computed per FFT batch (about 8 MB of complex128 for 64x64 patterns).
BATCH = 128
METHOD = (
    "amplitude |fftshift(fft2(probeGuess * patch))| / sqrt(H*W) (unitary FFT, zero frequency at "
    "the centre); patch = objectGuess sampled on the H x W pixel grid whose pixel (H//2, W//2) "
    "lies on (ycoords[i], xcoords[i]), bilinear interpolation of real and imaginary parts, zero "
    "outside the object; no noise"
)


def object_patches(
    obj: np.ndarray, ycoords: np.ndarray, xcoords: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Object patches (n, H, W) complex128 centred on each position (pixels of ``obj``).

    Patch pixel (a, b) samples the object at row ``y - H//2 + a``, column ``x - W//2 + b``,
    bilinearly interpolated (real and imaginary parts alike); samples outside the object are 0.
    """
    h, w = shape
    rows, cols = obj.shape
    pad = max(h, w) + 2
    padded = np.zeros((rows + 2 * pad, cols + 2 * pad), dtype=np.complex128)
    padded[pad : pad + rows, pad : pad + cols] = obj
    top = np.asarray(ycoords, dtype=np.float64) - h // 2
    left = np.asarray(xcoords, dtype=np.float64) - w // 2
    r0, c0 = np.floor(top), np.floor(left)
    fy = (top - r0)[:, None, None]
    fx = (left - c0)[:, None, None]
    r = (r0.astype(np.int64) + pad)[:, None, None] + np.arange(h)[None, :, None]
    c = (c0.astype(np.int64) + pad)[:, None, None] + np.arange(w)[None, None, :]
    return (
        (1 - fy) * (1 - fx) * padded[r, c]
        + (1 - fy) * fx * padded[r, c + 1]
        + fy * (1 - fx) * padded[r + 1, c]
        + fy * fx * padded[r + 1, c + 1]
    )


def far_field_amplitude(exit_waves: np.ndarray) -> np.ndarray:
    """|unitary FFT| of (n, H, W) exit waves with the zero frequency at the centre, float64."""
    field = np.fft.fftshift(np.fft.fft2(exit_waves, norm="ortho"), axes=(-2, -1))
    return np.abs(field)


def simulate_diffraction(
    obj: np.ndarray,
    probe: np.ndarray,
    xcoords: np.ndarray,
    ycoords: np.ndarray,
    *,
    progress: bool = False,
) -> np.ndarray:
    """Diffraction amplitudes (n, H, W) float64 of ``probe`` (H, W) scanning ``obj`` at the
    positions (object pixels, patch centres). See the module docstring for the model."""
    n = len(xcoords)
    out = np.empty((n, *probe.shape), dtype=np.float64)
    with Progress(n, "simulate", stream=None if progress else io.StringIO()) as bar:
        for start in range(0, n, BATCH):
            stop = min(start + BATCH, n)
            patches = object_patches(obj, ycoords[start:stop], xcoords[start:stop], probe.shape)
            out[start:stop] = far_field_amplitude(patches * probe)
            bar.update(stop - start)
    return out


@dataclass(frozen=True)
class SimulateResult:
    """What :func:`simulate` wrote."""

    output: Path
    sidecar: Path
    sha256: str
    n_scan: int
    layout: str
    peak: float


def _require(p: Path, key: str, ok: bool, expected: str, found: str, message: str) -> None:
    if not ok:
        raise InputError(message, file=p, key=key, expected=expected, found=found)


def read_reconstruction(
    path: str | os.PathLike[str], *, max_bytes: int | None = MAX_ARRAY_BYTES
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read objectGuess, probeGuess, xcoords, ycoords (and x/ycoords_start when present) from a
    reconstruction NPZ, refusing bad input; return the arrays and notes on what was ignored."""
    p = Path(path)
    headers = source_headers(p, max_bytes=max_bytes)
    missing = [k for k in RECON_KEYS if k not in headers]
    _require(
        p,
        ", ".join(missing),
        not missing,
        "keys " + ", ".join(RECON_KEYS),
        "keys " + ", ".join(sorted(headers)),
        "required array(s) missing",
    )
    for key in ("objectGuess", "probeGuess"):
        header = headers[key]
        _require(p, key, len(header.shape) == 2, "2-D", f"shape {header.shape}", f"{key} not 2-D")
        _require(
            p, key, header.dtype.kind in "fc", "complex or real", header.dtype.name, "wrong dtype"
        )
    n = headers["xcoords"].shape
    for key in ("xcoords", "ycoords", *START_KEYS):
        if key in headers:
            header = headers[key]
            _require(
                p,
                key,
                header.shape == n and len(n) == 1,
                f"shape {n}",
                str(header.shape),
                "coordinate arrays must be 1-D and of one length",
            )
            _require(
                p, key, header.dtype.kind in "fiu", "real numbers", header.dtype.name, "wrong dtype"
            )
    arrays = {
        k: read_npz_array(p, k, max_bytes=max_bytes)
        for k in (*RECON_KEYS, *START_KEYS)
        if k in headers
    }
    for key in arrays:
        bad = int(np.size(arrays[key]) - np.isfinite(arrays[key]).sum())
        _require(
            p,
            key,
            bad == 0,
            "finite values",
            f"{bad} NaN or infinite value(s)",
            "values must be finite",
        )
    rows, cols = arrays["objectGuess"].shape
    y, x = arrays["ycoords"], arrays["xcoords"]
    outside = np.flatnonzero((y < 0) | (y > rows - 1) | (x < 0) | (x > cols - 1))
    if outside.size:
        i = int(outside[0])
        raise InputError(
            f"{outside.size} scan position(s) outside the object",
            file=p,
            key="xcoords, ycoords",
            expected=f"0 <= y <= {rows - 1}, 0 <= x <= {cols - 1} (objectGuess {rows}x{cols})",
            found=f"position {i} at (y={y[i]:.6g}, x={x[i]:.6g})",
        )
    notes = [
        f"{key}: ignored (replaced by the simulation)"
        for key in ("diffraction", DIFFRACTION_ALIAS)
        if key in headers
    ]
    return arrays, notes


def simulate(
    source_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    layout: str = "hwn",
    metadata_path: str | os.PathLike[str] | None = None,
    max_bytes: int | None = MAX_ARRAY_BYTES,
    progress: bool = False,
) -> SimulateResult:
    """Simulate diffraction for a reconstruction NPZ and write it with a provenance sidecar.

    ``layout='hwn'`` writes the plan's legacy source: diffraction (H, W, N) float64,
    objectGuess/probeGuess complex128, coordinates float64. ``layout='nhw'`` writes a canonical
    DATA-001 file (checked before writing). Nothing is written on bad input (InputError).
    """
    if layout not in LAYOUTS:
        raise InputError("unknown layout", key="--layout", expected="nhw or hwn", found=layout)
    source, output = Path(source_path), Path(output_path)
    sidecar_path = sidecar_path_for(source, output, metadata_path)
    recon, notes = read_reconstruction(source, max_bytes=max_bytes)
    obj = recon["objectGuess"].astype(np.complex128)
    probe = recon["probeGuess"].astype(np.complex128)
    amplitude = simulate_diffraction(
        obj, probe, recon["xcoords"], recon["ycoords"], progress=progress
    )
    coords = {
        k: np.asarray(recon[k], dtype=np.float64)
        for k in ("xcoords", "ycoords", *START_KEYS)
        if k in recon
    }
    arrays: dict[str, np.ndarray]
    if layout == "hwn":
        arrays = {
            "diffraction": np.ascontiguousarray(np.transpose(amplitude, (1, 2, 0))),
            "objectGuess": obj,
            "probeGuess": probe,
            **coords,
        }
        notes.append("diffraction: written in legacy (H,W,N) layout, float64")
    else:
        arrays = {
            "diffraction": amplitude.astype(np.float32),
            "objectGuess": obj.astype(np.complex64),
            "probeGuess": probe.astype(np.complex64),
            **coords,
        }
        notes.append("diffraction: written in canonical (N,H,W) layout, float32 (DATA-001)")
        require_contract(arrays, source)
    head, provenance = common_fields(GENERATOR_SCRIPT, source)
    source_sha = sha256_file(source)

    def sidecar(checksum: str) -> dict[str, Any]:
        return {
            **head,
            "source_sha256": source_sha,
            "positions": len(recon["xcoords"]),
            "layout": layout,
            "method": METHOD,
            "transformations": notes,
            "sha256_checksum": checksum,
            "provenance": provenance,
        }

    # Float64 amplitudes of a real object deflate by a few percent only: store them raw.
    checksum = write_npz_with_sidecar(output, arrays, sidecar_path, sidecar, compress=False)
    return SimulateResult(
        output, sidecar_path, checksum, len(recon["xcoords"]), layout, float(amplitude.max())
    )
