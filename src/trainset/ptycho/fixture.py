"""Small DATA-001 test fixtures cut from a (legacy) dataset, with a provenance sidecar.

The plan (``ptycho-fixture-design.md`` sections 2-7): diffraction (n, H, W) float32, probe and
object complex64, coordinates float64, optional keys preserved, a JSON sidecar with the NPZ's
sha256. Every per-scan array is cut with the same row indices, so pattern i stays paired with
its scan position; the same input always gives the same NPZ bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from trainset.errors import InputError
from trainset.ptycho.contract import PER_SCAN_KEYS
from trainset.ptycho.convert import require_contract
from trainset.ptycho.sidecar import common_fields, sidecar_path_for, write_npz_with_sidecar
from trainset.ptycho.source import read_source
from trainset.store import MAX_ARRAY_BYTES

Strategy = Literal["first", "stratified"]
STRATEGIES: tuple[Strategy, ...] = ("first", "stratified")
# Plan 7.2: fewer positions are insufficient for the grouping tests.
MIN_SUBSET = 16
# Plan 3.2: sidecar strategy names.
STRATEGY_NAMES = {"first": "first_n_positions", "stratified": "stratified_scan_order"}
GENERATOR_SCRIPT = "trainset ptycho fixture (trainset.ptycho.fixture)"
VALIDATION_NOTES = (
    "Compliant with DATA-001 (specs/data_contracts.md §1), checked by trainset.ptycho.DATA001 "
    "before writing; every per-scan array cut with the same row indices"
)


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise InputError(
            "unknown subset strategy",
            key="--strategy",
            expected="first or stratified",
            found=repr(strategy),
        )


def subset_indices(n_total: int, n_subset: int, strategy: str = "first") -> np.ndarray:
    """Row indices (n_subset,) int64, increasing, into a scan of ``n_total`` positions.

    ``first``: 0..n_subset-1 (the plan). ``stratified``: the scan order split into n_subset equal
    strata, the first row of each: ``floor(i * n_total / n_subset)``.
    """
    _check_strategy(strategy)
    if not MIN_SUBSET <= n_subset <= n_total:
        raise InputError(
            "subset size out of range",
            key="--subset-size",
            expected=f"{MIN_SUBSET} <= n <= {n_total}",
            found=n_subset,
        )
    steps = np.arange(n_subset, dtype=np.int64)
    return steps if strategy == "first" else (steps * n_total) // n_subset


def _check_subset_size(source: Path, n_subset: int, n_total: int | None) -> None:
    if n_subset < MIN_SUBSET:
        raise InputError(
            f"--subset-size {n_subset} is below {MIN_SUBSET}, insufficient for grouping tests",
            file=source,
            expected=f">= {MIN_SUBSET}",
            found=n_subset,
        )
    if n_total is not None and n_subset > n_total:
        raise InputError(
            f"--subset-size {n_subset} exceeds the dataset size",
            file=source,
            expected=f"<= {n_total} (scan positions in the source)",
            found=n_subset,
        )


def _subset_note(strategy: str, idx: np.ndarray, n_total: int, keys: list[str]) -> list[str]:
    n = len(idx)
    where = (
        f"subset indices [0:{n}]"
        if strategy == "first"
        else f"subset indices floor(i*{n_total}/{n}) for i in [0:{n}]"
    )
    return [f"coordinates: {where}", f"same rows taken from: {', '.join(keys)}"]


def generate_fixture(
    source_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    n_subset: int = 64,
    *,
    metadata_path: str | os.PathLike[str] | None = None,
    strategy: str = "first",
    layout: str | None = None,
    max_bytes: int | None = MAX_ARRAY_BYTES,
) -> tuple[Path, Path, str]:
    """Cut an ``n_subset``-position DATA-001 fixture from ``source_path``; return (npz, json, sha256).

    The sidecar goes to ``metadata_path`` (default: the output with suffix ``.json``). Nothing is
    written when the input is bad (InputError). Both files are written atomically and together
    (:func:`trainset.ptycho.sidecar.write_npz_with_sidecar`): a kill never leaves a sidecar
    describing another NPZ, and a re-run removes the temps a killed run left. Source arrays
    over ``max_bytes`` are refused (None: no limit).
    """
    source, output = Path(source_path), Path(output_path)
    metadata = sidecar_path_for(source, output, metadata_path)
    _check_strategy(strategy)
    _check_subset_size(source, n_subset, None)
    data = read_source(source, layout=layout, max_bytes=max_bytes)
    _check_subset_size(source, n_subset, data.n_scan)

    idx = subset_indices(data.n_scan, n_subset, strategy)
    per_scan = [k for k in data.arrays if k in PER_SCAN_KEYS]
    arrays = {
        k: np.ascontiguousarray(v[idx]) if k in PER_SCAN_KEYS else v for k, v in data.arrays.items()
    }
    require_contract(arrays, source)
    notes = [*data.transformations, *_subset_note(strategy, idx, data.n_scan, per_scan)]
    if data.extras:
        notes.append(f"dropped keys not known to be per-scan: {', '.join(sorted(data.extras))}")
    head, provenance = common_fields(GENERATOR_SCRIPT, source)

    def sidecar(checksum: str) -> dict[str, Any]:
        return {
            **head,
            "subset_strategy": STRATEGY_NAMES[strategy],
            "subset_size": int(n_subset),
            "transformations": notes,
            "sha256_checksum": checksum,
            "validation_notes": VALIDATION_NOTES,
            "source_layout": data.layout,
            "source_positions": int(data.n_scan),
            "subset_indices": [int(i) for i in idx],
            "provenance": provenance,
        }

    checksum = write_npz_with_sidecar(output, arrays, metadata, sidecar)
    return output, metadata, checksum
