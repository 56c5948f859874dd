"""The DATA-001 contract of a canonical ptychography NPZ, as data.

Source: PtychoPINN ``docs/data_contracts.md`` section 1 (see ``docs/ptycho.md``). Diffraction is
amplitude (sqrt of intensity), (N, H, W) float32; probe and object are complex64; coordinates are
float64 pixel positions of length N.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainset.contracts import ArraySpec, Contract, Finite, MaxValue, MinValue, Predicate, Report
from trainset.errors import InputError
from trainset.store.codecs import MAX_ARRAY_BYTES

# DATA-001: normalised amplitude is far below this ("unnormalised" above it).
MAX_AMPLITUDE = 10.0
# DATA-001: max/mean at or above this means intensity was stored instead of amplitude.
MAX_PEAK_TO_MEAN = 100.0
# Integer dtypes accepted for the optional scan_index.
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _peak_to_mean(arr: np.ndarray) -> str | None:
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return None
    mean = float(np.mean(finite, dtype=np.float64))
    peak = float(finite.max())
    if mean <= 0.0:
        return f"mean {mean:.6g} (ratio undefined)" if peak > 0.0 else None
    ratio = peak / mean
    return f"max/mean {ratio:.6g}" if ratio >= MAX_PEAK_TO_MEAN else None


PEAK_TO_MEAN = Predicate(
    "max/mean",
    f"max/mean < {MAX_PEAK_TO_MEAN:g} (amplitude, not intensity)",
    _peak_to_mean,
)

DATA001 = Contract(
    "DATA-001",
    (
        ArraySpec(
            "diffraction",
            ("N", "H", "W"),
            ("float32",),
            rules=(Finite(), MinValue(0.0), MaxValue(MAX_AMPLITUDE), PEAK_TO_MEAN),
            aliases=("diff3d",),
            description="diffraction amplitude per scan position, (N, H, W)",
        ),
        ArraySpec("objectGuess", ("My", "Mx"), ("complex64",), description="object, (My, Mx)"),
        ArraySpec(
            "probeGuess", ("H", "W"), ("complex64",), description="probe, same (H, W) as a pattern"
        ),
        ArraySpec("xcoords", ("N",), ("float64",), rules=(Finite(),), description="x, pixels"),
        ArraySpec("ycoords", ("N",), ("float64",), rules=(Finite(),), description="y, pixels"),
        ArraySpec(
            "xcoords_start",
            ("N",),
            ("float64",),
            required=False,
            rules=(Finite(),),
            description="nominal x before position correction, pixels",
        ),
        ArraySpec(
            "ycoords_start",
            ("N",),
            ("float64",),
            required=False,
            rules=(Finite(),),
            description="nominal y before position correction, pixels",
        ),
        ArraySpec(
            "Y",
            ("N", "Hy", "Wy"),
            ("complex64",),
            required=False,
            description="ground-truth object patches for supervised training, (N, Hy, Wy)",
        ),
        ArraySpec(
            "scan_index", ("N",), INT_DTYPES, required=False, description="scan id per position"
        ),
    ),
)

# Arrays with one entry per scan position (axis 0 = N in canonical layout).
PER_SCAN_KEYS = (
    "diffraction",
    "Y",
    "xcoords",
    "ycoords",
    "xcoords_start",
    "ycoords_start",
    "scan_index",
)


def check_npz(path: str | os.PathLike[str], *, max_bytes: int | None = MAX_ARRAY_BYTES) -> Report:
    """Validate an NPZ against DATA-001; every failure is listed. Raises InputError if
    unreadable, or when a member's header disagrees with the zip's record or claims more than
    ``max_bytes`` (None: no limit)."""
    from trainset.ptycho.source import require_npz_file

    return DATA001.validate_npz(require_npz_file(path), max_bytes=max_bytes)


# Sidecar fields holding the number of scan positions of the NPZ: a fixture's subset size, or
# the positions of an imported or simulated file.
POSITION_COUNT_FIELDS = ("subset_size", "positions")


def check_sidecar(
    report: Report, npz_path: str | os.PathLike[str], sidecar_path: str | os.PathLike[str]
) -> None:
    """Add the sidecar's rules to ``report``: its ``sha256_checksum`` is the NPZ's sha256 and
    its ``subset_size`` (fixtures) or ``positions`` (imports, simulations) is the NPZ's number
    of scan positions.

    A sidecar whose checksum no longer matches says the NPZ changed after the sidecar was
    written. Raises InputError when the sidecar is not a readable JSON object.
    """
    from trainset.store import npz_headers, read_json, sha256_file

    sidecar = read_json(sidecar_path)
    if not isinstance(sidecar, dict):
        raise InputError(
            "sidecar is not a JSON object",
            file=sidecar_path,
            expected="object",
            found=type(sidecar).__name__,
        )
    report.checked.append(f"sidecar {sidecar_path}")
    recorded = sidecar.get("sha256_checksum")
    actual = sha256_file(npz_path)
    if recorded != actual:
        report.add("sidecar", "sha256_checksum is the NPZ's sha256", recorded, actual)
    coords = npz_headers(npz_path).get("xcoords")
    n_scan = coords.shape[0] if coords is not None and len(coords.shape) == 1 else None
    field = next((f for f in POSITION_COUNT_FIELDS if f in sidecar), None)
    if field is None:
        report.add(
            "sidecar",
            "records the number of scan positions",
            " or ".join(POSITION_COUNT_FIELDS),
            "neither field",
        )
    elif n_scan is not None and sidecar[field] != n_scan:
        report.add(
            "sidecar",
            f"{field} is the NPZ's number of scan positions",
            sidecar[field],
            n_scan,
        )


def check_interrupted_sidecar(report: Report, sidecar_path: str | os.PathLike[str]) -> None:
    """Report a sidecar that is missing while a temp of it lies beside its place: the write of
    the NPZ and its sidecar was interrupted (or is running). Nothing is reported when neither
    exists (a file written without a sidecar)."""
    from trainset.store import temps_of

    sidecar = Path(sidecar_path)
    if sidecar.exists():
        return
    temps = temps_of(sidecar)
    if temps:
        report.add(
            "sidecar",
            "present (its NPZ was written with one)",
            str(sidecar),
            f"missing, with the temp {temps[0].name} of an interrupted or running write: "
            "re-run the command that wrote the NPZ",
        )
