import json

import numpy as np
import pytest

from trainset.cli import main
from trainset.errors import InputError
from trainset.ptycho import canonicalize, check_npz
from trainset.store import atomic_write_npz


def test_whole_legacy_file_becomes_canonical(tmp_path, small_arrays):
    arrays = small_arrays()
    source = atomic_write_npz(tmp_path / "legacy.npz", arrays)
    result = canonicalize(source, tmp_path / "canonical.npz")
    with np.load(result.output, allow_pickle=False) as out:
        assert out["diffraction"].shape == (40, 16, 16)
        assert out["diffraction"].dtype == np.float32
        for k in range(40):
            assert np.array_equal(
                out["diffraction"][k], arrays["diffraction"][:, :, k].astype(np.float32)
            )
        assert np.array_equal(out["xcoords"], arrays["xcoords"])
        assert out["probeGuess"].dtype == out["objectGuess"].dtype == np.complex64
    assert result.layout == "hwn" and result.n_scan == 40
    assert check_npz(result.output).ok


def test_unknown_keys_are_kept_unchanged(tmp_path, small_arrays):
    arrays = small_arrays()
    arrays["energy_keV"] = np.array([8.8])
    source = atomic_write_npz(tmp_path / "legacy.npz", arrays)
    result = canonicalize(source, tmp_path / "canonical.npz")
    assert result.kept_extra_keys == ("energy_keV",)
    with np.load(result.output, allow_pickle=False) as out:
        assert out["energy_keV"].tolist() == [8.8]


def test_canonical_source_passes_through_unchanged(tmp_path, small_arrays):
    first = canonicalize(
        atomic_write_npz(tmp_path / "legacy.npz", small_arrays()), tmp_path / "c1.npz"
    )
    second = canonicalize(first.output, tmp_path / "c2.npz")
    assert second.layout == "nhw" and second.transformations == ()
    assert second.sha256 == first.sha256


def test_canonicalize_refuses_output_equal_to_source(tmp_path, small_arrays):
    source = atomic_write_npz(tmp_path / "legacy.npz", small_arrays())
    with pytest.raises(InputError, match=r"--output is the source file"):
        canonicalize(source, source)


def test_canonicalize_cli_prints_what_it_did(tmp_path, capsys, small_arrays):
    source = atomic_write_npz(tmp_path / "legacy.npz", small_arrays())
    code = main(
        ["ptycho", "canonicalize", "--source", str(source), "--output", str(tmp_path / "c.npz")]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"wrote {tmp_path / 'c.npz'} (40 positions, source layout hwn)" in out
    assert "  diffraction: transpose (H,W,N) → (N,H,W)" in out


def test_check_cli_exit_0_on_a_compliant_file(tmp_path, capsys, small_arrays):
    source = atomic_write_npz(tmp_path / "legacy.npz", small_arrays())
    canonicalize(source, tmp_path / "c.npz")
    assert main(["ptycho", "check", str(tmp_path / "c.npz")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'c.npz'}: DATA-001: PASS\n"


def test_check_cli_exit_1_lists_every_problem_and_hints_at_legacy_layout(
    tmp_path, capsys, small_arrays
):
    source = atomic_write_npz(tmp_path / "legacy.npz", small_arrays())
    assert main(["ptycho", "check", str(source)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{source}: DATA-001: FAIL (8 problem(s))"
    assert lines[1:4] == [
        "  - diffraction: dtype: expected float32, found float64",
        "  - objectGuess: dtype: expected complex64, found complex128",
        "  - probeGuess: dtype: expected complex64, found complex128",
    ]
    assert (
        lines[5]
        == "  - xcoords: shape: expected N=16 (as in 'diffraction'), found N=40 in shape (40,)"
    )
    assert lines[-1].startswith("hint: diffraction is in legacy (H,W,N) layout")


def test_check_cli_json_report(tmp_path, capsys, small_arrays):
    source = atomic_write_npz(tmp_path / "legacy.npz", small_arrays())
    assert main(["ptycho", "check", "--json", str(source)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["contract"] == "DATA-001"
    assert len(report["failures"]) == 8


@pytest.mark.parametrize("content", [None, "not a zip"])
def test_check_cli_exit_2_when_file_cannot_be_read(tmp_path, capsys, content):
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_text(content)
    assert main(["ptycho", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: " in err
