"""SIGKILL at the rename points of the ptycho writers, then a re-run (issue 18, fault injection).

``TRAINSET_FAULT_KILL_AT=k`` kills the command just before its k-th atomic rename. An NPZ and its
sidecar are published by two renames, so k = 1 and k = 2 are every point where a kill can fall
between "nothing new" and "done": the test tries all of them (no sampling), on a fresh output and
over a previous one. After each kill: every file there loads, no sidecar describes another NPZ,
and `ptycho check` reports the interrupted sidecar; after the re-run: no temp is left, the sidecar
matches the NPZ and `ptycho check` passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainset.cli import main
from trainset.ptycho.synthetic import make_legacy_arrays
from trainset.store import atomic_write_npz, sha256_file
from trainset.store.atomic import FAULT_ENV


def killed_at(k: int, argv: list[str]) -> int:
    """Run ``trainset ARGV`` in a new process that SIGKILLs itself before its k-th rename."""
    env = {**os.environ, FAULT_ENV: str(k)}
    cmd = [sys.executable, "-m", "trainset", *argv]
    return subprocess.run(cmd, env=env, capture_output=True, check=False).returncode


def loads(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def assert_consistent_after_kill(out: Path, sidecar: Path) -> None:
    """Whatever is there loads, and a sidecar present describes the NPZ beside it."""
    if out.exists():
        loads(out)
    if sidecar.exists():
        assert out.exists()
        assert json.loads(sidecar.read_text())["sha256_checksum"] == sha256_file(out)


def assert_clean_after_rerun(out: Path, sidecar: Path, capsys) -> None:
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []
    assert json.loads(sidecar.read_text())["sha256_checksum"] == sha256_file(out)
    capsys.readouterr()
    assert main(["ptycho", "check", str(out)]) == 0, capsys.readouterr().out


@pytest.fixture
def source(tmp_path) -> Path:
    return atomic_write_npz(tmp_path / "s.npz", make_legacy_arrays(40, 16, (48, 47), seed=7))


def fixture_argv(source: Path, out: Path, n: int) -> list[str]:
    return [
        "ptycho",
        "fixture",
        "--source",
        str(source),
        "--output",
        str(out),
        "--subset-size",
        str(n),
    ]


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over-previous"])
def test_fixture_killed_at_each_rename_then_rerun(tmp_path, source, capsys, k, previous):
    out = tmp_path / "out" / "f.npz"
    sidecar = out.with_suffix(".json")
    if previous:
        assert main(fixture_argv(source, out, 16)) == 0
    old = sha256_file(out) if previous else None

    assert killed_at(k, fixture_argv(source, out, 32)) == -signal.SIGKILL
    assert_consistent_after_kill(out, sidecar)
    assert not sidecar.exists()
    if k == 1:
        assert (sha256_file(out) if out.exists() else None) == old
    else:
        assert len(loads(out)["xcoords"]) == 32
    capsys.readouterr()
    assert main(["ptycho", "check", str(out)]) == (1 if out.exists() else 2)
    if out.exists():
        assert "sidecar: present (its NPZ was written with one)" in capsys.readouterr().out

    assert main(fixture_argv(source, out, 32)) == 0
    assert json.loads(sidecar.read_text())["subset_size"] == 32
    assert_clean_after_rerun(out, sidecar, capsys)


def test_simulate_killed_between_npz_and_sidecar_then_rerun(tmp_path, source, capsys):
    out = tmp_path / "sim.npz"
    argv = ["ptycho", "simulate", "--source", str(source), "--output", str(out), "--layout", "nhw"]
    assert main(argv) == 0
    assert killed_at(2, argv) == -signal.SIGKILL
    assert_consistent_after_kill(out, out.with_suffix(".json"))
    assert main(argv) == 0
    assert_clean_after_rerun(out, out.with_suffix(".json"), capsys)


def test_import_killed_before_the_npz_rename_then_rerun(tmp_path, capsys):
    rng = np.random.default_rng(5)
    tike = atomic_write_npz(
        tmp_path / "tike.npz",
        {
            "data": rng.poisson(4.0, (1, 20, 16, 16)).astype(np.float32),
            "scan": rng.uniform(0, 30, (1, 20, 2)).astype(np.float32),
        },
    )
    out = tmp_path / "imported.npz"
    argv = ["ptycho", "import", "--format", "tike", str(tike), "--output", str(out)]
    assert main(argv) == 0
    old = sha256_file(out)
    assert killed_at(1, argv) == -signal.SIGKILL
    assert sha256_file(out) == old
    assert_consistent_after_kill(out, out.with_suffix(".json"))
    assert main(argv) == 0
    assert_clean_after_rerun(out, out.with_suffix(".json"), capsys)
