"""Read a ptychography NPZ (legacy or canonical) into canonical arrays, refusing bad input.

Everything is checked before anything is written: a missing or non-zip file, pickled (object)
arrays, missing keys, wrong dimensionality, a coordinate count that fits neither axis, NaN or
negative diffraction. Each refusal is an :class:`InputError` naming file, key, expected, found.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainset.errors import InputError
from trainset.ptycho.layout import Layout, detect_layout, to_canonical
from trainset.store import MAX_ARRAY_BYTES, npz_headers, read_npz_array
from trainset.store.codecs import ArrayHeader

# The first bytes of every HDF5 file (CXI files are HDF5).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
REQUIRED_KEYS = ("diffraction", "objectGuess", "probeGuess", "xcoords", "ycoords")
# Older name of ``diffraction`` (PtychoPINN's RawData reads only this one).
DIFFRACTION_ALIAS = "diff3d"
OPTIONAL_COORD_KEYS = ("xcoords_start", "ycoords_start")
# Output order of the canonical keys (the plan's schema order, then the optional extras).
CANONICAL_ORDER = (
    "diffraction",
    "objectGuess",
    "probeGuess",
    "xcoords",
    "ycoords",
    "xcoords_start",
    "ycoords_start",
    "Y",
    "scan_index",
)


@dataclass
class CanonicalData:
    """A whole source file in canonical form.

    ``arrays`` holds the DATA-001 keys, (N, H, W) float32 diffraction, complex64 probe/object/Y,
    float64 coordinates; ``extras`` holds keys trainset does not know, unchanged;
    ``transformations`` says what was done, one line per change.
    """

    path: Path
    layout: Layout
    n_scan: int
    arrays: dict[str, np.ndarray]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    transformations: list[str] = field(default_factory=list)


def require_npz_file(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if it is an existing zip (NPZ) file, else raise InputError."""
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", file=p, expected="an existing NPZ file", found="nothing")
    if not p.is_file():
        raise InputError("not a regular file", file=p, expected="an NPZ file", found="a directory")
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as fh:
            hdf5 = fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
        raise InputError(
            "not an NPZ file"
            + ("; a CXI file is read by `trainset ptycho import --format cxi`" if hdf5 else ""),
            file=p,
            expected="an NPZ (zip) archive",
            found="an HDF5 file" if hdf5 else f"{p.stat().st_size} bytes without a zip directory",
        )
    return p


def source_headers(
    path: str | os.PathLike[str], *, max_bytes: int | None = MAX_ARRAY_BYTES
) -> dict[str, ArrayHeader]:
    """Headers of every array in an NPZ; refuse a missing file, a non-zip, pickled arrays, and
    members whose header disagrees with the zip or claims more than ``max_bytes``."""
    p = require_npz_file(path)
    headers = npz_headers(p, max_bytes=max_bytes)
    for key, header in headers.items():
        if header.dtype.hasobject:
            raise InputError(
                "object array needs pickle to load; refused",
                file=p,
                key=key,
                expected="numeric dtype",
                found="object (pickled) array",
            )
    return headers


def _require_kind(p: Path, key: str, header: ArrayHeader, kinds: str, text: str) -> None:
    if header.dtype.kind not in kinds:
        raise InputError("wrong dtype", file=p, key=key, expected=text, found=header.dtype.name)


def _require_ndim(p: Path, key: str, header: ArrayHeader, ndim: int, text: str) -> None:
    if len(header.shape) != ndim:
        raise InputError(
            f"{key} must be {ndim}-D",
            file=p,
            key=key,
            expected=f"{ndim}-D {text}",
            found=f"{len(header.shape)}-D shape {header.shape}",
        )


def _cast(name: str, arr: np.ndarray, dtype: str, notes: list[str]) -> np.ndarray:
    if arr.dtype != np.dtype(dtype):
        notes.append(f"{name}: dtype {arr.dtype.name} → {dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_diffraction_values(p: Path, key: str, diff: np.ndarray) -> None:
    nan = int(np.isnan(diff).sum())
    inf = int(np.isinf(diff).sum())
    if nan or inf:
        raise InputError(
            "diffraction amplitudes must be finite",
            file=p,
            key=key,
            expected="finite values",
            found=f"{nan} NaN and {inf} infinite value(s)",
        )
    negative = int((diff < 0).sum())
    if negative:
        raise InputError(
            "diffraction amplitudes must be non-negative",
            file=p,
            key=key,
            expected="values >= 0",
            found=f"{negative} negative value(s), min {float(diff.min()):.6g}",
        )


def _check_finite_coords(p: Path, key: str, coords: np.ndarray) -> None:
    bad = int((~np.isfinite(coords)).sum())
    if bad:
        raise InputError(
            "coordinates must be finite",
            file=p,
            key=key,
            expected="finite values",
            found=f"{bad} NaN or infinite value(s)",
        )


def read_source(
    path: str | os.PathLike[str],
    *,
    layout: str | None = None,
    max_bytes: int | None = MAX_ARRAY_BYTES,
) -> CanonicalData:
    """Read a legacy (H, W, N) or canonical (N, H, W) ptychography NPZ into canonical arrays.

    ``layout`` ('nhw' or 'hwn') overrides detection, which is needed only when the first and
    last axis of ``diffraction`` both have N entries. Arrays over ``max_bytes`` are refused
    (None: no limit). Raises InputError on bad input.
    """
    p = Path(path)
    headers = source_headers(p, max_bytes=max_bytes)

    def load(key: str) -> np.ndarray:
        return read_npz_array(p, key, max_bytes=max_bytes)

    keys = list(headers)
    notes: list[str] = []

    diff_key = "diffraction" if "diffraction" in headers else DIFFRACTION_ALIAS
    missing = [k for k in REQUIRED_KEYS if (diff_key if k == "diffraction" else k) not in headers]
    if missing:
        raise InputError(
            "required array(s) missing",
            file=p,
            key=", ".join(missing),
            expected="keys " + ", ".join(REQUIRED_KEYS),
            found="keys " + ", ".join(sorted(keys)),
        )

    for key in ("xcoords", "ycoords", *OPTIONAL_COORD_KEYS):
        if key in headers:
            _require_ndim(p, key, headers[key], 1, "(N,)")
            _require_kind(p, key, headers[key], "fiu", "real numbers")
    n_scan = headers["xcoords"].shape[0]
    for key in ("ycoords", *OPTIONAL_COORD_KEYS):
        if key in headers and headers[key].shape[0] != n_scan:
            raise InputError(
                "coordinate arrays differ in length",
                file=p,
                key=key,
                expected=f"length {n_scan} (as xcoords)",
                found=f"length {headers[key].shape[0]}",
            )
    _require_ndim(p, diff_key, headers[diff_key], 3, "(N,H,W) or (H,W,N)")
    _require_kind(p, diff_key, headers[diff_key], "fiu", "real amplitudes (float)")
    for key in ("objectGuess", "probeGuess"):
        _require_ndim(p, key, headers[key], 2, "(rows, cols)")
        _require_kind(p, key, headers[key], "fciu", "complex (or real) numbers")
    found_layout = detect_layout(
        headers[diff_key].shape, n_scan, override=layout, file=p, key=diff_key
    )
    y_layout = found_layout
    if "Y" in headers:
        _require_ndim(p, "Y", headers["Y"], 3, "(N,H,W) or (H,W,N)")
        y_layout = detect_layout(headers["Y"].shape, n_scan, override=found_layout, file=p, key="Y")
    if "scan_index" in headers:
        header = headers["scan_index"]
        _require_ndim(p, "scan_index", header, 1, "(N,)")
        _require_kind(p, "scan_index", header, "iu", "integer")
        if header.shape[0] != n_scan:
            raise InputError(
                "scan_index length differs from the coordinate count",
                file=p,
                key="scan_index",
                expected=f"length {n_scan}",
                found=f"length {header.shape[0]}",
            )

    raw_diff = load(diff_key)
    _check_diffraction_values(p, diff_key, raw_diff)
    if diff_key == DIFFRACTION_ALIAS:
        notes.append(f"diffraction: read from legacy key '{DIFFRACTION_ALIAS}'")
    if found_layout == "hwn":
        notes.append("diffraction: transpose (H,W,N) → (N,H,W)")
    if "Y" in headers and y_layout == "hwn":
        notes.append("Y: transpose (H,W,N) → (N,H,W)")
    diffraction = _cast("diffraction", to_canonical(raw_diff, found_layout), "float32", notes)
    del raw_diff

    arrays: dict[str, np.ndarray] = {"diffraction": diffraction}
    for key in ("objectGuess", "probeGuess"):
        arrays[key] = _cast(key, load(key), "complex64", notes)
    for key in ("xcoords", "ycoords", *OPTIONAL_COORD_KEYS):
        if key in headers:
            coords = load(key)
            _check_finite_coords(p, key, coords)
            arrays[key] = _cast(key, coords, "float64", notes)

    if "Y" in headers:
        arrays["Y"] = _cast("Y", to_canonical(load("Y"), y_layout), "complex64", notes)
    if "scan_index" in headers:
        arrays["scan_index"] = np.ascontiguousarray(load("scan_index"))

    if diff_key == "diffraction" and DIFFRACTION_ALIAS in headers:
        notes.append(f"{DIFFRACTION_ALIAS}: dropped (duplicate of diffraction)")
    known = {*CANONICAL_ORDER, DIFFRACTION_ALIAS}
    extras = {k: load(k) for k in keys if k not in known}
    ordered = {k: arrays[k] for k in CANONICAL_ORDER if k in arrays}
    return CanonicalData(p, found_layout, n_scan, ordered, extras, notes)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when two paths name the same file (resolved paths, or the same inode)."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:
        return False
