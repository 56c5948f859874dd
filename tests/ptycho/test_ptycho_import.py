"""`trainset ptycho import --format cxi|tike`: measured data -> canonical DATA-001.

Real files (../shared/data/ptycho) show what synthetic ones cannot: a beamline's CXI layout
(soft links, a bit mask, energy in joules, a detector basis) and tike's unshifted photon counts.
Expected values are computed here from the files' own numbers, independently of the importer.
"""

import bz2
import json
import sys

import numpy as np
import pytest

from trainset.cli import main
from trainset.errors import InputError
from trainset.ptycho import cxi
from trainset.ptycho.importer import import_file
from trainset.store import atomic_write_npz, sha256_file

CXI_FILE = ("ptycho", "PETRAIII_P25_Near_Field_Ptycho.cxi")
TIKE_FILE = ("ptycho", "siemens-star-small.npz.bz2")
# h * c in J m (exact SI constants), for wavelength = h c / E.
HC = 6.62607015e-34 * 299792458.0


def rel_close(a, b, rel=1e-9):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.all(np.abs(a - b) <= rel * np.maximum(np.abs(b), 1e-30))


@pytest.fixture(scope="module")
def tike_real(tmp_path_factory, shared_data):
    """The tike file decompressed into a temp folder (never into the repository)."""
    path = tmp_path_factory.mktemp("tike") / "siemens-star-small.npz"
    path.write_bytes(bz2.decompress(shared_data(*TIKE_FILE).read_bytes()))
    return path


@pytest.fixture(scope="module")
def tike_imported(tmp_path_factory, tike_real):
    out = tmp_path_factory.mktemp("tike_out") / "siemens.npz"
    return import_file("tike", tike_real, out), tike_real


@pytest.fixture(scope="module")
def cxi_imported(tmp_path_factory, shared_data):
    pytest.importorskip("h5py")
    source = shared_data(*CXI_FILE)
    out = tmp_path_factory.mktemp("cxi_out") / "p25.npz"
    return import_file("cxi", source, out), source


def test_real_tike_import_passes_data001_with_its_sidecar(tike_imported, capsys):
    result, _ = tike_imported
    capsys.readouterr()
    assert main(["ptycho", "check", str(result.output)]) == 0
    assert f"{result.output}: DATA-001: PASS" in capsys.readouterr().out


def test_real_tike_positions_round_trip_to_the_files_scan(tike_imported):
    result, source = tike_imported
    sidecar = json.loads(result.sidecar.read_text())
    with np.load(source) as raw, np.load(result.output) as out:
        scan = raw["scan"][0]
        rows = out["ycoords"] - sidecar["coordinates"]["y_offset_px"]
        cols = out["xcoords"] - sidecar["coordinates"]["x_offset_px"]
    assert rel_close(rows, scan[:, 0]) and rel_close(cols, scan[:, 1])


def test_real_tike_amplitudes_are_normalised_roots_of_the_centred_counts(tike_imported):
    result, source = tike_imported
    with np.load(source) as raw, np.load(result.output) as out:
        counts = raw["data"][0].astype(np.float64)
        # PtychoPINN normalize_data: mean total intensity of a pattern becomes (128 / 2)**2.
        scale = np.sqrt(64.0**2 / counts.sum(axis=(1, 2)).mean())
        for i in (0, 255, 515):
            want = np.sqrt(np.fft.fftshift(counts[i])) * scale
            np.testing.assert_allclose(out["diffraction"][i], want, rtol=1e-5, atol=1e-6)
        probe = raw["probe"].reshape(128, 128) * scale
        np.testing.assert_allclose(out["probeGuess"], probe, rtol=1e-5)
    assert result.scale == pytest.approx(scale, rel=1e-12)


def test_real_cxi_import_passes_data001_with_its_sidecar(cxi_imported, capsys):
    result, _ = cxi_imported
    capsys.readouterr()
    assert main(["ptycho", "check", str(result.output)]) == 0
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["source_sha256"] == sha256_file(cxi_imported[1])
    assert sidecar["sha256_checksum"] == sha256_file(result.output)


def test_real_cxi_positions_round_trip_to_the_files_translations(cxi_imported):
    import h5py

    result, source = cxi_imported
    with h5py.File(source, "r") as f:
        t = f["entry_1/sample_1/geometry_1/translation"][()].astype(np.float64)
        energy = float(f["entry_1/instrument_1/source_1/energy"][()])
        distance = float(f["entry_1/instrument_1/detector_1/distance"][()])
        pixel = float(f["entry_1/instrument_1/detector_1/x_pixel_size"][()])
    # Far field: object pixel = lambda z / (100 pixels * detector pixel); the basis maps rows
    # to -y and columns to -x, and the probe moves by -translation on the sample.
    step = HC / energy * distance / (100 * pixel)
    sidecar = json.loads(result.sidecar.read_text())
    with np.load(result.output) as out:
        rows = out["ycoords"] - sidecar["coordinates"]["y_offset_px"]
        cols = out["xcoords"] - sidecar["coordinates"]["x_offset_px"]
    assert rel_close(rows * step, t[:, 1]) and rel_close(cols * step, t[:, 0])


def test_real_cxi_mask_sets_its_five_flagged_pixels_to_zero(cxi_imported):
    import h5py

    result, source = cxi_imported
    with h5py.File(source, "r") as f:
        bad = f["entry_1/instrument_1/detector_1/mask"][()] != 0
        counts = f["entry_1/data_1/data"][()].astype(np.float64)
    assert int(bad.sum()) == 5
    counts[:, bad] = 0
    scale = np.sqrt(50.0**2 / counts.sum(axis=(1, 2)).mean())
    with np.load(result.output) as out:
        assert np.array_equal(out["mask"], (~bad).astype(np.uint8))
        assert not out["diffraction"][:, bad].any()
        np.testing.assert_allclose(out["diffraction"][7], np.sqrt(counts[7]) * scale, rtol=1e-5)
    assert json.loads(result.sidecar.read_text())["mask"]["bad_pixels"] == 5


def test_real_cxi_object_pixel_override_sets_the_pixel_size(tmp_path, shared_data):
    pytest.importorskip("h5py")
    import h5py

    source = shared_data(*CXI_FILE)
    result = import_file("cxi", source, tmp_path / "nf.npz", object_pixel_m=1.75e-7)
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["geometry"]["object_pixel_m"] == pytest.approx([1.75e-7, 1.75e-7], rel=1e-12)
    with h5py.File(source, "r") as f:
        t = f["entry_1/data_1/translation"][()].astype(np.float64)
    with np.load(result.output) as out:
        cols = out["xcoords"] - sidecar["coordinates"]["x_offset_px"]
    assert rel_close(cols * 1.75e-7, t[:, 0])


def tike_arrays(n=20, size=16, seed=5):
    rng = np.random.default_rng(seed)
    return {
        "data": rng.poisson(4.0, (1, n, size, size)).astype(np.float32),
        "scan": rng.uniform(0, 30, (1, n, 2)).astype(np.float32),
        "probe": np.ones((1, 1, 1, 1, size, size), np.complex64),
    }


def test_tike_scan_and_data_counts_must_match(tmp_path, capsys):
    arrays = tike_arrays()
    arrays["scan"] = arrays["scan"][:, :19]
    source = atomic_write_npz(tmp_path / "t.npz", arrays)
    out = tmp_path / "o.npz"
    assert main(["ptycho", "import", "--format", "tike", str(source), "--output", str(out)]) == 2
    assert (
        f"{source}: key 'scan': scan positions do not match the patterns (expected shape "
        "(..., 20, 2): one (vertical, horizontal) position per pattern, found shape (1, 19, 2) "
        "for 20 patterns)" in capsys.readouterr().err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]


def test_tike_with_several_probe_modes_is_refused(tmp_path):
    arrays = tike_arrays()
    arrays["probe"] = np.ones((1, 1, 1, 2, 16, 16), np.complex64)
    source = atomic_write_npz(tmp_path / "t.npz", arrays)
    with pytest.raises(InputError, match=r"key 'probe': probe must be one \(16, 16\) probe"):
        import_file("tike", source, tmp_path / "o.npz")


def test_sparse_far_field_data_fails_data001_naming_the_rule_and_value(tmp_path, capsys):
    arrays = tike_arrays()
    arrays["data"] = np.zeros_like(arrays["data"])
    arrays["data"][0, :, 0, 0] = 1000.0  # one bright pixel per pattern: max/mean = 16*16
    source = atomic_write_npz(tmp_path / "t.npz", arrays)
    out = tmp_path / "o.npz"
    assert main(["ptycho", "import", "--format", "tike", str(source), "--output", str(out)]) == 2
    assert (
        "diffraction: max/mean: expected max/mean < 100 (amplitude, not intensity), "
        "found max/mean 256" in capsys.readouterr().err
    )
    assert not out.exists()


def test_probe_guess_reproduces_the_mean_intensity_in_the_far_field(tmp_path):
    arrays = tike_arrays()
    del arrays["probe"]
    result = import_file("tike", atomic_write_npz(tmp_path / "t.npz", arrays), tmp_path / "o.npz")
    with np.load(result.output) as out:
        mean_intensity = np.mean(out["diffraction"].astype(np.float64) ** 2, axis=0)
        far = (
            np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(out["probeGuess"]), norm="ortho")))
            ** 2
        )
    np.testing.assert_allclose(far, mean_intensity, rtol=1e-4, atol=1e-6)


def test_object_pixel_size_is_refused_for_tike(tmp_path):
    source = atomic_write_npz(tmp_path / "t.npz", tike_arrays())
    with pytest.raises(InputError, match=r"--object-pixel-m applies to CXI files only"):
        import_file("tike", source, tmp_path / "o.npz", object_pixel_m=1e-7)


def write_cxi(path, *, n=12, size=16, data=None, drop=(), mask=None, probe=None):
    """A small CXI file laid out as beamlines write it (soft links into data_1)."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(3)
    if data is None:
        data = rng.poisson(50.0, (n, size, size)).astype(np.int32)
    entries = {
        "entry_1/instrument_1/detector_1/data": data,
        "entry_1/instrument_1/detector_1/distance": np.float32(2.0),
        "entry_1/instrument_1/detector_1/x_pixel_size": np.float32(75e-6),
        "entry_1/instrument_1/detector_1/y_pixel_size": np.float32(75e-6),
        "entry_1/instrument_1/source_1/energy": np.float32(1.6e-15),
        "entry_1/sample_1/geometry_1/translation": rng.uniform(-2e-6, 2e-6, (n, 3)),
    }
    if mask is not None:
        entries["entry_1/instrument_1/detector_1/mask"] = mask
    if probe is not None:
        entries["entry_1/instrument_1/source_1/illumination"] = probe
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 160
        for key, value in entries.items():
            if key not in drop:
                f[key] = value
        f["entry_1/data_1/data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
    return path


def test_cxi_without_translations_exits_2_naming_the_entries(tmp_path, capsys):
    source = write_cxi(tmp_path / "s.cxi", drop=("entry_1/sample_1/geometry_1/translation",))
    out = tmp_path / "o.npz"
    assert main(["ptycho", "import", "--format", "cxi", str(source), "--output", str(out)]) == 2
    assert (
        f"{source}: key 'entry_1/data_1/translation or entry_1/sample_1/geometry_1/translation "
        "or entry_1/instrument_1/detector_1/translation': required CXI entry missing (sample "
        "translations) (expected an HDF5 dataset, found entries under entry_1/data_1: data)"
    ) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.cxi"]


def test_cxi_without_energy_or_wavelength_exits_2(tmp_path, capsys):
    source = write_cxi(tmp_path / "s.cxi", drop=("entry_1/instrument_1/source_1/energy",))
    out = tmp_path / "o.npz"
    assert main(["ptycho", "import", "--format", "cxi", str(source), "--output", str(out)]) == 2
    assert "key 'entry_1/instrument_1/source_1/wavelength': required CXI entry missing" in (
        capsys.readouterr().err
    )


def test_a_file_named_cxi_that_is_not_hdf5_exits_2(tmp_path, capsys):
    source = tmp_path / "fake.cxi"
    source.write_bytes(b"PK\x03\x04 not an HDF5 file")
    out = tmp_path / "o.npz"
    assert main(["ptycho", "import", "--format", "cxi", str(source), "--output", str(out)]) == 2
    assert (
        f"{source}: not an HDF5 file (expected a CXI (HDF5) file, found 21 bytes without the "
        "HDF5 signature)" in capsys.readouterr().err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.cxi"]


def test_cxi_patterns_are_read_a_block_at_a_time(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    source = write_cxi(tmp_path / "s.cxi", n=12)
    reads = []
    real = h5py.Dataset.__getitem__

    def spy(self, key):
        if self.name.endswith("/data") and self.ndim == 3:
            reads.append(real(self, key).shape)
        return real(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    monkeypatch.setattr(cxi, "BATCH", 5)
    import_file("cxi", source, tmp_path / "o.npz")
    assert reads == [(5, 16, 16), (5, 16, 16), (2, 16, 16)]


def test_cxi_mask_signal_bit_is_a_good_pixel_and_other_bits_are_bad(tmp_path):
    mask = np.zeros((16, 16), np.uint32)
    mask[0, 0] = 0x1000  # "signal above background": good
    mask[1, 1] = 0x1  # invalid
    mask[2, 2] = 0x1001  # invalid and above background: bad
    source = write_cxi(tmp_path / "s.cxi", mask=mask)
    result = import_file("cxi", source, tmp_path / "o.npz")
    with np.load(result.output) as out:
        assert np.argwhere(out["mask"] == 0).tolist() == [[1, 1], [2, 2]]
        assert out["diffraction"][:, 0, 0].all()


def test_cxi_illumination_is_the_probe_times_the_normalisation(tmp_path):
    probe = (np.arange(256).reshape(16, 16) * (1 - 1j)).astype(np.complex64)
    result = import_file("cxi", write_cxi(tmp_path / "s.cxi", probe=probe), tmp_path / "o.npz")
    with np.load(result.output) as out:
        np.testing.assert_allclose(out["probeGuess"], probe * result.scale, rtol=1e-6)


def test_cxi_negative_values_and_the_integer_maximum_become_zero(tmp_path):
    data = np.full((12, 16, 16), 40, np.int32)
    data[0, 3, 3] = -2  # Pilatus-style error code
    data[1, 4, 4] = np.iinfo(np.int32).max  # overflow code
    result = import_file("cxi", write_cxi(tmp_path / "s.cxi", data=data), tmp_path / "o.npz")
    with np.load(result.output) as out:
        assert out["diffraction"][0, 3, 3] == 0 and out["diffraction"][1, 4, 4] == 0
    notes = json.loads(result.sidecar.read_text())["transformations"]
    assert "entry_1/data_1/data: 1 negative value(s) set to 0" in notes
    assert (
        "entry_1/data_1/data: 1 value(s) at the int32 maximum 2147483647 (overflow/invalid "
        "code) set to 0" in notes
    )


def test_cxi_without_h5py_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    source = tmp_path / "s.cxi"
    source.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` raises ImportError
    out = tmp_path / "o.npz"
    assert main(["ptycho", "import", "--format", "cxi", str(source), "--output", str(out)]) == 2
    assert "install it with pip install 'trainset[ptycho]'" in capsys.readouterr().err


def test_check_of_a_raw_tike_file_points_to_the_import(tmp_path, capsys):
    source = atomic_write_npz(tmp_path / "t.npz", tike_arrays())
    assert main(["ptycho", "check", str(source)]) == 1
    assert (
        "hint: keys data, scan are a tike ptychography file; convert it with "
        "`trainset ptycho import --format tike FILE --output OUT`" in capsys.readouterr().out
    )


def test_check_of_a_cxi_file_points_to_the_import(tmp_path, capsys):
    source = write_cxi(tmp_path / "s.cxi")
    assert main(["ptycho", "check", str(source)]) == 2
    assert (
        "not an NPZ file; a CXI file is read by `trainset ptycho import --format cxi` "
        "(expected an NPZ (zip) archive, found an HDF5 file)" in capsys.readouterr().err
    )


def test_check_names_the_rule_and_value_a_real_unnormalised_file_breaks(
    tike_real, tmp_path, capsys
):
    """The tike counts as amplitudes without PtychoPINN's normalisation: max sqrt(963) >= 10."""
    with np.load(tike_real) as raw:
        amplitude = np.sqrt(np.fft.fftshift(raw["data"][0], axes=(-2, -1)))
        naive = {
            "diffraction": amplitude.astype(np.float32),
            "objectGuess": np.ones((463, 460), np.complex64),
            "probeGuess": raw["probe"].reshape(128, 128),
            "xcoords": raw["scan"][0, :, 1].astype(np.float64) + 230,
            "ycoords": raw["scan"][0, :, 0].astype(np.float64) + 230,
        }
    path = atomic_write_npz(tmp_path / "naive.npz", naive)
    capsys.readouterr()
    assert main(["ptycho", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"diffraction: max: expected values < 10, found max {np.sqrt(963.0):.6g}" in out
    assert "FAIL (1 problem(s))" in out
