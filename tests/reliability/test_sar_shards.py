"""Issue 18, items 5 and 14: patch sets whose shards disagree with the manifest, or whose shard
paths leave the set, are refused with a clear error before anything is read."""

import json
import os

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.sar.datamodule import SARDataModule
from trainset.sar.datasets import LazyPatchDataset
from trainset.sar.legacy import import_legacy
from trainset.sar.verify import verify_patch_files
from trainset.store import NPY_ALIGN, atomic_write_npy
from trainset.testing.patch_sets import make_patch_set

BAD_SHARDS = {
    "uint8": (
        np.full((10, 8, 8), 255, np.uint8),
        r"key 'dtype': dtype differs from the manifest \(expected float32, found uint8\)",
    ),
    "smaller records": (
        np.zeros((10, 4, 4), np.float32),
        r"key 'shards\[0\]': records have the wrong shape \(expected \(N, 8, 8\), found \(10, 4, 4\)\)",
    ),
    "complex64": (
        np.zeros((10, 8, 8), np.complex64),
        r"key 'dtype': dtype differs from the manifest \(expected float32, found complex64\)",
    ),
}


@pytest.fixture
def patch_set(tmp_path):
    """A sound set (values in [0, 1]): three shards of 8x8 float32 patches."""
    root = make_patch_set(tmp_path / "set", [10, 8, 12])
    for path in sorted(root.glob("shard_*.npy")):
        atomic_write_npy(path, np.load(path) / np.float32(1e5), align=NPY_ALIGN)
    assert verify_patch_files(root) == []
    return root


def replace_shard(patch_set, array):
    path = patch_set / "shard_00000.npy"
    atomic_write_npy(path, array, align=NPY_ALIGN)
    return path


def edit_manifest(patch_set, change):
    path = patch_set / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("kind", list(BAD_SHARDS))
def test_lazy_dataset_refuses_a_shard_whose_header_disagrees_with_the_manifest(patch_set, kind):
    array, message = BAD_SHARDS[kind]
    path = replace_shard(patch_set, array)
    with pytest.raises(InputError, match=f"^{path}: {message}$"):
        LazyPatchDataset(patch_set)


@pytest.mark.parametrize("kind", list(BAD_SHARDS))
def test_threaded_datamodule_refuses_a_shard_whose_header_disagrees(patch_set, kind):
    array, message = BAD_SHARDS[kind]
    path = replace_shard(patch_set, array)
    with pytest.raises(InputError, match=f"^{path}: {message}$"):
        SARDataModule(patch_set, val_fraction=0.3, batch_size=2).train_dataloader()


def test_verify_and_loader_report_the_same_header_problem(patch_set):
    path = replace_shard(patch_set, BAD_SHARDS["uint8"][0])
    assert verify_patch_files(patch_set) == [
        (str(path), "dtype differs from the manifest (expected float32, found uint8)")
    ]


def test_shard_path_outside_the_set_is_refused_and_verify_says_so(patch_set, tmp_path):
    np.save(tmp_path / "outside.npy", np.zeros((10, 8, 8), np.float32))
    edit_manifest(patch_set, lambda d: d["shards"][0].update(path="../outside.npy"))
    [(where, message)] = verify_patch_files(patch_set)
    assert where == str(tmp_path / "outside.npy")
    assert message.startswith("shard path leaves the set's folder") and "pickle" not in message
    with pytest.raises(InputError, match=r"key 'shards\[0\]\.path': shard path leaves the set"):
        LazyPatchDataset(patch_set)


def test_shard_that_is_not_an_npy_file_is_named_as_such(patch_set):
    (patch_set / "shard_00000.npy").write_text("# notes, not patches\n" * 100)
    assert verify_patch_files(patch_set) == [
        (
            str(patch_set / "shard_00000.npy"),
            "not an .npy file (no .npy magic string at its start)",
        )
    ]


def test_shard_path_without_npy_suffix_is_refused(patch_set):
    (patch_set / "notes.txt").write_text("text")
    edit_manifest(patch_set, lambda d: d["shards"][0].update(path="notes.txt"))
    [(_, message)] = verify_patch_files(patch_set)
    assert message == "not an .npy file (expected .npy, found .txt)"


@pytest.mark.timeout(60)
def test_shard_that_is_a_fifo_is_refused_without_blocking(patch_set):
    fifo = patch_set / "shard_00000.npy"
    fifo.unlink()
    os.mkfifo(fifo)
    with pytest.raises(
        InputError, match=r"not a regular file \(expected a regular file, found a FIFO\)"
    ):
        LazyPatchDataset(patch_set)
    assert verify_patch_files(patch_set) == [
        (str(fifo), "not a regular file (expected a regular file, found a FIFO)")
    ]


def make_legacy(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    index = []
    for i, n in enumerate((3, 4)):
        p = legacy / f"p{i}.npy"
        np.save(p, np.full((n, 8, 8), 0.5, np.float32))
        index.append((str(p), n))
    meta = legacy / "metadata.npy"
    np.save(meta, np.array({"file_index": index}, dtype=object), allow_pickle=True)
    return meta


def test_import_legacy_declares_the_legacy_folder_as_shards_root(tmp_path):
    path = import_legacy(make_legacy(tmp_path), tmp_path / "set", trust_pickle=True)
    data = json.loads(path.read_text())
    assert data["shards_root"] == "../legacy"
    assert [s["path"] for s in data["shards"]] == ["p0.npy", "p1.npy"]
    assert len(LazyPatchDataset(path)) == 7 and verify_patch_files(path) == []


def test_shard_leaving_a_declared_shards_root_is_refused(tmp_path):
    path = import_legacy(make_legacy(tmp_path), tmp_path / "set", trust_pickle=True)
    np.save(tmp_path / "elsewhere.npy", np.zeros((3, 8, 8), np.float32))
    edit_manifest(path.parent, lambda d: d["shards"][0].update(path="../elsewhere.npy"))
    with pytest.raises(InputError, match="shard path leaves the declared shards_root"):
        LazyPatchDataset(path)


def test_manifest_pointing_outside_without_a_declared_root_is_refused(tmp_path):
    """What today's import-legacy wrote: ``../legacy/p0.npy`` and no shards_root."""
    path = import_legacy(make_legacy(tmp_path), tmp_path / "set", trust_pickle=True)

    def undeclare(d):
        d.pop("shards_root")
        for s in d["shards"]:
            s["path"] = "../legacy/" + s["path"]

    edit_manifest(path.parent, undeclare)
    with pytest.raises(InputError, match=r"re-run `trainset sar import-legacy`"):
        LazyPatchDataset(path)
