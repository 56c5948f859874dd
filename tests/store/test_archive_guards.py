"""The store's guards: array sizes checked against the archive, temps of dead writers, NPZ +
sidecar pairs that never disagree."""

import fcntl
import json
import os
import zipfile

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.store import (
    MAX_ARRAY_BYTES,
    atomic_write_npz,
    atomic_write_npz_with_sidecar,
    check_array_size,
    npz_headers,
    read_npz_array,
    remove_dead_temps,
    sha256_file,
    temps_of,
)
from trainset.store import atomic as atomic_module
from trainset.store.codecs import ArrayHeader, npy_header_bytes


def test_default_limit_is_one_gib():
    assert MAX_ARRAY_BYTES == 2**30


def test_npz_headers_refuses_a_member_over_the_given_limit(tmp_path):
    path = atomic_write_npz(tmp_path / "a.npz", {"x": np.zeros((10, 10), np.float64)})
    assert npz_headers(path, max_bytes=800)["x"].shape == (10, 10)
    with pytest.raises(InputError, match=r"key 'x'.*\(expected at most 799 bytes, found 800"):
        npz_headers(path, max_bytes=799)


def test_read_npz_array_refuses_a_member_over_the_limit(tmp_path):
    path = atomic_write_npz(tmp_path / "a.npz", {"x": np.zeros(100, np.float32)})
    with pytest.raises(InputError, match=r"larger than the limit"):
        read_npz_array(path, "x", max_bytes=399)
    assert read_npz_array(path, "x", max_bytes=400).shape == (100,)


def test_header_claiming_less_than_stored_is_refused_too(tmp_path):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", npy_header_bytes((2,), np.float64) + bytes(24))
    with pytest.raises(InputError, match=r"\(expected 16 bytes of data, found 24 bytes\)"):
        npz_headers(path)


def test_check_array_size_guards_a_plain_npy_file_by_its_size_on_disk(tmp_path):
    """How a reader of ``.npy`` files (focus pack) reuses the guard: stored = file size - header."""
    path = tmp_path / "s.npy"
    header = npy_header_bytes((1000, 1000), np.float32)
    path.write_bytes(header + bytes(64))
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        stored = path.stat().st_size - fh.tell()
    with pytest.raises(InputError, match=r"s.npy: key 'shard'.*found 64 bytes"):
        check_array_size(path, "shard", ArrayHeader(shape, dtype, fortran), stored)


def test_bit_rot_in_compressed_data_is_a_corrupt_array_error(tmp_path):
    path = atomic_write_npz(tmp_path / "a.npz", {"x": np.arange(50000, dtype=np.float64)})
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"a.npz: key 'x': corrupt array data"):
        read_npz_array(path, "x")


def test_temps_of_names_only_the_targets_own_temps(tmp_path):
    for name in (".f.npz.tmp-abcd1234", ".f.npz.tmp-x", ".g.npz.tmp-abcd1234", "f.npz"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in temps_of(tmp_path / "f.npz")] == [".f.npz.tmp-abcd1234"]


def test_remove_dead_temps_keeps_a_temp_whose_writer_holds_its_lock(tmp_path):
    dead = tmp_path / ".f.npz.tmp-dead1234"
    live = tmp_path / ".f.npz.tmp-live1234"
    dead.write_bytes(b"killed")
    live.write_bytes(b"running")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert remove_dead_temps(tmp_path / "f.npz") == 1
    finally:
        os.close(fd)
    assert not dead.exists() and live.exists()


def test_an_atomic_write_holds_the_lock_until_its_rename(tmp_path):
    target = tmp_path / "f.bin"
    with atomic_module.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        assert remove_dead_temps(target) == 0
        assert tmp.exists()
    assert target.read_bytes() == b"half"


def pair(tmp_path, value):
    npz, sidecar = tmp_path / "f.npz", tmp_path / "f.json"
    checksum = atomic_write_npz_with_sidecar(
        npz, {"x": np.full(4, value)}, sidecar, lambda sha: {"sha256_checksum": sha, "v": value}
    )
    return npz, sidecar, checksum


def test_pair_writes_a_sidecar_holding_the_npz_sha256(tmp_path):
    npz, sidecar, checksum = pair(tmp_path, 1.0)
    assert json.loads(sidecar.read_text()) == {"sha256_checksum": sha256_file(npz), "v": 1.0}
    assert checksum == sha256_file(npz)


def test_pair_failing_at_the_npz_rename_keeps_the_old_npz_and_old_sidecar(tmp_path, monkeypatch):
    npz, sidecar, old = pair(tmp_path, 1.0)
    real = atomic_module._replace

    def fail_on_npz(src, dst):
        if os.fspath(dst) == os.fspath(npz):
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr(atomic_module, "_replace", fail_on_npz)
    with pytest.raises(OSError, match="disk gone"):
        pair(tmp_path, 2.0)
    assert sha256_file(npz) == old
    assert json.loads(sidecar.read_text())["v"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "f.npz"]


def test_pair_failing_at_the_sidecar_rename_leaves_no_sidecar(tmp_path, monkeypatch):
    npz, sidecar, _ = pair(tmp_path, 1.0)
    real = atomic_module._replace

    def fail_on_sidecar(src, dst):
        if os.fspath(dst) == os.fspath(sidecar):
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr(atomic_module, "_replace", fail_on_sidecar)
    with pytest.raises(OSError, match="disk gone"):
        pair(tmp_path, 2.0)
    assert np.load(npz)["x"][0] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]


def test_without_file_locks_writes_go_ahead_and_temps_are_kept(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(atomic_module.fcntl, "flock", no_locks)
    atomic_module.atomic_write_bytes(tmp_path / "f.bin", b"written")
    assert (tmp_path / "f.bin").read_bytes() == b"written"
    (tmp_path / ".f.bin.tmp-left1234").write_bytes(b"unknown writer")
    assert remove_dead_temps(tmp_path / "f.bin") == 0
