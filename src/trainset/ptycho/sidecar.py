"""JSON provenance sidecars of the NPZ files trainset writes (fixture, simulate, import).

A sidecar is written together with its NPZ by :func:`trainset.store.atomic_write_npz_with_sidecar`:
a kill at any moment leaves either a sidecar that describes the NPZ beside it or no sidecar (with
the sidecar's temp file where it goes, which ``trainset ptycho check`` reports). A re-run first
removes the temps that a killed run of the same output left behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.ptycho.convert import check_output_path
from trainset.store import atomic_write_npz_with_sidecar, provenance_record, remove_dead_temps

# Plan 3.2: sidecar format version.
SIDECAR_VERSION = "v1"


def sidecar_path_for(
    source: Path, output: Path, metadata_path: str | os.PathLike[str] | None
) -> Path:
    """The sidecar path (default: ``output`` with suffix ``.json``); refuse one that names the
    source, the output or a directory."""
    sidecar = Path(metadata_path) if metadata_path is not None else output.with_suffix(".json")
    check_output_path(source, output)
    check_output_path(source, sidecar, "--metadata-out")
    if sidecar.resolve() == output.resolve():
        raise InputError(
            "--metadata-out is the output path",
            file=sidecar,
            expected="a sidecar path different from --output",
            found=str(output),
        )
    return sidecar


def common_fields(generator_script: str, source: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields every sidecar starts with (the plan's section 3.2 order), and the provenance
    record (trainset/Python/numpy/torch versions, command, time) that every sidecar ends with."""
    provenance = provenance_record()
    head = {
        "version": SIDECAR_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "generator_script": generator_script,
        "generator_commit": provenance["git_commit"] or "unknown",
        "source_dataset": str(source),
    }
    return head, provenance


def write_npz_with_sidecar(
    output: Path,
    arrays: Mapping[str, np.ndarray],
    sidecar: Path,
    make_sidecar: Callable[[str], dict[str, Any]],
    *,
    compress: bool = True,
) -> str:
    """Remove temps a killed earlier run left for ``output`` and ``sidecar`` (only theirs, and
    only when their writer is gone), then write both; return the NPZ's sha256.

    ``make_sidecar(sha256)`` returns the sidecar's JSON object.
    """
    remove_dead_temps(output)
    remove_dead_temps(sidecar)
    return atomic_write_npz_with_sidecar(output, arrays, sidecar, make_sidecar, compress=compress)
