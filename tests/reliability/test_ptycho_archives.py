"""Hostile archives (issue 18.9) and temps left by a killed `ptycho fixture` (issue 18.16).

18.9: an NPZ member whose header claims more data than the archive holds, or a zip bomb whose
data is larger than the documented limit, is refused with exit 2 (file, key, expected, found)
before anything is allocated or decompressed. 18.16: a re-run removes the temps a killed run of
the same output left, and only those of a dead writer.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from trainset.cli import main
from trainset.errors import InputError
from trainset.ptycho.synthetic import make_legacy_arrays
from trainset.store import MAX_ARRAY_BYTES, atomic_write_npz, read_npz_array, temps_of
from trainset.store.codecs import npy_header_bytes

# A deflate block of a 16 MiB run of zeros, repeated, makes a bomb of any size in ~1 MB.
ZERO_CHUNK = 16 << 20
PATTERN = 64
# Patterns of 64x64 float32 in one chunk.
PATTERNS_PER_CHUNK = ZERO_CHUNK // (PATTERN * PATTERN * 4)
# Chunks of zeros in the bomb: 65 * 16 MiB = 1040 MiB, just over the default 1 GiB limit.
BOMB_CHUNKS = MAX_ARRAY_BYTES // ZERO_CHUNK + 1


def npy_bytes(arr: np.ndarray) -> bytes:
    return npy_header_bytes(arr.shape, arr.dtype) + np.ascontiguousarray(arr).tobytes()


def write_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> Path:
    """A zip of pre-deflated members (name, raw deflate stream, crc32, uncompressed size)."""
    out = bytearray()
    central = bytearray()
    for name, data, crc, size in members:
        raw = name.encode()
        offset = len(out)
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 33, crc, len(data), size, len(raw), 0
        )
        out += raw + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            8,
            0,
            33,
            crc,
            len(data),
            size,
            len(raw),
            0,
            0,
            0,
            0,
            0o644 << 16,
            offset,
        )
        central += raw
    out += central
    out += struct.pack(
        "<IHHHHIIH",
        0x06054B50,
        0,
        0,
        len(members),
        len(members),
        len(central),
        len(out) - len(central),
        0,
    )
    path.write_bytes(bytes(out))
    return path


def deflated(data: bytes, name: str) -> tuple[str, bytes, int, int]:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return name, c.compress(data) + c.flush(), zlib.crc32(data), len(data)


def zero_bomb_member(name: str, n_patterns: int) -> tuple[str, bytes, int, int]:
    """A deflated .npy of (n_patterns, 64, 64) float32 zeros, built without compressing it all:
    after a full flush deflate starts afresh, so one compressed chunk of zeros repeats."""
    assert n_patterns % PATTERNS_PER_CHUNK == 0
    header = npy_header_bytes((n_patterns, PATTERN, PATTERN), np.float32)
    chunk = bytes(ZERO_CHUNK)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    chunks = n_patterns // PATTERNS_PER_CHUNK
    stream = head + block * chunks + c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(header)
    for _ in range(chunks):
        crc = zlib.crc32(chunk, crc)
    return name, stream, crc, len(header) + chunks * ZERO_CHUNK


def canonical_members(n: int) -> list[tuple[str, bytes, int, int]]:
    """Every DATA-001 key but diffraction, for n positions of 64x64 patterns."""
    arrays = {
        "objectGuess": np.ones((128, 128), np.complex64),
        "probeGuess": np.ones((PATTERN, PATTERN), np.complex64),
        "xcoords": np.full(n, 64.0),
        "ycoords": np.full(n, 64.0),
    }
    return [deflated(npy_bytes(v), f"{k}.npy") for k, v in arrays.items()]


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> Path:
    """About 1 MB on disk, 1040 MiB of zero diffraction inside: a DATA-001 file that passes."""
    n = BOMB_CHUNKS * PATTERNS_PER_CHUNK
    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    return write_zip(path, [zero_bomb_member("diffraction.npy", n), *canonical_members(n)])


@pytest.fixture
def forged_header(tmp_path) -> Path:
    """A 1 KB NPZ whose diffraction header claims (100000, 64, 64) float32 with no data."""
    header = npy_header_bytes((100000, PATTERN, PATTERN), np.float32)
    members = [deflated(header, "diffraction.npy"), *canonical_members(100000)[:2]]
    return write_zip(tmp_path / "forged.npz", members)


def test_check_refuses_a_member_whose_header_claims_more_than_the_archive_holds(
    forged_header, capsys
):
    assert main(["ptycho", "check", str(forged_header)]) == 2
    err = capsys.readouterr().err
    claimed = 100000 * PATTERN * PATTERN * 4
    assert f"{forged_header}: key 'diffraction': array header claims shape (100000, 64, 64)" in err
    assert f"(expected {claimed} bytes of data, found 0 bytes)" in err


def test_check_refuses_a_zip_bomb_over_the_default_limit_without_decompressing_it(zip_bomb, capsys):
    assert zip_bomb.stat().st_size < 2 << 20
    assert main(["ptycho", "check", str(zip_bomb)]) == 2
    err = capsys.readouterr().err
    claimed = BOMB_CHUNKS * ZERO_CHUNK
    assert f"{zip_bomb}: key 'diffraction': array of shape" in err
    assert f"(expected at most {MAX_ARRAY_BYTES} bytes, found {claimed} bytes (1040 MiB))" in err


def test_max_array_mib_sets_the_limit(tmp_path, capsys):
    arrays = {k: v for k, v in make_legacy_arrays(20, 16, (40, 40), seed=3).items()}
    arrays["diffraction"] = np.ascontiguousarray(
        arrays["diffraction"].transpose(2, 0, 1), dtype=np.float32
    )
    for key in ("objectGuess", "probeGuess"):
        arrays[key] = arrays[key].astype(np.complex64)
    path = atomic_write_npz(tmp_path / "small.npz", arrays)
    assert main(["ptycho", "check", str(path), "--max-array-mib", "0.01"]) == 2
    assert "key 'diffraction': array of shape (20, 16, 16) float32 is larger than the limit" in (
        capsys.readouterr().err
    )
    assert main(["ptycho", "check", str(path), "--max-array-mib", "0.02"]) == 0


def test_reader_refuses_a_forged_header_before_allocating(forged_header):
    with pytest.raises(InputError, match=r"disagrees with the archive's record"):
        read_npz_array(forged_header, "diffraction", max_bytes=None)


def small_source(tmp_path: Path) -> Path:
    return atomic_write_npz(tmp_path / "s.npz", make_legacy_arrays(40, 16, (48, 47), seed=7))


def fixture_argv(source: Path, out: Path) -> list[str]:
    return [
        "ptycho",
        "fixture",
        "--source",
        str(source),
        "--output",
        str(out),
        "--subset-size",
        "16",
    ]


def test_rerun_removes_the_temps_a_killed_fixture_left(tmp_path):
    source = small_source(tmp_path)
    out = tmp_path / "out" / "f.npz"
    env = {**os.environ, "TRAINSET_FAULT_KILL_AT": "1"}
    killed = subprocess.run(
        [sys.executable, "-m", "trainset", *fixture_argv(source, out)], env=env, check=False
    )
    assert killed.returncode == -signal.SIGKILL
    assert temps_of(out), "the killed run left the NPZ's temp"
    assert main(fixture_argv(source, out)) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["f.json", "f.npz"]


def test_rerun_keeps_a_temp_whose_writer_is_alive_and_other_outputs_temps(tmp_path):
    source = small_source(tmp_path)
    out = tmp_path / "f.npz"
    live = tmp_path / ".f.npz.tmp-live0000"
    other = tmp_path / ".g.npz.tmp-dead0000"
    live.write_bytes(b"being written")
    other.write_bytes(b"another output's")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running writer holds it
        assert main(fixture_argv(source, out)) == 0
        assert live.read_bytes() == b"being written"
        assert other.read_bytes() == b"another output's"
    finally:
        os.close(fd)
