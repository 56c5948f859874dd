import json
from pathlib import Path

import numpy as np

from trainset.cli import main
from trainset.demo import SHARED_DATA_ENV, shared_data_root
from trainset.ptycho import run_ptycho_demo
from trainset.ptycho.demo import RUN1084_RECON
from trainset.store import sha256_file


def test_demo_without_real_data_uses_the_synthetic_source_and_says_so(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path / "no-shared-data"))
    small = ["--scenes", "2", "--frames", "4", "--height", "24", "--width", "32", "--workers", "1"]
    assert main(["demo", "--out", str(tmp_path), *small]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "ptycho"
    fixture = root / "minimal_dataset_v1.npz"
    recon = tmp_path / "no-shared-data" / "ptycho" / RUN1084_RECON
    assert f"source synthetic ({recon} not found; set {SHARED_DATA_ENV} to use real data)" in out
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


def test_ptycho_demo_simulates_its_source_from_the_real_run1084(tmp_path, shared_data):
    recon = shared_data("ptycho", RUN1084_RECON)
    result = run_ptycho_demo(tmp_path, recon)
    assert result["source_kind"] == "simulated"
    assert result["source"] == str(tmp_path / "ptycho" / "Run1084_simulated_legacy.npz")
    assert result["check_ok"], result["check_report"]
    with np.load(result["source"], allow_pickle=False) as source:
        assert source["diffraction"].shape == (64, 64, 1087)
    sidecar = json.loads((tmp_path / "ptycho" / "Run1084_simulated_legacy.json").read_text())
    assert sidecar["source_sha256"] == sha256_file(recon)


def test_shared_data_root_is_the_env_variable_or_shared_data_beside_the_checkout(monkeypatch):
    monkeypatch.setenv(SHARED_DATA_ENV, "/elsewhere/data")
    assert str(shared_data_root()) == "/elsewhere/data"
    monkeypatch.delenv(SHARED_DATA_ENV)
    checkout = Path(__file__).resolve().parents[2]
    assert shared_data_root() == checkout.parent / "shared" / "data"
