"""The ptychography demo: a Run1084-shaped legacy source -> canonical file -> fixture -> check.

The source is simulated from the plan's own reconstruction (``Run1084_recon3_postPC.npz``: the
real object, probe and 1087 scan positions) when that file is given, else built synthetically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainset.ptycho.contract import check_npz
from trainset.ptycho.convert import canonicalize
from trainset.ptycho.fixture import generate_fixture
from trainset.ptycho.simulate import simulate
from trainset.ptycho.synthetic import write_legacy_source

# The plan's source run (real reconstruction, no diffraction), as ../shared/data holds it.
RUN1084_RECON = "Run1084_recon3_postPC.npz"


def run_ptycho_demo(
    out_dir: str | os.PathLike[str], recon: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Build a legacy (64, 64, 1087) float64 source under ``out_dir/ptycho``: simulated from
    ``recon`` (a reconstruction NPZ such as Run1084_recon3_postPC.npz) when given, else
    synthetic; canonicalise it, cut a 64-position fixture with its sidecar, check the fixture
    against DATA-001.

    Returns the paths written, which source was used (``source_kind``: 'simulated' or
    'synthetic'), the fixture's sha256 and the check's verdict and report text.
    """
    root = Path(out_dir) / "ptycho"
    if recon is not None:
        kind = "simulated"
        source = simulate(recon, root / "Run1084_simulated_legacy.npz").output
    else:
        kind = "synthetic"
        # Float64 amplitudes of a random-phase object deflate by ~5% only: store them raw.
        source = write_legacy_source(root / "Run1084_synthetic_legacy.npz", compress=False)
    canonical = canonicalize(source, root / f"Run1084_{kind}_canonical.npz")
    fixture, sidecar, checksum = generate_fixture(source, root / "minimal_dataset_v1.npz", 64)
    report = check_npz(fixture)
    return {
        "source_kind": kind,
        "recon": str(recon) if recon is not None else None,
        "source": str(source),
        "canonical": str(canonical.output),
        "canonical_transformations": list(canonical.transformations),
        "fixture": str(fixture),
        "metadata": str(sidecar),
        "sha256": checksum,
        "check_ok": report.ok,
        "check_report": report.to_text(),
    }
