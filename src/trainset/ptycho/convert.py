"""Canonicalise a whole ptychography NPZ, and refuse results that break DATA-001."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainset.errors import InputError
from trainset.ptycho.contract import DATA001
from trainset.ptycho.source import read_source, same_file
from trainset.store import MAX_ARRAY_BYTES, atomic_write_npz, sha256_file


@dataclass(frozen=True)
class CanonicalizeResult:
    """What :func:`canonicalize` wrote."""

    output: Path
    sha256: str
    n_scan: int
    layout: str
    transformations: tuple[str, ...]
    kept_extra_keys: tuple[str, ...]


def check_output_path(source: Path, output: Path, what: str = "--output") -> None:
    """Refuse an output path that names the source file or an existing directory."""
    if output.is_dir():
        raise InputError(
            f"{what} is a directory",
            file=output,
            expected="a file path",
            found="an existing directory",
        )
    if same_file(source, output):
        raise InputError(
            f"{what} is the source file; refusing to overwrite the source",
            file=output,
            expected="an output path different from --source",
            found=str(source),
        )


def require_contract(arrays: Mapping[str, np.ndarray], source: Path) -> None:
    """Raise InputError listing every DATA-001 failure of ``arrays`` (nothing is written)."""
    report = DATA001.validate_arrays(arrays, name=str(source))
    if not report.ok:
        problems = "; ".join(str(f) for f in report.failures)
        raise InputError(
            f"result would break DATA-001: {problems}",
            file=source,
            expected="DATA-001 compliant arrays",
            found=f"{len(report.failures)} problem(s)",
        )


def canonicalize(
    source_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    layout: str | None = None,
    max_bytes: int | None = MAX_ARRAY_BYTES,
) -> CanonicalizeResult:
    """Convert a whole legacy NPZ to canonical DATA-001 form (all N positions) and write it.

    Diffraction becomes (N, H, W) float32, probe/object/Y complex64, coordinates float64; keys
    trainset does not know are kept unchanged. Atomic write; nothing is written on bad input;
    source arrays over ``max_bytes`` are refused (None: no limit).
    """
    source, output = Path(source_path), Path(output_path)
    check_output_path(source, output)
    data = read_source(source, layout=layout, max_bytes=max_bytes)
    require_contract(data.arrays, source)
    atomic_write_npz(output, {**data.arrays, **data.extras})
    return CanonicalizeResult(
        output,
        sha256_file(output),
        data.n_scan,
        data.layout,
        tuple(data.transformations),
        tuple(data.extras),
    )
