"""SAR preprocessing: units -> intensity -> dB -> clip -> [0, 1], and back.

Pure functions on arrays (no IO). Names and defaults follow the user's plan
(``handle_invalid_values``, ``from_db``, ``compute_clip_bounds``, ``preprocess_sar_complete``).
Units are explicit: ``intensity`` (power, the plan's default), ``amplitude`` (e.g. GRD DN,
squared to intensity) or ``db`` (10*log10 of intensity).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from trainset.errors import InputError

# The plan's replacement for pixels <= 0, NaN and Inf (intensity); it becomes -100 dB.
NOISE_FLOOR = 1e-10
# The plan's defaults for compute_clip_bounds.
DEFAULT_LOW_PCT = 1.0
DEFAULT_HIGH_PCT = 99.0
DEFAULT_FIXED_VMIN_DB = -25.0
DEFAULT_FIXED_VMAX_DB = 5.0
DEFAULT_SIGMA_K = 3.0

Units = Literal["intensity", "amplitude", "db"]
UNITS: tuple[str, ...] = ("intensity", "amplitude", "db")
CLIP_METHODS: tuple[str, ...] = ("percentile", "fixed", "sigma")


def check_units(units: str) -> str:
    """Return ``units`` if it is one of :data:`UNITS`, else raise :class:`InputError`."""
    if units not in UNITS:
        raise InputError("unknown SAR units", key="units", expected="|".join(UNITS), found=units)
    return units


def handle_invalid_values(image: np.ndarray, noise_floor: float = NOISE_FLOOR) -> np.ndarray:
    """Copy of an intensity image with pixels <= 0, NaN and +/-Inf replaced by ``noise_floor``.

    Any shape; the dtype is kept for floating input, integer input becomes float64.
    """
    out = np.array(image, dtype=np.result_type(np.asarray(image).dtype, np.float32), copy=True)
    bad = ~np.isfinite(out) | (out <= 0)
    out[bad] = noise_floor
    return out


def to_db(intensity: np.ndarray) -> np.ndarray:
    """Intensity (power, > 0) -> dB: ``10 * log10(intensity)``. Same shape, float64."""
    return 10.0 * np.log10(np.asarray(intensity, dtype=np.float64))


def from_db(db: np.ndarray | float) -> Any:
    """dB -> intensity (power): ``10 ** (db / 10)``. Same shape."""
    return 10 ** (np.asarray(db, dtype=np.float64) / 10)


def to_intensity(image: np.ndarray, units: str) -> np.ndarray:
    """Convert an image in ``units`` to a new intensity array (float64, same shape).

    ``amplitude`` is squared, ``db`` goes through :func:`from_db`, ``intensity`` is unchanged.
    """
    check_units(units)
    arr = np.array(image, dtype=np.float64, copy=True)
    if units == "amplitude":
        return np.square(arr)
    if units == "db":
        return np.asarray(from_db(arr))
    return arr


def valid_pixels(image: np.ndarray, units: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean (same shape) of pixels that carry a measurement.

    Invalid: non-finite values, values <= 0 for ``intensity``/``amplitude`` (the plan's rule),
    and pixels where ``mask`` (nodata / GDAL mask; truthy = valid) is false.
    """
    check_units(units)
    arr = np.asarray(image)
    valid = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, dtype=bool)
    if units != "db":
        valid &= arr > 0
    if mask is not None:
        valid &= np.asarray(mask).astype(bool)
    return valid


def compute_clip_bounds(
    images: np.ndarray | Sequence[np.ndarray], method: str = "percentile", **kwargs: float
) -> tuple[float, float]:
    """Global clip bounds (vmin, vmax) in dB from dB image(s).

    ``percentile``: ``low_pct`` (default 1) and ``high_pct`` (default 99) percentiles of all
    finite pixels pooled; ``fixed``: ``vmin`` (default -25) and ``vmax`` (default 5);
    ``sigma``: mean -/+ ``k`` (default 3) standard deviations of the finite pixels.
    """
    if method == "fixed":
        vmin = float(kwargs.get("vmin", DEFAULT_FIXED_VMIN_DB))
        vmax = float(kwargs.get("vmax", DEFAULT_FIXED_VMAX_DB))
        return check_clip_bounds(vmin, vmax, method)
    if method not in CLIP_METHODS:
        raise InputError(
            "unknown clip method", key="method", expected="|".join(CLIP_METHODS), found=method
        )
    parts = [images] if isinstance(images, np.ndarray) else list(images)
    values = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise InputError("no finite pixel to compute clip bounds from", key="images")
    if method == "percentile":
        low = float(kwargs.get("low_pct", DEFAULT_LOW_PCT))
        high = float(kwargs.get("high_pct", DEFAULT_HIGH_PCT))
        vmin, vmax = (float(v) for v in np.percentile(values, [low, high]))
    else:
        k = float(kwargs.get("k", DEFAULT_SIGMA_K))
        mean, std = float(values.mean()), float(values.std())
        vmin, vmax = mean - k * std, mean + k * std
    return check_clip_bounds(vmin, vmax, method)


def check_clip_bounds(vmin: float, vmax: float, method: str) -> tuple[float, float]:
    """Return (vmin, vmax) in dB if finite with vmin < vmax, else raise :class:`InputError`."""
    if not (np.isfinite(vmin) and np.isfinite(vmax) and vmax > vmin):
        raise InputError(
            f"clip bounds from '{method}' are degenerate",
            key="clip",
            expected="finite vmin < vmax",
            found=f"vmin={vmin}, vmax={vmax}",
        )
    return vmin, vmax


def normalize(db: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """dB -> [0, 1]: ``clip((db - vmin) / (vmax - vmin), 0, 1)`` as float32, same shape."""
    scaled = (np.asarray(db, dtype=np.float64) - vmin) / (vmax - vmin)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def denormalize(normalized: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """[0, 1] -> dB: ``normalized * (vmax - vmin) + vmin`` (float64, same shape).

    Exact inverse of :func:`normalize` for pixels that were not clipped (up to float32 rounding).
    """
    return np.asarray(normalized, dtype=np.float64) * (vmax - vmin) + vmin


def preprocess_sar_complete(
    image: np.ndarray,
    vmin: float,
    vmax: float,
    units: str = "intensity",
    *,
    mask: np.ndarray | None = None,
    noise_floor: float = NOISE_FLOOR,
) -> tuple[np.ndarray, np.ndarray]:
    """Image in ``units`` -> (normalized float32 in [0, 1], valid_mask bool), both image-shaped.

    Invalid pixels (non-finite, <= 0 for intensity/amplitude, false in ``mask``) are set to 0
    and are false in ``valid_mask``; valid pixels go intensity -> dB -> clip -> [0, 1].
    """
    valid = valid_pixels(image, units, mask)
    intensity = to_intensity(image, units)
    intensity[~valid] = noise_floor
    normalized = normalize(to_db(handle_invalid_values(intensity, noise_floor)), vmin, vmax)
    normalized[~valid] = 0.0
    return normalized, valid
