import json
from pathlib import Path

import numpy as np
import pytest

from trainset.cli import main
from trainset.errors import InputError
from trainset.sar.legacy import import_legacy, load_legacy_metadata
from trainset.sar.manifest import load_manifest
from trainset.sar.tiling import QualityFilter, TilingConfig, build_patches
from trainset.sar.verify import verify_patch_files
from trainset.store import NPY_ALIGN, atomic_write_npy


@pytest.fixture
def patch_set(amplitude_tif, tmp_path):
    cfg = TilingConfig(
        patch_size=32, stride=16, units="amplitude", quality=QualityFilter(0, 1, 0), shard_size=40
    )
    return build_patches([amplitude_tif], tmp_path / "set", cfg, show_progress=False).parent


def shard(patch_set, i):
    return patch_set / f"shard_{i:05d}.npy"


def test_sound_set_has_no_failures(patch_set):
    assert verify_patch_files(patch_set) == []
    assert verify_patch_files(patch_set / "manifest.json", deep=True) == []


def test_missing_shard_is_reported(patch_set):
    shard(patch_set, 1).unlink()
    assert verify_patch_files(patch_set) == [(str(shard(patch_set, 1)), "missing shard file")]


def test_shard_with_fewer_patches_is_reported(patch_set):
    data = np.load(shard(patch_set, 0), allow_pickle=False)
    atomic_write_npy(shard(patch_set, 0), data[:38], align=NPY_ALIGN)
    assert verify_patch_files(patch_set) == [
        (str(shard(patch_set, 0)), "record count differs from the manifest (expected 40, found 38)")
    ]


def test_shard_of_wrong_dtype_is_reported(patch_set):
    data = np.load(shard(patch_set, 2), allow_pickle=False)
    atomic_write_npy(shard(patch_set, 2), data.astype(np.float64), align=NPY_ALIGN)
    assert verify_patch_files(patch_set) == [
        (
            str(shard(patch_set, 2)),
            "dtype differs from the manifest (expected float32, found float64)",
        )
    ]


def test_truncated_shard_is_reported(patch_set):
    path = shard(patch_set, 0)
    path.write_bytes(path.read_bytes()[: NPY_ALIGN + 100])
    [(where, message)] = verify_patch_files(patch_set)
    assert where == str(path) and message == (
        f"shard is truncated (expected {NPY_ALIGN + 40 * 32 * 32 * 4} bytes, found {NPY_ALIGN + 100})"
    )


def test_values_outside_unit_range_are_reported(patch_set):
    data = np.load(shard(patch_set, 1), allow_pickle=False)
    data[3, 0, 0], data[5, 1, 1] = 1.5, np.nan
    atomic_write_npy(shard(patch_set, 1), data, align=NPY_ALIGN)
    [(_, message)] = verify_patch_files(patch_set)
    assert message == "1 non-finite value(s); values outside [0, 1]: min 0.0, max 1.5"


def test_deep_check_finds_changed_bytes(patch_set):
    data = np.load(shard(patch_set, 0), allow_pickle=False)
    data[0, 0, 0] = 0.25 if data[0, 0, 0] != 0.25 else 0.5
    atomic_write_npy(shard(patch_set, 0), data, align=NPY_ALIGN)
    assert verify_patch_files(patch_set) == []
    [(where, message)] = verify_patch_files(patch_set, deep=True)
    assert where == str(shard(patch_set, 0)) and message.startswith("sha256 differs")


def test_every_failure_is_listed_by_the_cli(patch_set, capsys):
    shard(patch_set, 0).unlink()
    shard(patch_set, 2).unlink()
    assert main(["sar", "verify", str(patch_set)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL: 2 problem(s)")
    assert "shard_00000.npy: missing shard file" in out and "shard_00002.npy: missing" in out


def test_cli_verify_ok_exits_0(patch_set, capsys):
    assert main(["sar", "verify", str(patch_set), "--deep"]) == 0
    assert "OK" in capsys.readouterr().out


def test_manifest_of_another_format_is_an_input_error(patch_set):
    path = patch_set / "manifest.json"
    data = json.loads(path.read_text())
    data["format"] = "something.else"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="not a SAR patch manifest"):
        verify_patch_files(patch_set)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=99), r"key 'version': unsupported manifest version"),
        (lambda d: d.pop("patch_size"), r"key 'patch_size': required key is missing"),
        (lambda d: d.update(patch_size="32"), r"key 'patch_size': wrong type"),
        (lambda d: d.update(dtype="int8"), r"key 'dtype': unsupported dtype"),
        (lambda d: d["shards"].append({"path": "x.npy"}), r"key 'shards\[\d+\]': bad shard entry"),
        (lambda d: d["shards"][0].update(path="/abs/shard.npy"),
         r"key 'shards\[0\]\.path': shard path must be relative to the manifest"),
        (lambda d: d["patches"].update(path="../t.npy"), r"key 'patches\.path': per-patch table "
         r"must be an \.npy file beside the manifest"),
    ],
)  # fmt: skip
def test_malformed_manifest_is_an_input_error_naming_the_key(patch_set, change, message):
    path = patch_set / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"manifest\.json: " + message):
        verify_patch_files(patch_set)


def make_legacy(tmp_path: Path) -> Path:
    """The plan's layout: per-file shards and a pickled metadata.npy with absolute paths."""
    rng = np.random.default_rng(0)
    root = tmp_path / "legacy"
    root.mkdir()
    index = []
    for i, n in enumerate((3, 5)):
        p = root / f"patches_{i}.npy"
        np.save(p, rng.random((n, 16, 16), dtype=np.float32))
        index.append((str(p), n))
    meta = {"file_index": index, "vmin": -24.5, "vmax": 3.25, "total_patches": 8}
    np.save(root / "metadata.npy", np.array(meta, dtype=object), allow_pickle=True)
    return root / "metadata.npy"


def test_pickled_metadata_without_trust_is_refused(tmp_path):
    meta = make_legacy(tmp_path)
    with pytest.raises(InputError, match=r"refusing to unpickle.*--trust-pickle"):
        load_legacy_metadata(meta)
    with pytest.raises(InputError, match="--trust-pickle"):
        verify_patch_files(meta)


def test_cli_import_legacy_without_trust_exits_2(tmp_path, capsys):
    meta = make_legacy(tmp_path)
    assert main(["sar", "import-legacy", str(meta), "--out", str(tmp_path / "m")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_import_legacy_writes_a_relative_manifest_with_a_declared_shards_root(tmp_path):
    meta = make_legacy(tmp_path)
    path = import_legacy(meta, tmp_path / "converted", trust_pickle=True)
    manifest = load_manifest(path)
    assert manifest.shards_root == "../legacy"
    assert [s.path for s in manifest.shards] == ["patches_0.npy", "patches_1.npy"]
    assert manifest.shard_paths() == [(tmp_path / "legacy" / f"patches_{i}.npy") for i in (0, 1)]
    assert manifest.counts() == [3, 5] and manifest.patch_size == 16
    assert (manifest.vmin, manifest.vmax) == (-24.5, 3.25)
    assert manifest.patches["source"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert verify_patch_files(path, deep=True) == []


def _rewrite_legacy(meta_path, change):
    meta = np.load(meta_path, allow_pickle=True).item()
    change(meta)
    np.save(meta_path, np.array(meta, dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("file_index"), r"metadata\.npy: key 'file_index': legacy metadata must be "
         r"a dict with 'file_index'"),
        (lambda m: m["file_index"].append(("x.npy",)), r"key 'file_index\[2\]': bad file_index "
         r"entry \(expected \(path, count\)"),
        (lambda m: m.update(file_index=[]), r"legacy metadata lists no shard"),
        (lambda m: m["file_index"].append(("gone.npy", 1)), r"gone\.npy: shard listed in legacy "
         r"metadata is missing"),
    ],
)  # fmt: skip
def test_import_legacy_refuses_bad_metadata_and_writes_nothing(tmp_path, change, message):
    meta = make_legacy(tmp_path)
    _rewrite_legacy(meta, change)
    with pytest.raises(InputError, match=message):
        import_legacy(meta, tmp_path / "converted", trust_pickle=True)
    assert not (tmp_path / "converted" / "manifest.json").exists()


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        (np.zeros((3, 16, 8), np.float32), r"patches_0\.npy: legacy shard must be \(N, P, P\)"),
        (np.zeros((4, 16, 16), np.float32), r"patches_0\.npy: key 'file_index': legacy shard "
         r"count differs from metadata \(expected 3, found 4\)"),
        (np.zeros((3, 16, 16), np.float64), r"patches_1\.npy: legacy shards differ in patch size "
         r"or dtype \(expected 16 float64, found 16 float32\)"),
    ],
)  # fmt: skip
def test_import_legacy_refuses_shards_that_disagree_with_the_metadata(tmp_path, shard, message):
    meta = make_legacy(tmp_path)
    np.save(tmp_path / "legacy" / "patches_0.npy", shard)
    with pytest.raises(InputError, match=message):
        import_legacy(meta, tmp_path / "converted", trust_pickle=True)
    assert not (tmp_path / "converted" / "manifest.json").exists()


def test_verify_legacy_metadata_with_trust_reports_count_mismatch(tmp_path):
    meta = make_legacy(tmp_path)
    np.save(tmp_path / "legacy" / "patches_1.npy", np.zeros((4, 16, 16), np.float32))
    assert verify_patch_files(meta, trust_pickle=True) == [
        (
            str(tmp_path / "legacy" / "patches_1.npy"),
            "record count differs from the manifest (expected 5, found 4)",
        )
    ]


def test_cli_patches_builds_a_set(amplitude_tif, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "sar",
            "patches",
            str(amplitude_tif),
            "--out",
            str(out),
            "--patch_size",
            "32",
            "--stride",
            "32",
            "--units",
            "amplitude",
            "--clip",
            "fixed:20,70",
            "--quality",
            "0,1,0",
            "--shard-size",
            "10",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.startswith("30 patches in 3 shard(s), vmin 20.0000 dB")
    assert verify_patch_files(out) == []


def test_cli_patches_on_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "x.tif"
    bad.write_text("not a tiff")
    assert main(["sar", "patches", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable raster" in capsys.readouterr().err


def test_cli_bad_quality_text_exits_2(amplitude_tif, tmp_path, capsys):
    assert (
        main(
            ["sar", "patches", str(amplitude_tif), "--out", str(tmp_path / "o"), "--quality", "0.1"]
        )
        == 2
    )
    assert "expected 3 comma-separated numbers" in capsys.readouterr().err
