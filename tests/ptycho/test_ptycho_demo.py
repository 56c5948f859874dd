import json

import numpy as np

from trainset.cli import main
from trainset.store import sha256_file


def test_demo_writes_source_canonical_fixture_and_passes_check(tmp_path, capsys):
    small = ["--scenes", "2", "--frames", "4", "--height", "24", "--width", "32", "--workers", "1"]
    assert main(["demo", "--out", str(tmp_path), *small]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "ptycho"
    fixture = root / "minimal_dataset_v1.npz"
    for name in (
        "Run1084_synthetic_legacy.npz",
        "Run1084_synthetic_canonical.npz",
        "minimal_dataset_v1.npz",
        "minimal_dataset_v1.json",
    ):
        assert str(root / name) in out
    assert f"{fixture}: DATA-001: PASS" in out
    with np.load(root / "Run1084_synthetic_legacy.npz", allow_pickle=False) as source:
        assert source["diffraction"].shape == (64, 64, 1087)
        assert source["diffraction"].dtype == np.float64
        assert source["objectGuess"].shape == (227, 226)
    sidecar = json.loads((root / "minimal_dataset_v1.json").read_text())
    assert sidecar["sha256_checksum"] == sha256_file(fixture)
    assert f"fixture sha256: {sidecar['sha256_checksum']}" in out
