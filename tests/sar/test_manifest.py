import json

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.sar.manifest import FORMAT, Manifest, ShardEntry, patch_table, write_manifest
from trainset.store import sha256_file

COLUMNS: dict[str, list[int] | list[float | None]] = {
    "source": [0, 0, 1, 1, 1],
    "band": [1, 2, 1, 2, 1],
    "row": [0, 0, 64, 64, 128],
    "col": [0, 32, 0, 32, 0],
    "valid_fraction": [1.0, 0.5, None, 0.25, 0.125],
}


def v1_dict():
    """A manifest as today's (version 1) tiling wrote it: per-patch JSON lists."""
    return {
        "format": FORMAT,
        "version": 1,
        "patch_size": 32,
        "stride": 32,
        "units": "amplitude",
        "dtype": "float32",
        "channels": 1,
        "vmin": -20.0,
        "vmax": 5.0,
        "shards": [
            {"path": "shard_00000.npy", "count": 3},
            {"path": "shard_00001.npy", "count": 2},
        ],
        "patches": COLUMNS,
        "sources": [{"path": "a.tif"}, {"path": "b.tif"}],
    }


def test_version_1_manifest_with_json_lists_still_loads(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(v1_dict()))
    m = Manifest.open(tmp_path)
    assert m.patches["row"].tolist() == COLUMNS["row"]
    assert m.source_of_patches().tolist() == COLUMNS["source"]
    assert np.isnan(m.patches["valid_fraction"][2]) and m.patches["valid_fraction"][3] == 0.25
    assert (m.num_patches, m.counts(), m.units, m.vmin) == (5, [3, 2], "amplitude", -20.0)


def test_written_manifest_keeps_the_table_in_an_npy_named_by_its_sha256(tmp_path):
    path = write_manifest(tmp_path, v1_dict())
    data = json.loads(path.read_text())
    table = tmp_path / data["patches"]["path"]
    assert data["version"] == 2 and data["patches"]["count"] == 5
    assert table.name == f"patches-{sha256_file(table)[:16]}.npy"
    assert data["patches"]["sha256"] == sha256_file(table)
    on_disk = np.load(table, allow_pickle=False)
    assert on_disk["col"].tolist() == COLUMNS["col"] and on_disk.dtype.names[-1] == "valid_fraction"


def test_rewritten_manifest_reads_back_every_column(tmp_path):
    write_manifest(tmp_path, v1_dict())
    m = Manifest.open(tmp_path / "manifest.json")
    for key in ("source", "band", "row", "col"):
        assert m.patches[key].tolist() == COLUMNS[key]
    want = np.array([np.nan if v is None else v for v in COLUMNS["valid_fraction"]], np.float32)
    np.testing.assert_array_equal(m.patches["valid_fraction"], want)
    assert [s.path for s in m.shards] == ["shard_00000.npy", "shard_00001.npy"]


def test_writing_a_new_table_removes_the_old_one(tmp_path):
    write_manifest(tmp_path, v1_dict())
    m = Manifest.open(tmp_path)
    m.patches = patch_table({**COLUMNS, "row": [1, 2, 3, 4, 5]}, 5)
    m.write(tmp_path)
    assert [p.name for p in tmp_path.glob("patches-*.npy")] == [m.patches_file]
    assert Manifest.open(tmp_path).patches["row"].tolist() == [1, 2, 3, 4, 5]


def test_table_shorter_than_the_shards_is_an_input_error(tmp_path):
    write_manifest(tmp_path, v1_dict())
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["shards"][0]["count"] = 4
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(
        InputError,
        match=r"patches-\w+\.npy: key 'patches\.count': per-patch table has the wrong length "
        r"\(expected 6 rows \(the shards' patches\), found 5\)",
    ):
        Manifest.open(tmp_path)


def test_missing_table_is_an_input_error(tmp_path):
    write_manifest(tmp_path, v1_dict())
    for p in tmp_path.glob("patches-*.npy"):
        p.unlink()
    with pytest.raises(InputError, match=r"key 'patches\.path': per-patch table is missing"):
        Manifest.open(tmp_path)


def test_table_that_does_not_match_the_shards_is_not_written(tmp_path):
    m = Manifest(
        root=tmp_path,
        patch_size=8,
        dtype="float32",
        shards=[ShardEntry("shard_00000.npy", 3, None)],
        patches=patch_table(COLUMNS, 5),
    )
    with pytest.raises(InputError, match=r"per-patch table does not match the shards"):
        m.write(tmp_path)
    assert list(tmp_path.iterdir()) == []
