"""``trainset ptycho import``: a CXI or tike file -> canonical DATA-001 NPZ with a sidecar."""

from __future__ import annotations

import os
from pathlib import Path

from trainset.errors import InputError
from trainset.ptycho.instrument import ImportResult, Measurement, write_import
from trainset.ptycho.sidecar import sidecar_path_for
from trainset.store import MAX_ARRAY_BYTES

FORMATS = ("cxi", "tike")


def import_file(
    source_format: str,
    source_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    metadata_path: str | os.PathLike[str] | None = None,
    object_pixel_m: float | None = None,
    max_bytes: int | None = MAX_ARRAY_BYTES,
    progress: bool = False,
) -> ImportResult:
    """Import a measured ptychography file (``source_format`` 'cxi' or 'tike') as a canonical
    DATA-001 NPZ at ``output_path`` with a JSON sidecar (default: the output with suffix .json).

    ``object_pixel_m`` (CXI only) replaces the far-field object pixel size; ``max_bytes``
    limits the arrays of a tike NPZ (None: no limit). Nothing is written on bad input or when
    the result would break DATA-001 (InputError).
    """
    if source_format not in FORMATS:
        raise InputError(
            "unknown format", key="--format", expected=" or ".join(FORMATS), found=source_format
        )
    if object_pixel_m is not None and source_format != "cxi":
        raise InputError(
            "--object-pixel-m applies to CXI files only (tike positions are already pixels)",
            key="--object-pixel-m",
            expected="--format cxi",
            found=f"--format {source_format}",
        )
    if object_pixel_m is not None and not object_pixel_m > 0:
        raise InputError(
            "object pixel size must be positive",
            key="--object-pixel-m",
            expected="> 0",
            found=object_pixel_m,
        )
    source, output = Path(source_path), Path(output_path)
    sidecar = sidecar_path_for(source, output, metadata_path)
    measurement: Measurement
    if source_format == "cxi":
        from trainset.ptycho.cxi import read_cxi

        measurement = read_cxi(source, object_pixel_m=object_pixel_m, progress=progress)
    else:
        from trainset.ptycho.tike import read_tike

        measurement = read_tike(source, max_bytes=max_bytes)
    return write_import(
        measurement, source, output, source_format=source_format, metadata_path=sidecar
    )
