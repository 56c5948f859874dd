"""The ptychography demo: synthetic Run1084-shaped source -> canonical file -> fixture -> check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainset.ptycho.contract import check_npz
from trainset.ptycho.convert import canonicalize
from trainset.ptycho.fixture import generate_fixture
from trainset.ptycho.synthetic import write_legacy_source


def run_ptycho_demo(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Build the synthetic legacy source under ``out_dir/ptycho``, canonicalise it, cut a
    64-position fixture with its sidecar, check the fixture against DATA-001.

    Returns the paths written, the fixture's sha256 and the check's verdict and report text.
    """
    root = Path(out_dir) / "ptycho"
    # Float64 amplitudes of a random-phase object deflate by ~5% only: store them uncompressed.
    source = write_legacy_source(root / "Run1084_synthetic_legacy.npz", compress=False)
    canonical = canonicalize(source, root / "Run1084_synthetic_canonical.npz")
    fixture, sidecar, checksum = generate_fixture(source, root / "minimal_dataset_v1.npz", 64)
    report = check_npz(fixture)
    return {
        "source": str(source),
        "canonical": str(canonical.output),
        "canonical_transformations": list(canonical.transformations),
        "fixture": str(fixture),
        "metadata": str(sidecar),
        "sha256": checksum,
        "check_ok": report.ok,
        "check_report": report.to_text(),
    }
