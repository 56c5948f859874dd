"""Bad input: exit 2, one line naming file, key, expected and found, nothing written."""

import hashlib
import re

import numpy as np
import pytest

from trainset.cli import main
from trainset.errors import InputError
from trainset.ptycho import generate_fixture, subset_indices
from trainset.store import atomic_write_npz


def _missing_file(tmp_path, arrays):
    return tmp_path / "missing.npz"


def _not_a_zip(tmp_path, arrays):
    path = tmp_path / "text.npz"
    path.write_text("diffraction")
    return path


def _object_array(tmp_path, arrays):
    arrays["probeGuess"] = np.array([{"pickled": True}] * 4, dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **arrays)  # numpy pickles object arrays
    return path


def _write(name, change):
    def make(tmp_path, arrays):
        change(arrays)
        return atomic_write_npz(tmp_path / name, arrays)

    return make


def _nan(arrays):
    arrays["diffraction"][3, 4, 5] = np.nan


def _negative(arrays):
    arrays["diffraction"][3, 4, 5] = -0.25


def _truncate_coordinates(arrays):
    for key in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        arrays[key] = arrays[key][:30]


CASES = {
    "missing file": (_missing_file, [], r"missing\.npz: file not found \(expected an existing"),
    "not a zip": (_not_a_zip, [], r"text\.npz: not an NPZ file \(expected an NPZ \(zip\) archive"),
    "object array": (
        _object_array,
        [],
        r"pickled\.npz: key 'probeGuess': object array needs pickle.*"
        r"\(expected numeric dtype, found object \(pickled\) array\)",
    ),
    "missing key": (
        _write("nokey.npz", lambda a: a.pop("probeGuess")),
        [],
        r"nokey\.npz: key 'probeGuess': required array\(s\) missing \(expected keys "
        r"diffraction, objectGuess, probeGuess, xcoords, ycoords, found keys ",
    ),
    "2-D diffraction": (
        _write("flat.npz", lambda a: a.update(diffraction=a["diffraction"][:, :, 0])),
        [],
        r"flat\.npz: key 'diffraction': diffraction must be 3-D "
        r"\(expected 3-D \(N,H,W\) or \(H,W,N\), found 2-D shape \(16, 16\)\)",
    ),
    "NaN diffraction": (
        _write("nan.npz", _nan),
        [],
        r"nan\.npz: key 'diffraction': diffraction amplitudes must be finite "
        r"\(expected finite values, found 1 NaN and 0 infinite value\(s\)\)",
    ),
    "negative diffraction": (
        _write("neg.npz", _negative),
        [],
        r"neg\.npz: key 'diffraction': diffraction amplitudes must be non-negative "
        r"\(expected values >= 0, found 1 negative value\(s\), min -0\.25\)",
    ),
    "coordinate count fits neither axis": (
        _write("coords.npz", _truncate_coordinates),
        [],
        r"coords\.npz: key 'diffraction': coordinate count matches neither.*"
        r"\(expected shape \(N,H,W\) or \(H,W,N\) with N=30, found shape \(16, 16, 40\)\)",
    ),
    "subset size below 16": (
        _write("ok.npz", lambda a: None),
        ["--subset-size", "15"],
        r"ok\.npz: --subset-size 15 is below 16.*\(expected >= 16, found 15\)",
    ),
    "subset size above N": (
        _write("ok.npz", lambda a: None),
        ["--subset-size", "41"],
        r"ok\.npz: --subset-size 41 exceeds the dataset size "
        r"\(expected <= 40 \(scan positions in the source\), found 41\)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, small_arrays, case):
    make, extra, pattern = CASES[case]
    source = make(tmp_path, small_arrays())
    out = tmp_path / "out"
    code = main(
        ["ptycho", "fixture", "--source", str(source), "--output", str(out / "f.npz"), *extra]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("trainset: error: ")
    assert str(source) in err
    assert re.search(pattern, err), err
    assert not out.exists()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_input_error_from_the_api(tmp_path, small_arrays, case):
    make, extra, pattern = CASES[case]
    source = make(tmp_path, small_arrays())
    n_subset = int(extra[1]) if extra else 16
    with pytest.raises(InputError, match=pattern):
        generate_fixture(source, tmp_path / "out" / "f.npz", n_subset)
    assert not (tmp_path / "out").exists()


def test_output_equal_to_source_is_refused_and_source_kept(tmp_path, capsys, small_arrays):
    source = atomic_write_npz(tmp_path / "s.npz", small_arrays())
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    code = main(["ptycho", "fixture", "--source", str(source), "--output", str(source)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert (
        "--output is the source file; refusing to overwrite the source (expected an output "
        f"path different from --source, found {source})" in err
    )
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_output_naming_the_source_through_another_path_is_refused(tmp_path, small_arrays):
    source = atomic_write_npz(tmp_path / "s.npz", small_arrays())
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match=r"--output is the source file"):
        generate_fixture(source, tmp_path / "sub" / ".." / "s.npz", 16)


def test_metadata_out_equal_to_source_is_refused(tmp_path, small_arrays):
    source = atomic_write_npz(tmp_path / "s.npz", small_arrays())
    with pytest.raises(InputError, match=r"--metadata-out is the source file"):
        generate_fixture(source, tmp_path / "f.npz", 16, metadata_path=source)


def test_metadata_out_equal_to_output_is_refused(tmp_path, small_arrays):
    source = atomic_write_npz(tmp_path / "s.npz", small_arrays())
    with pytest.raises(InputError, match=r"--metadata-out is the output path"):
        generate_fixture(source, tmp_path / "f.npz", 16, metadata_path=tmp_path / "f.npz")


def test_unknown_strategy_is_refused_before_reading(tmp_path):
    with pytest.raises(InputError, match=r"unknown subset strategy.*found 'random'"):
        generate_fixture(tmp_path / "missing.npz", tmp_path / "f.npz", 16, strategy="random")


def test_source_breaking_data001_after_conversion_is_refused(tmp_path, small_arrays):
    arrays = small_arrays()
    arrays["diffraction"] = arrays["diffraction"] * 10.0  # peak 1.7 -> 17: unnormalised
    source = atomic_write_npz(tmp_path / "loud.npz", arrays)
    with pytest.raises(
        InputError,
        match=r"result would break DATA-001: diffraction: max: expected values < 10, found max 17",
    ):
        generate_fixture(source, tmp_path / "out" / "f.npz", 40)
    assert not (tmp_path / "out").exists()


def test_coordinates_of_different_lengths_are_refused(tmp_path, small_arrays):
    arrays = small_arrays()
    arrays["ycoords"] = arrays["ycoords"][:39]
    source = atomic_write_npz(tmp_path / "c.npz", arrays)
    with pytest.raises(
        InputError, match=r"key 'ycoords': coordinate arrays differ.*length 40 \(as xcoords\)"
    ):
        generate_fixture(source, tmp_path / "f.npz", 16)


def test_nan_coordinates_are_refused(tmp_path, small_arrays):
    arrays = small_arrays()
    arrays["xcoords"][2] = np.nan
    source = atomic_write_npz(tmp_path / "c.npz", arrays)
    with pytest.raises(InputError, match=r"key 'xcoords': coordinates must be finite"):
        generate_fixture(source, tmp_path / "f.npz", 16)


def test_non_integer_scan_index_is_refused(tmp_path, small_arrays):
    arrays = small_arrays()
    arrays["scan_index"] = np.zeros(40, np.float64)
    source = atomic_write_npz(tmp_path / "c.npz", arrays)
    with pytest.raises(
        InputError, match=r"key 'scan_index': wrong dtype \(expected integer, found float64\)"
    ):
        generate_fixture(source, tmp_path / "f.npz", 16)


def test_output_that_is_a_directory_is_refused(tmp_path, small_arrays):
    source = atomic_write_npz(tmp_path / "s.npz", small_arrays())
    (tmp_path / "out").mkdir()
    with pytest.raises(
        InputError, match=r"out: --output is a directory \(expected a file path, found an existing"
    ):
        generate_fixture(source, tmp_path / "out", 16)
    assert list((tmp_path / "out").iterdir()) == []


def _y_wrong_layout(arrays):
    arrays["Y"] = np.ones((40, 16, 16), np.complex64)  # canonical Y beside legacy diffraction


MORE_CASES = {
    "2-D xcoords": (
        lambda a: a.update(xcoords=a["xcoords"].reshape(4, 10)),
        r"key 'xcoords': xcoords must be 1-D \(expected 1-D \(N,\), found 2-D shape \(4, 10\)\)",
    ),
    "complex coordinates": (
        lambda a: a.update(ycoords=a["ycoords"].astype(np.complex128)),
        r"key 'ycoords': wrong dtype \(expected real numbers, found complex128\)",
    ),
    "complex diffraction": (
        lambda a: a.update(diffraction=a["diffraction"].astype(np.complex64)),
        r"key 'diffraction': wrong dtype \(expected real amplitudes \(float\), found complex64\)",
    ),
    "3-D object": (
        lambda a: a.update(objectGuess=a["objectGuess"][None]),
        r"key 'objectGuess': objectGuess must be 2-D .*found 3-D shape \(1, 48, 47\)",
    ),
    "infinite diffraction": (
        lambda a: a["diffraction"].__setitem__((0, 0, 0), np.inf),
        r"key 'diffraction': diffraction amplitudes must be finite .*found 0 NaN and 1 infinite",
    ),
    "2-D Y": (
        lambda a: a.update(Y=np.ones((40, 16), np.complex64)),
        r"key 'Y': Y must be 3-D .*found 2-D shape \(40, 16\)",
    ),
    "Y in another layout than diffraction": (
        _y_wrong_layout,
        r"key 'Y': --layout hwn puts N on the last axis.*found shape \(40, 16, 16\)",
    ),
    "scan_index of wrong length": (
        lambda a: a.update(scan_index=np.arange(39)),
        r"key 'scan_index': scan_index length differs .*\(expected length 40, found length 39\)",
    ),
}


@pytest.mark.parametrize("case", list(MORE_CASES))
def test_malformed_arrays_are_refused(tmp_path, small_arrays, case):
    change, pattern = MORE_CASES[case]
    arrays = small_arrays()
    change(arrays)
    source = atomic_write_npz(tmp_path / "bad.npz", arrays)
    with pytest.raises(InputError, match=pattern):
        generate_fixture(source, tmp_path / "out" / "f.npz", 16)
    assert not (tmp_path / "out").exists()


def test_directory_as_source_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"not a regular file \(expected an NPZ file, found a dir"):
        generate_fixture(tmp_path, tmp_path / "f.npz", 16)


def test_metadata_out_that_is_a_directory_is_refused(tmp_path, small_arrays):
    source = atomic_write_npz(tmp_path / "s.npz", small_arrays())
    (tmp_path / "meta").mkdir()
    with pytest.raises(InputError, match=r"--metadata-out is a directory"):
        generate_fixture(source, tmp_path / "f.npz", 16, metadata_path=tmp_path / "meta")


@pytest.mark.parametrize("n_subset", [15, 101])
def test_subset_indices_refuses_sizes_out_of_range(n_subset):
    with pytest.raises(
        InputError, match=rf"subset size out of range \(expected 16 <= n <= 100, found {n_subset}\)"
    ):
        subset_indices(100, n_subset)
