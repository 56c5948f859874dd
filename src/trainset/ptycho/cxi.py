"""Read a CXI (HDF5) ptychography file, lazily: patterns are read a block at a time.

Entries used (CXI format 1.6, cxidb.org; where several places are allowed, the first present is
taken, in the order cdtools reads them):

- patterns: ``entry_1/data_1/data`` or ``entry_1/instrument_1/detector_1/data`` (N, H, W);
- sample translations: ``entry_1/data_1/translation``, ``entry_1/sample_1/geometry_1/translation``
  or ``entry_1/instrument_1/detector_1/translation`` (N, 3), metres;
- ``entry_1/instrument_1/detector_1/distance`` (m), ``x_pixel_size``/``y_pixel_size`` (m) or
  ``basis_vectors`` (3, 2) (m per pixel step along the detector's row and column axes);
- ``entry_1/instrument_1/source_1/energy`` (J), else ``wavelength`` (m);
- optional: ``entry_1/instrument_1/detector_1/mask`` (any bit set = bad pixel, except exactly
  0x1000, "signal above background"), ``entry_1/instrument_1/source_1/illumination`` (probe).

Positions: CXI translations move the sample, so the probe moves by -translation on it. The
object pixel basis is the far-field one, ``lambda * z * pinv(detector_basis * diag(H, W))^T``
(as cdtools' ``exit_wave_geometry``), or the detector's directions with a given pixel size
(``object_pixel_m``, for near-field or magnified geometries, where the far-field relation does
not hold). ``(row, col) = pinv(object_basis) @ (-translation)``: the probe-corner position.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.pipeline.progress import Progress
from trainset.ptycho.instrument import IntensityCleaner, Measurement
from trainset.ptycho.source import HDF5_SIGNATURE

DATA_PATHS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
TRANSLATION_PATHS = (
    "entry_1/data_1/translation",
    "entry_1/sample_1/geometry_1/translation",
    "entry_1/instrument_1/detector_1/translation",
)
DETECTOR = "entry_1/instrument_1/detector_1"
SOURCE = "entry_1/instrument_1/source_1"
# CXI mask bit meaning "signal above background": the only set bit that marks a good pixel.
MASK_SIGNAL_BIT = 0x00001000
# Planck constant (J s) times the speed of light (m/s), exact SI values: wavelength = HC / E.
HC_J_M = 6.62607015e-34 * 299792458.0
# Patterns read from the file at once (bounded memory, whatever the file's size).
BATCH = 64


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise InputError(
            "h5py is required to read CXI files; install it with pip install 'trainset[ptycho]'"
        ) from exc
    return h5py


def _open(p: Path) -> Any:
    if not p.is_file():
        raise InputError(
            "file not found" if not p.exists() else "not a regular file",
            file=p,
            expected="a CXI (HDF5) file",
            found="nothing" if not p.exists() else "a directory",
        )
    with open(p, "rb") as fh:
        head = fh.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE:
        raise InputError(
            "not an HDF5 file",
            file=p,
            expected="a CXI (HDF5) file",
            found=f"{p.stat().st_size} bytes without the HDF5 signature",
        )
    h5py = _h5py()
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"unreadable HDF5 file: {exc}", file=p) from exc


def _dataset(f: Any, p: Path, paths: tuple[str, ...], what: str) -> Any:
    h5py = _h5py()
    for path in paths:
        obj = f.get(path)
        if isinstance(obj, h5py.Dataset):
            return obj
    parent = paths[0].rsplit("/", 1)[0]
    group = f.get(parent)
    found = (
        f"entries under {parent}: {', '.join(sorted(group)) or 'none'}"
        if isinstance(group, h5py.Group)
        else f"no group {parent}"
    )
    raise InputError(
        f"required CXI entry missing ({what})",
        file=p,
        key=" or ".join(paths),
        expected="an HDF5 dataset",
        found=found,
    )


def _positive_scalar(f: Any, p: Path, path: str, what: str) -> float:
    ds = _dataset(f, p, (path,), what)
    try:
        value = float(np.asarray(ds[()]).reshape(()))
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{what} must be one number", file=p, key=path, expected="a scalar", found=ds.shape
        ) from exc
    if not (np.isfinite(value) and value > 0):
        raise InputError(f"{what} must be positive", file=p, key=path, expected="> 0", found=value)
    return value


def _wavelength(f: Any, p: Path) -> tuple[float, dict[str, Any]]:
    if f"{SOURCE}/energy" in f:
        energy = _positive_scalar(f, p, f"{SOURCE}/energy", "source energy (J)")
        return HC_J_M / energy, {"energy_J": energy, "wavelength_from": f"{SOURCE}/energy"}
    wavelength = _positive_scalar(f, p, f"{SOURCE}/wavelength", "source energy or wavelength")
    return wavelength, {"wavelength_from": f"{SOURCE}/wavelength"}


def _detector_basis(f: Any, p: Path) -> tuple[np.ndarray, str]:
    """(3, 2) metres per pixel step along the detector's row and column axes."""
    path = f"{DETECTOR}/basis_vectors"
    if path in f:
        basis = np.asarray(_dataset(f, p, (path,), "detector basis")[()], dtype=np.float64)
        if basis.shape == (2, 3):
            basis = basis.T
        if basis.shape != (3, 2) or not np.all(np.isfinite(basis)):
            raise InputError(
                "detector basis must be (3, 2) finite",
                file=p,
                key=path,
                expected="(3, 2)",
                found=f"shape {basis.shape}",
            )
        return basis, path
    names = [f"{DETECTOR}/x_pixel_size", f"{DETECTOR}/y_pixel_size"]
    present = [n for n in names if n in f]
    if not present:
        _dataset(f, p, (path, *names), "detector pixel size")
    sizes = {n: _positive_scalar(f, p, n, "detector pixel size (m)") for n in present}
    x = sizes.get(names[0], sizes.get(names[1]))
    y = sizes.get(names[1], x)
    assert x is not None and y is not None
    # cdtools' default when only pixel sizes are given: rows along -y, columns along -x.
    return np.array([[0.0, -x], [-y, 0.0], [0.0, 0.0]]), " and ".join(present)


def _good_pixels(f: Any, p: Path, shape: tuple[int, int]) -> np.ndarray | None:
    path = f"{DETECTOR}/mask"
    if path not in f:
        return None
    mask = np.asarray(_dataset(f, p, (path,), "mask")[()])
    if mask.shape != shape or mask.dtype.kind not in "iub":
        raise InputError(
            "mask does not match the patterns",
            file=p,
            key=path,
            expected=f"integer {shape}",
            found=f"{mask.dtype.name} {mask.shape}",
        )
    bits = mask.astype(np.uint64)
    return (bits == 0) | (bits == MASK_SIGNAL_BIT)


def object_basis(
    detector_basis: np.ndarray,
    shape: tuple[int, int],
    wavelength_m: float,
    distance_m: float,
    object_pixel_m: float | None = None,
) -> np.ndarray:
    """(3, 2) metres per object-pixel step along rows and columns: the far-field basis
    ``lambda z pinv(detector_basis diag(H, W))^T``, or its directions scaled to
    ``object_pixel_m``."""
    far = wavelength_m * distance_m * np.linalg.pinv(detector_basis * np.asarray(shape)).T
    if object_pixel_m is None:
        return far
    return far / np.linalg.norm(far, axis=0) * object_pixel_m


def read_cxi(
    path: str | os.PathLike[str],
    *,
    object_pixel_m: float | None = None,
    progress: bool = False,
) -> Measurement:
    """Read a CXI file into a :class:`Measurement` (see the module docstring), never loading
    the pattern stack at once; bad input raises InputError naming the HDF5 path."""
    p = Path(path)
    with _open(p) as f:
        data = _dataset(f, p, DATA_PATHS, "diffraction patterns")
        if len(data.shape) != 3 or data.dtype.kind not in "fiu":
            raise InputError(
                "patterns must be a real (N, H, W) stack",
                file=p,
                key=data.name.lstrip("/"),
                expected="(N, H, W) real",
                found=f"{data.dtype} {data.shape}",
            )
        n, h, w = (int(s) for s in data.shape)
        trans_ds = _dataset(f, p, TRANSLATION_PATHS, "sample translations")
        translation = np.asarray(trans_ds[()], dtype=np.float64)
        trans_key = trans_ds.name.lstrip("/")
        if translation.shape != (n, 3) or not np.all(np.isfinite(translation)):
            raise InputError(
                "translations do not match the patterns",
                file=p,
                key=trans_key,
                expected=f"finite ({n}, 3) metres, one per pattern",
                found=f"shape {translation.shape}",
            )
        distance = _positive_scalar(f, p, f"{DETECTOR}/distance", "detector distance (m)")
        wavelength, source_record = _wavelength(f, p)
        det_basis, basis_from = _detector_basis(f, p)
        good = _good_pixels(f, p, (h, w))
        probe = None
        probe_key = f"{SOURCE}/illumination"
        if probe_key in f:
            probe = np.asarray(_dataset(f, p, (probe_key,), "probe")[()])
            if probe.shape != (h, w) or probe.dtype.kind not in "fc":
                raise InputError(
                    "probe does not match the patterns",
                    file=p,
                    key=probe_key,
                    expected=f"complex ({h}, {w})",
                    found=f"{probe.dtype} {probe.shape}",
                )
        data_key = data.name.lstrip("/")
        cleaner = IntensityCleaner(p, data_key, good)
        intensity = np.empty((n, h, w), dtype=np.float32)
        with Progress(n, "read CXI", stream=None if progress else io.StringIO()) as bar:
            for start in range(0, n, BATCH):
                stop = min(start + BATCH, n)
                intensity[start:stop] = cleaner.clean(data[start:stop], start)
                bar.update(stop - start)
        raw_dtype = data.dtype
    basis = object_basis(det_basis, (h, w), wavelength, distance, object_pixel_m)
    pixels = (-translation) @ np.linalg.pinv(basis).T
    notes = [
        f"{data_key}: {raw_dtype} → float32, read {BATCH} patterns at a time",
        *cleaner.notes(raw_dtype),
        f"coordinates: (row, col) = pinv(object_basis) @ (-{trans_key}) (probe corner, pixels)",
    ]
    record = {
        "geometry": {
            **source_record,
            "wavelength_m": wavelength,
            "distance_m": distance,
            "detector_basis_m": det_basis.tolist(),
            "detector_basis_from": basis_from,
            "object_basis_m": basis.tolist(),
            "object_pixel_m": [float(v) for v in np.linalg.norm(basis, axis=0)],
            "object_pixel_from": "given (--object-pixel-m)"
            if object_pixel_m is not None
            else "far field: lambda * distance / (pattern size * detector pixel)",
        },
        "positions_from": {
            "key": trans_key,
            "rule": "(row, col) = pinv(object_basis_m) @ (-translation); translation = "
            "-(object_basis_m @ (ycoords - y_offset_px, xcoords - x_offset_px))",
        },
        "mask": {"key": f"{DETECTOR}/mask", "bad_pixels": int((~good).sum())}
        if good is not None
        else None,
    }
    return Measurement(
        intensity=intensity,
        corner_rows=np.ascontiguousarray(pixels[:, 0]),
        corner_cols=np.ascontiguousarray(pixels[:, 1]),
        probe=probe,
        probe_note=f"'{probe_key}'" if probe is not None else "",
        good_pixels=good,
        notes=notes,
        record=record,
    )
