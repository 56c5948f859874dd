"""`trainset ptycho simulate`: diffraction from a reconstruction, checked against computations
made here independently (scipy's bilinear map_coordinates, numpy's unitary FFT, analytic cases)."""

import json

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from trainset.cli import main
from trainset.errors import InputError
from trainset.ptycho import generate_fixture
from trainset.ptycho.simulate import object_patches, simulate
from trainset.ptycho.synthetic import make_legacy_arrays
from trainset.store import atomic_write_npz, sha256_file

RUN1084 = ("ptycho", "Run1084_recon3_postPC.npz")


def expected_pattern(obj, probe, x, y):
    """|unitary FFT| (zero frequency centred) of probe x the object patch whose pixel
    (H//2, W//2) lies on (y, x), the object sampled bilinearly (zero outside)."""
    h, w = probe.shape
    rows = (y - h // 2 + np.arange(h))[:, None] * np.ones((1, w))
    cols = (x - w // 2 + np.arange(w))[None, :] * np.ones((h, 1))
    patch = map_coordinates(obj.real, [rows, cols], order=1, mode="constant") + 1j * (
        map_coordinates(obj.imag, [rows, cols], order=1, mode="constant")
    )
    return np.abs(np.fft.fftshift(np.fft.fft2(probe * patch, norm="ortho")))


@pytest.fixture(scope="module")
def simulated_run1084(tmp_path_factory, shared_data):
    """The real Run1084 reconstruction -> simulated legacy source (what the demo builds)."""
    recon = shared_data(*RUN1084)
    out = tmp_path_factory.mktemp("sim") / "Run1084_simulated_legacy.npz"
    simulate(recon, out)
    with np.load(recon, allow_pickle=False) as r:
        recon_arrays = {k: r[k] for k in r.files}
    return out, recon_arrays


def test_simulated_run1084_source_has_the_plans_legacy_shape(simulated_run1084):
    """What only the real file shows: its 1087 real positions and its (227, 226) object."""
    out, recon = simulated_run1084
    with np.load(out, allow_pickle=False) as source:
        assert source["diffraction"].shape == (64, 64, 1087)
        assert source["diffraction"].dtype == np.float64
        assert source["objectGuess"].shape == (227, 226)
        assert source["objectGuess"].dtype == np.complex128
        assert source["probeGuess"].dtype == np.complex128
        for key in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
            assert np.array_equal(source[key], recon[key])


@pytest.mark.parametrize("i", [0, 1, 543, 1086])
def test_pattern_i_is_the_simulation_at_its_real_scan_position(simulated_run1084, i):
    out, recon = simulated_run1084
    with np.load(out, allow_pickle=False) as source:
        pattern = source["diffraction"][:, :, i]
    want = expected_pattern(
        recon["objectGuess"], recon["probeGuess"], recon["xcoords"][i], recon["ycoords"][i]
    )
    np.testing.assert_allclose(pattern, want, rtol=1e-10, atol=1e-12)


def test_simulated_run1084_amplitudes_match_the_plans_source_range(simulated_run1084):
    """The plan's Run1084 diffraction spans 0..1.70; the simulation from its own object and
    probe lands in the same range (no rescaling is applied)."""
    out, _ = simulated_run1084
    with np.load(out, allow_pickle=False) as source:
        peak = float(source["diffraction"].max())
    assert 1.0 < peak < 1.70


def test_fixture_from_simulated_run1084_passes_plan_section_6(tmp_path, simulated_run1084):
    out, recon = simulated_run1084
    npz, sidecar, checksum = generate_fixture(out, tmp_path / "minimal_dataset_v1.npz")
    with np.load(npz, allow_pickle=False) as f:
        assert f["diffraction"].shape == (64, 64, 64)
        assert f["objectGuess"].shape == (227, 226)
        assert f["probeGuess"].shape == (64, 64)
        assert f["xcoords"].shape == (64,)
        assert f["diffraction"].dtype == np.float32
        assert f["objectGuess"].dtype == np.complex64
        assert f["probeGuess"].dtype == np.complex64
        assert np.max(f["diffraction"]) < 10.0
        assert np.min(f["diffraction"]) >= 0.0
        for i in (0, 17, 63):
            want = expected_pattern(
                recon["objectGuess"], recon["probeGuess"], f["xcoords"][i], f["ycoords"][i]
            )
            assert f["xcoords"][i] == recon["xcoords"][i]
            np.testing.assert_allclose(f["diffraction"][i], want, rtol=1e-6, atol=1e-7)
    metadata = json.loads(sidecar.read_text())
    assert metadata["subset_size"] == 64
    assert metadata["sha256_checksum"] == sha256_file(npz) == checksum


def test_patch_at_an_integer_position_is_the_object_window():
    obj = np.arange(20 * 30).reshape(20, 30) * (1 + 2j)
    patch = object_patches(obj, np.array([10.0]), np.array([12.0]), (8, 6))[0]
    np.testing.assert_array_equal(patch, obj[6:14, 9:15])


def test_patch_at_a_half_pixel_position_averages_the_two_neighbours():
    obj = np.arange(20 * 30).reshape(20, 30).astype(np.complex128)
    patch = object_patches(obj, np.array([10.5]), np.array([12.0]), (4, 4))[0]
    np.testing.assert_allclose(patch, (obj[8:12, 10:14] + obj[9:13, 10:14]) / 2)


def test_patch_samples_outside_the_object_are_zero():
    obj = np.ones((10, 10), np.complex128)
    patch = object_patches(obj, np.array([0.0]), np.array([0.0]), (4, 4))[0]
    assert patch[:2].sum() == 0 and patch[:, :2].sum() == 0
    np.testing.assert_array_equal(patch[2:, 2:], np.ones((2, 2)))


def flat_recon(tmp_path, n=20, size=16):
    """Flat object and probe: each pattern is one peak sqrt(H*W) at the centre pixel."""
    return atomic_write_npz(
        tmp_path / "flat.npz",
        {
            "objectGuess": np.ones((48, 48), np.complex128),
            "probeGuess": np.ones((size, size), np.complex128),
            "xcoords": np.linspace(20, 28, n),
            "ycoords": np.linspace(20, 28, n),
        },
    )


def test_sparse_nhw_result_is_refused_naming_the_broken_rules(tmp_path):
    with pytest.raises(InputError, match=r"diffraction: max/mean: .*found max/mean 256"):
        simulate(flat_recon(tmp_path), tmp_path / "o.npz", layout="nhw")
    assert list(tmp_path.iterdir()) == [tmp_path / "flat.npz"]


def test_flat_object_and_probe_give_one_centred_peak_of_sqrt_hw(tmp_path):
    out = simulate(flat_recon(tmp_path), tmp_path / "o.npz").output
    with np.load(out, allow_pickle=False) as f:
        diff = f["diffraction"]
    want = np.zeros((16, 16))
    want[8, 8] = 16.0  # sum of 256 ones / sqrt(256)
    for i in range(diff.shape[2]):
        np.testing.assert_allclose(diff[:, :, i], want, atol=1e-12)


def test_nhw_layout_is_canonical_data001_and_checks_with_its_sidecar(tmp_path, capsys):
    recon = make_legacy_arrays(20, 16, (48, 47), seed=7)
    del recon["diffraction"]
    source = atomic_write_npz(tmp_path / "recon.npz", recon)
    argv = ["ptycho", "simulate", "--source", str(source), "--output", str(tmp_path / "o.npz")]
    assert main([*argv, "--layout", "nhw"]) == 0
    capsys.readouterr()
    assert main(["ptycho", "check", str(tmp_path / "o.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert f"sidecar {tmp_path / 'o.json'}" in report["checked"]
    sidecar = json.loads((tmp_path / "o.json").read_text())
    assert sidecar["source_sha256"] == sha256_file(source)
    assert sidecar["positions"] == 20
    assert sidecar["layout"] == "nhw"


def test_position_outside_the_object_is_refused_and_nothing_written(tmp_path, capsys):
    recon = dict(np.load(flat_recon(tmp_path)))
    recon["xcoords"] = recon["xcoords"].copy()
    recon["xcoords"][3] = 60.0
    source = atomic_write_npz(tmp_path / "out_of_range.npz", recon)
    argv = ["ptycho", "simulate", "--source", str(source), "--output", str(tmp_path / "o.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "key 'xcoords, ycoords': 1 scan position(s) outside the object" in err
    assert "(expected 0 <= y <= 47, 0 <= x <= 47 (objectGuess 48x48), found position 3" in err
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "o.json").exists()


def test_missing_probe_is_refused_naming_the_key(tmp_path):
    recon = dict(np.load(flat_recon(tmp_path)))
    del recon["probeGuess"]
    source = atomic_write_npz(tmp_path / "noprobe.npz", recon)
    with pytest.raises(InputError, match=r"key 'probeGuess': required array\(s\) missing"):
        simulate(source, tmp_path / "o.npz")
