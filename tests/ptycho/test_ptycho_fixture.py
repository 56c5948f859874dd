import hashlib
import json

import numpy as np
import pytest

import trainset.store.atomic as atomic
from trainset.cli import main
from trainset.errors import InputError
from trainset.ptycho import generate_fixture, subset_indices
from trainset.ptycho.sidecar import SIDECAR_VERSION
from trainset.store import atomic_write_npz


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run1084_fixture(tmp_path_factory, run1084_source):
    out = tmp_path_factory.mktemp("fixture") / "minimal_dataset_v1.npz"
    return generate_fixture(run1084_source, out)


def test_fixture_shapes_match_plan_section_6_1(run1084_fixture):
    with np.load(run1084_fixture[0], allow_pickle=False) as fixture:
        assert fixture["diffraction"].shape == (64, 64, 64)
        assert fixture["objectGuess"].shape == (227, 226)
        assert fixture["probeGuess"].shape == (64, 64)
        assert fixture["xcoords"].shape == (64,)
        assert fixture["ycoords"].shape == (64,)
        assert fixture["xcoords_start"].shape == (64,)
        assert fixture["ycoords_start"].shape == (64,)


def test_fixture_dtypes_match_plan_section_6_2(run1084_fixture):
    with np.load(run1084_fixture[0], allow_pickle=False) as fixture:
        assert fixture["diffraction"].dtype == np.float32
        assert fixture["objectGuess"].dtype == np.complex64
        assert fixture["probeGuess"].dtype == np.complex64
        assert fixture["xcoords"].dtype == np.float64
        assert fixture["ycoords"].dtype == np.float64


def test_fixture_holds_exactly_the_plan_schema_keys(run1084_fixture):
    with np.load(run1084_fixture[0], allow_pickle=False) as fixture:
        assert list(fixture.keys()) == [
            "diffraction",
            "objectGuess",
            "probeGuess",
            "xcoords",
            "ycoords",
            "xcoords_start",
            "ycoords_start",
        ]


def test_sidecar_matches_plan_section_6_3(run1084_fixture):
    npz, sidecar, checksum = run1084_fixture
    assert sidecar == npz.with_suffix(".json")
    metadata = json.loads(sidecar.read_text())
    assert metadata["subset_size"] == 64
    assert metadata["sha256_checksum"] == sha256_of(npz) == checksum
    assert metadata["version"] == SIDECAR_VERSION == "v1"
    assert metadata["subset_strategy"] == "first_n_positions"
    assert metadata["transformations"][:5] == [
        "diffraction: transpose (H,W,N) → (N,H,W)",
        "diffraction: dtype float64 → float32",
        "objectGuess: dtype complex128 → complex64",
        "probeGuess: dtype complex128 → complex64",
        "coordinates: subset indices [0:64]",
    ]
    for key in ("created", "generator_script", "generator_commit", "source_dataset"):
        assert isinstance(metadata[key], str) and metadata[key]
    assert "validation_notes" in metadata


def test_fixture_values_match_plan_section_6_4(run1084_fixture):
    with np.load(run1084_fixture[0], allow_pickle=False) as fixture:
        assert np.max(fixture["diffraction"]) < 10.0
        assert np.min(fixture["diffraction"]) >= 0.0


def test_probe_and_object_are_the_source_values_downcast(run1084_fixture, run1084_arrays):
    with np.load(run1084_fixture[0], allow_pickle=False) as fixture:
        assert np.array_equal(
            fixture["probeGuess"], run1084_arrays["probeGuess"].astype(np.complex64)
        )
        assert np.array_equal(
            fixture["objectGuess"], run1084_arrays["objectGuess"].astype(np.complex64)
        )


@pytest.mark.parametrize("strategy", ["first", "stratified"])
def test_every_pattern_stays_paired_with_its_scan_position(
    tmp_path, run1084_source, run1084_arrays, strategy
):
    npz, _, _ = generate_fixture(run1084_source, tmp_path / "f.npz", strategy=strategy)
    src_x, src_y = run1084_arrays["xcoords"], run1084_arrays["ycoords"]
    src_diff = run1084_arrays["diffraction"]
    with np.load(npz, allow_pickle=False) as fixture:
        for i in range(64):
            (j,) = np.flatnonzero(
                (src_x == fixture["xcoords"][i]) & (src_y == fixture["ycoords"][i])
            )
            assert np.array_equal(fixture["diffraction"][i], src_diff[:, :, j].astype(np.float32))
            assert fixture["xcoords_start"][i] == run1084_arrays["xcoords_start"][j]
            assert fixture["ycoords_start"][i] == run1084_arrays["ycoords_start"][j]


def test_stratified_sidecar_names_strategy_and_indices(tmp_path, run1084_source):
    _, sidecar, _ = generate_fixture(run1084_source, tmp_path / "s.npz", strategy="stratified")
    metadata = json.loads(sidecar.read_text())
    assert metadata["subset_strategy"] == "stratified_scan_order"
    assert metadata["subset_indices"] == [(i * 1087) // 64 for i in range(64)]


def test_first_strategy_takes_rows_zero_to_n():
    assert subset_indices(1087, 16, "first").tolist() == list(range(16))


def test_stratified_strategy_takes_first_row_of_each_equal_stratum():
    idx = subset_indices(1087, 64, "stratified")
    assert idx[:4].tolist() == [0, 16, 33, 50]  # floor(i * 1087 / 64)
    assert idx[-1] == 1070  # 63 * 1087 = 68481, / 64 = 1070.02
    assert subset_indices(40, 40, "stratified").tolist() == list(range(40))


def test_subset_indices_refuses_unknown_strategy():
    with pytest.raises(InputError, match=r"unknown subset strategy.*found 'random'"):
        subset_indices(100, 20, "random")


def test_same_input_gives_byte_identical_fixture(tmp_path, run1084_source, run1084_fixture):
    _, _, again = generate_fixture(run1084_source, tmp_path / "again.npz")
    assert again == run1084_fixture[2]


def test_fixture_bytes_are_identical_in_a_separate_process(
    tmp_path, cli, run1084_source, small_arrays
):
    small = atomic_write_npz(tmp_path / "small.npz", small_arrays())
    _, _, here = generate_fixture(small, tmp_path / "here.npz", 16)
    result = cli(
        "ptycho",
        "fixture",
        "--source",
        str(small),
        "--output",
        str(tmp_path / "there.npz"),
        "--subset-size",
        "16",
    )
    assert result.returncode == 0, result.stderr
    assert sha256_of(tmp_path / "there.npz") == here


def test_y_and_scan_index_are_cut_with_the_same_rows(tmp_path, small_arrays):
    arrays = small_arrays()
    n = 40
    y_legacy = (np.arange(16 * 16 * n).reshape(16, 16, n) * (1 + 1j)).astype(np.complex128)
    arrays["Y"] = y_legacy
    arrays["scan_index"] = np.arange(n, dtype=np.int64) + 100
    source = atomic_write_npz(tmp_path / "y.npz", arrays)
    npz, _, _ = generate_fixture(source, tmp_path / "out.npz", 16, strategy="stratified")
    idx = [(i * n) // 16 for i in range(16)]
    with np.load(npz, allow_pickle=False) as fixture:
        assert fixture["Y"].dtype == np.complex64
        assert fixture["scan_index"].tolist() == [100 + i for i in idx]
        for row, j in enumerate(idx):
            assert np.array_equal(fixture["Y"][row], y_legacy[:, :, j].astype(np.complex64))
            assert fixture["xcoords"][row] == arrays["xcoords"][j]


def test_canonical_source_with_diff3d_key_is_accepted(tmp_path, small_arrays):
    arrays = small_arrays()
    arrays["diff3d"] = np.ascontiguousarray(arrays.pop("diffraction").transpose(2, 0, 1))
    source = atomic_write_npz(tmp_path / "canon.npz", arrays)
    npz, sidecar, _ = generate_fixture(source, tmp_path / "out.npz", 16)
    with np.load(npz, allow_pickle=False) as fixture:
        assert np.array_equal(fixture["diffraction"], arrays["diff3d"][:16].astype(np.float32))
    notes = json.loads(sidecar.read_text())["transformations"]
    assert notes[0] == "diffraction: read from legacy key 'diff3d'"
    assert "diffraction: transpose (H,W,N) → (N,H,W)" not in notes


def test_metadata_out_puts_the_sidecar_elsewhere(tmp_path, small_arrays):
    source = atomic_write_npz(tmp_path / "s.npz", small_arrays())
    code = main(
        [
            "ptycho",
            "fixture",
            "--source",
            str(source),
            "--output",
            str(tmp_path / "o" / "f.npz"),
            "--subset-size",
            "16",
            "--metadata-out",
            str(tmp_path / "meta" / "m.json"),
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "meta" / "m.json").read_text())["subset_size"] == 16
    assert not (tmp_path / "o" / "f.json").exists()


def test_layout_override_decides_an_ambiguous_source(tmp_path, capsys, small_arrays):
    arrays = small_arrays(n=16, size=16)  # (16, 16, 16): both axes match N
    source = atomic_write_npz(tmp_path / "amb.npz", arrays)
    argv = ["ptycho", "fixture", "--source", str(source), "--output", str(tmp_path / "a.npz")]
    argv += ["--subset-size", "16"]
    assert main(argv) == 2
    assert "--layout nhw|hwn" in capsys.readouterr().err
    assert not (tmp_path / "a.npz").exists()
    assert main([*argv, "--layout", "hwn"]) == 0
    with np.load(tmp_path / "a.npz", allow_pickle=False) as fixture:
        assert np.array_equal(
            fixture["diffraction"][3], arrays["diffraction"][:, :, 3].astype(np.float32)
        )


def test_failure_between_write_and_rename_leaves_no_output(tmp_path, monkeypatch, small_arrays):
    source = atomic_write_npz(tmp_path / "s.npz", small_arrays())
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def killed(src, dst):
        raise KeyboardInterrupt("killed between write and rename")

    monkeypatch.setattr(atomic, "_replace", killed)
    with pytest.raises(KeyboardInterrupt, match="killed between write and rename"):
        generate_fixture(source, out_dir / "f.npz", 16)
    assert sorted(p.name for p in out_dir.iterdir()) == []


def test_failure_between_write_and_rename_keeps_the_previous_fixture(
    tmp_path, monkeypatch, small_arrays
):
    source = atomic_write_npz(tmp_path / "s.npz", small_arrays())
    npz, sidecar, checksum = generate_fixture(source, tmp_path / "f.npz", 16)

    def killed(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic, "_replace", killed)
    with pytest.raises(OSError, match="disk gone"):
        generate_fixture(source, npz, 32)
    assert sha256_of(npz) == checksum
    assert json.loads(sidecar.read_text())["subset_size"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "f.npz", "s.npz"]


def fixture_with_sidecar(tmp_path, small_arrays):
    source = atomic_write_npz(tmp_path / "s.npz", small_arrays())
    out = tmp_path / "f.npz"
    assert (
        main(
            [
                "ptycho",
                "fixture",
                "--source",
                str(source),
                "--output",
                str(out),
                "--subset-size",
                "16",
            ]
        )
        == 0
    )
    return out, tmp_path / "f.json"


def test_check_verifies_the_sidecar_beside_the_fixture(tmp_path, capsys, small_arrays):
    out, sidecar = fixture_with_sidecar(tmp_path, small_arrays)
    capsys.readouterr()
    assert main(["ptycho", "check", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert f"sidecar {sidecar}" in report["checked"]


def test_check_fails_when_the_npz_changed_after_its_sidecar(tmp_path, capsys, small_arrays):
    out, sidecar = fixture_with_sidecar(tmp_path, small_arrays)
    with np.load(out, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["diffraction"] = arrays["diffraction"] * np.float32(2)
    atomic_write_npz(out, arrays)
    capsys.readouterr()
    assert main(["ptycho", "check", str(out)]) == 1
    text = capsys.readouterr().out
    recorded = json.loads(sidecar.read_text())["sha256_checksum"]
    assert (
        f"sidecar: sha256_checksum is the NPZ's sha256: expected {recorded}, found {sha256_of(out)}"
        in text
    )
    assert main(["ptycho", "check", str(out), "--no-sidecar"]) == 0


def test_check_names_a_sidecar_with_the_wrong_subset_size(tmp_path, capsys, small_arrays):
    out, sidecar = fixture_with_sidecar(tmp_path, small_arrays)
    meta = json.loads(sidecar.read_text())
    meta["subset_size"] = 17
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["ptycho", "check", str(out), "--sidecar", str(other)]) == 1
    assert "subset_size is the NPZ's number of scan positions: expected 17, found 16" in (
        capsys.readouterr().out
    )


def test_check_refuses_a_sidecar_that_is_not_a_json_object(tmp_path, capsys, small_arrays):
    out, sidecar = fixture_with_sidecar(tmp_path, small_arrays)
    sidecar.write_text("[1, 2]")
    assert main(["ptycho", "check", str(out)]) == 2
    assert "sidecar is not a JSON object" in capsys.readouterr().err
