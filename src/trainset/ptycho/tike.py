"""Read a tike ptychography NPZ (AdvancedPhotonSource/tike's ``data``, ``scan``, ``probe``).

tike's conventions (its ``tike.ptycho`` docstrings): ``data`` (..., N, H, W) measured intensity
with the zero frequency at the corners (not fft-shifted); ``scan`` (..., N, 2) the minimum corner
of the probe grid for each measurement, in pixels of the object, vertical coordinate first;
``probe`` (..., 1, 1, SHARED, H, W) complex. Leading axes of length 1 (one view, one probe mode)
are dropped; more than one view or probe mode is refused: DATA-001 holds one scan and one probe.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainset.errors import InputError
from trainset.ptycho.instrument import IntensityCleaner, Measurement
from trainset.ptycho.source import source_headers
from trainset.store import MAX_ARRAY_BYTES, read_npz_array
from trainset.store.codecs import ArrayHeader

DATA_KEY, SCAN_KEY, PROBE_KEY = "data", "scan", "probe"


def _squeezed_shape(
    p: Path, key: str, header: ArrayHeader, tail: int, text: str
) -> tuple[int, ...]:
    """The last ``tail`` axes of ``key``'s shape; every axis before them must have length 1."""
    shape = header.shape
    if len(shape) < tail or any(s != 1 for s in shape[:-tail]):
        raise InputError(
            f"{key} must be {text} (leading axes of length 1 allowed)",
            file=p,
            key=key,
            expected=text,
            found=f"shape {shape}",
        )
    return shape[-tail:]


def read_tike(
    path: str | os.PathLike[str], *, max_bytes: int | None = MAX_ARRAY_BYTES
) -> Measurement:
    """Read a tike NPZ into a :class:`Measurement`, refusing bad input (InputError)."""
    p = Path(path)
    headers = source_headers(p, max_bytes=max_bytes)
    missing = [k for k in (DATA_KEY, SCAN_KEY) if k not in headers]
    if missing:
        raise InputError(
            "not a tike ptychography file: required array(s) missing",
            file=p,
            key=", ".join(missing),
            expected="keys data, scan (and probe)",
            found="keys " + ", ".join(sorted(headers)),
        )
    n, h, w = _squeezed_shape(p, DATA_KEY, headers[DATA_KEY], 3, "(N, H, W) intensities")
    n_scan, two = _squeezed_shape(p, SCAN_KEY, headers[SCAN_KEY], 2, "(N, 2) positions")
    if two != 2 or n_scan != n:
        raise InputError(
            "scan positions do not match the patterns",
            file=p,
            key=SCAN_KEY,
            expected=f"shape (..., {n}, 2): one (vertical, horizontal) position per pattern",
            found=f"shape {headers[SCAN_KEY].shape} for {n} patterns",
        )
    for key, kinds, text in ((DATA_KEY, "fiu", "real"), (SCAN_KEY, "fiu", "real")):
        if headers[key].dtype.kind not in kinds:
            raise InputError(
                "wrong dtype", file=p, key=key, expected=text, found=headers[key].dtype.name
            )
    probe_header = headers.get(PROBE_KEY)
    if probe_header is not None:
        shape = _squeezed_shape(p, PROBE_KEY, probe_header, 2, f"one ({h}, {w}) probe")
        if shape != (h, w) or probe_header.dtype.kind not in "fc":
            raise InputError(
                "probe does not match the patterns",
                file=p,
                key=PROBE_KEY,
                expected=f"one complex ({h}, {w}) probe",
                found=f"shape {probe_header.shape} {probe_header.dtype.name}",
            )

    raw = read_npz_array(p, DATA_KEY, max_bytes=max_bytes).reshape(n, h, w)
    cleaner = IntensityCleaner(p, DATA_KEY, None)
    intensity = np.fft.fftshift(cleaner.clean(raw, 0), axes=(-2, -1))
    del raw
    scan = read_npz_array(p, SCAN_KEY, max_bytes=max_bytes).reshape(n, 2).astype(np.float64)
    bad = int((~np.isfinite(scan)).sum())
    if bad:
        raise InputError(
            "scan positions must be finite",
            file=p,
            key=SCAN_KEY,
            expected="finite values",
            found=f"{bad} NaN or infinite value(s)",
        )
    probe = None
    if probe_header is not None:
        probe = read_npz_array(p, PROBE_KEY, max_bytes=max_bytes).reshape(h, w)
    dtype = headers[DATA_KEY].dtype
    notes = [
        f"{DATA_KEY}: shape {headers[DATA_KEY].shape} → ({n}, {h}, {w})"
        + ("" if dtype == np.float32 else f", {dtype.name} → float32"),
        *cleaner.notes(dtype),
        f"{DATA_KEY}: fftshift, zero frequency moved from the corners to the centre",
    ]
    record = {
        "positions_from": {
            "key": SCAN_KEY,
            "rule": "scan[:, 0] is the probe-corner row (vertical), scan[:, 1] the column, "
            "in object pixels (tike)",
        }
    }
    return Measurement(
        intensity=intensity,
        corner_rows=np.ascontiguousarray(scan[:, 0]),
        corner_cols=np.ascontiguousarray(scan[:, 1]),
        probe=probe,
        probe_note=f"'{PROBE_KEY}' of shape {probe_header.shape}" if probe_header else "",
        good_pixels=None,
        notes=notes,
        record=record,
    )
