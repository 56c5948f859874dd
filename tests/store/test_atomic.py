import hashlib
import io
import json
import zipfile

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.store import atomic, codecs
from trainset.store.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_npy,
    atomic_write_npz,
    atomic_write_png,
    atomic_write_yaml,
    remove_stale_temps,
)
from trainset.store.codecs import (
    NPY_ALIGN,
    encode_csv,
    npz_headers,
    read_json,
    read_npz_array,
    read_png,
    read_yaml,
)


def test_failure_between_write_and_rename_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk vanished")

    monkeypatch.setattr(atomic, "_replace", broken_replace)
    with pytest.raises(OSError, match="disk vanished"):
        atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_exception_inside_writer_leaves_no_file(tmp_path):
    target = tmp_path / "a.npz"
    with pytest.raises(InputError, match="object arrays"):
        atomic_write_npz(target, {"x": np.array([{"a": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def test_npz_is_byte_identical_across_writes_and_readable_by_numpy(tmp_path):
    arrays = {
        "depth": np.linspace(0.5, 8, 64, dtype=np.float16).reshape(8, 8),
        "c": np.arange(3, dtype=np.complex64),
    }
    a = atomic_write_npz(tmp_path / "a.npz", arrays)
    b = atomic_write_npz(tmp_path / "b.npz", arrays)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    with np.load(a, allow_pickle=False) as z:
        assert z["depth"].dtype == np.float16
        np.testing.assert_array_equal(z["depth"], arrays["depth"])
        np.testing.assert_array_equal(z["c"], arrays["c"])
    with zipfile.ZipFile(a) as zf:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())


def test_npy_header_page_aligned_and_loadable(tmp_path):
    arr = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    path = atomic_write_npy(tmp_path / "s.npy", arr, align=NPY_ALIGN)
    raw = path.read_bytes()
    assert len(raw) == NPY_ALIGN + arr.nbytes
    np.testing.assert_array_equal(
        np.frombuffer(raw[NPY_ALIGN:], dtype=np.float32).reshape(2, 4, 5), arr
    )
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), arr)
    np.testing.assert_array_equal(np.load(path, mmap_mode="r"), arr)


def test_npy_default_header_matches_numpy_alignment(tmp_path):
    arr = np.ones((3, 3), dtype=np.float64)
    header = codecs.npy_header_bytes(arr.shape, arr.dtype)
    assert len(header) % 64 == 0
    buf = io.BytesIO()
    np.save(buf, arr)
    assert len(header) == len(buf.getvalue()) - arr.nbytes


def test_json_and_yaml_round_trip_and_reject_nan(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"b": [1, 2], "a": "x"})
    assert json.loads((tmp_path / "a.json").read_text()) == {"b": [1, 2], "a": "x"}
    atomic_write_yaml(tmp_path / "c.yaml", {"max_coc": 0.0123, "stages": {"depth": {"b": 1}}})
    assert read_yaml(tmp_path / "c.yaml") == {"max_coc": 0.0123, "stages": {"depth": {"b": 1}}}
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "n.json", {"x": float("nan")})
    assert not (tmp_path / "n.json").exists()


def test_png_round_trip_uint8_rgb_and_uint16(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    atomic_write_png(tmp_path / "f.png", rgb)
    np.testing.assert_array_equal(read_png(tmp_path / "f.png"), rgb)
    d16 = np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000
    atomic_write_png(tmp_path / "d.png", d16)
    np.testing.assert_array_equal(read_png(tmp_path / "d.png", mode=None).astype(np.uint16), d16)


def test_png_rejects_float_image(tmp_path):
    with pytest.raises(InputError, match=r"expected .*uint8.*found \(2, 2\) float64"):
        atomic_write_png(tmp_path / "x.png", np.zeros((2, 2)))


def test_read_png_names_corrupt_file(tmp_path):
    bad = tmp_path / "frame_0001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match=r"frame_0001.png: corrupt or unreadable image"):
        read_png(bad)


def test_remove_stale_temps_removes_only_temps(tmp_path):
    (tmp_path / "keep.npz").write_bytes(b"k")
    (tmp_path / ".keep.npz.tmp-abc123").write_bytes(b"t")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / ".x.png.tmp-zz").write_bytes(b"t")
    assert remove_stale_temps(tmp_path) == 1
    assert remove_stale_temps(tmp_path, recursive=True) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.npz", "sub"]


def test_npz_headers_read_without_data_and_flag_object_arrays(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, good=np.zeros((4, 2), np.float32), bad=np.array([None, 1], dtype=object))
    headers = npz_headers(path)
    assert headers["good"].shape == (4, 2) and headers["good"].dtype == np.float32
    assert headers["bad"].dtype.hasobject
    with pytest.raises(InputError, match=r"o.npz: key 'bad': cannot load array without pickle"):
        read_npz_array(path, "bad")


def test_npz_reader_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"missing.npz: file not found"):
        npz_headers(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(InputError, match=r"text.npz: not a readable NPZ"):
        npz_headers(text)
    ok = tmp_path / "ok.npz"
    atomic_write_npz(ok, {"a": np.zeros(2)})
    with pytest.raises(InputError, match=r"key 'b': required array is missing"):
        read_npz_array(ok, "b")


def test_encode_csv_writes_header_then_rows_quoting_commas():
    text = encode_csv(["scene_id", "frame", "value"], [["a", "frame_0000", 1.5], ["b,c", "x", 2]])
    assert text == 'scene_id,frame,value\na,frame_0000,1.5\n"b,c",x,2\n'


def test_read_json_of_a_folder_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match=r"cannot read JSON: Is a directory \(expected a readable"):
        read_json(tmp_path)


def test_read_yaml_of_a_folder_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match=r"cannot read YAML: Is a directory"):
        read_yaml(tmp_path)


def test_fault_hook_kills_before_the_nth_rename_leaving_its_temp(tmp_path):
    """TRAINSET_FAULT_KILL_AT=2: the first file is written, the process dies before the second
    rename; the second target does not exist and its temp is left as a real kill leaves it."""
    import os
    import signal
    import subprocess
    import sys

    script = (
        "import sys; from trainset.store.atomic import atomic_write_text as w\n"
        "w(sys.argv[1] + '/a.txt', 'a'); w(sys.argv[1] + '/b.txt', 'b'); w(sys.argv[1] + '/c.txt', 'c')\n"
    )
    env = {**os.environ, "TRAINSET_FAULT_KILL_AT": "2"}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "a.txt").read_text() == "a"
    assert not (tmp_path / "b.txt").exists()
    assert not (tmp_path / "c.txt").exists()
    temps = [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.txt.tmp-")]
    assert len(temps) == 1
    assert (tmp_path / temps[0]).read_text() == "b"


def test_a_write_error_without_a_file_name_is_raised_naming_the_target(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "out.bin"

    def full_disk(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_seal", full_disk)
    with pytest.raises(OSError, match=r"No space left on device: '.*out.bin'") as info:
        atomic_write_bytes(target, b"x")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
