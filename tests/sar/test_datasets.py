import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from trainset.errors import InputError
from trainset.sar.datasets import LazyPatchDataset, SARPatchDataset, augment_patches
from trainset.sar.manifest import load_manifest
from trainset.sar.tiling import ClipSpec, QualityFilter, TilingConfig, build_patches
from trainset.store import NPY_ALIGN, atomic_write_npy
from trainset.testing.sar_rasters import speckle_intensity, write_geotiff

KEEP_ALL = QualityFilter(0.0, 1.0, 0.0)


def make_set(tmp_path, name="set", bands=1, **kw):
    rasters = [
        write_geotiff(
            tmp_path / f"{name}_{i}.tif",
            np.stack([speckle_intensity((64, 80), 10 * i + b) for b in range(bands)]),
        )
        for i in range(2)
    ]
    cfg = TilingConfig(
        patch_size=32, stride=16, quality=KEEP_ALL, clip=ClipSpec("fixed", (-25.0, 5.0)), **kw
    )
    return build_patches(rasters, tmp_path / name, cfg, show_progress=False).parent


def records(set_dir):
    m = load_manifest(set_dir)
    return np.concatenate([np.load(p, allow_pickle=False) for p in m.shard_paths()])


def d4_images(x):
    return [np.rot90(f, k) for f in (x, x[:, ::-1]) for k in range(4)]


def test_sar_patch_dataset_returns_channel_first_float32():
    patches = np.linspace(0, 1, 2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4)
    ds = SARPatchDataset(patches, augment=False)
    item = ds[1]
    assert len(ds) == 2 and item.shape == (1, 4, 4) and item.dtype == torch.float32
    np.testing.assert_array_equal(item[0].numpy(), patches[1].astype(np.float32))


def test_sar_patch_dataset_rejects_wrong_shape():
    with pytest.raises(InputError, match=r"patches must be 3-D \(expected \(N, H, W\)"):
        SARPatchDataset(np.zeros((2, 1, 4, 4), np.float32))


def test_sar_patch_dataset_rejects_values_outside_unit_range():
    with pytest.raises(InputError, match="patch values must lie in"):
        SARPatchDataset(np.full((1, 4, 4), 1.5, np.float32))


def test_augmentation_gives_a_flip_rotation_of_each_patch():
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    torch.manual_seed(0)
    out = augment_patches(np.stack([x] * 32)[:, None])
    seen = set()
    for item in out[:, 0]:
        matches = [i for i, img in enumerate(d4_images(x)) if np.array_equal(img, item)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 4


def test_augmentation_is_reproducible_with_torch_seed():
    x = np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)
    torch.manual_seed(5)
    a = augment_patches(x)
    torch.manual_seed(5)
    np.testing.assert_array_equal(a, augment_patches(x))


def test_lazy_dataset_items_are_the_shard_records(tmp_path):
    set_dir = make_set(tmp_path, shard_size=7)
    ds = LazyPatchDataset(set_dir, augment=False, shuffle_seed=None)
    recs = records(set_dir)
    assert len(ds) == len(recs) == 2 * 3 * 4
    assert [c for _, c in ds.file_index] == [7, 7, 7, 3] and ds.cumsum == [0, 7, 14, 21, 24]
    for i in (0, 6, 7, 23):
        np.testing.assert_array_equal(ds[i][0].numpy(), recs[i])


def test_lazy_dataset_shuffle_is_the_plans_permutation(tmp_path):
    set_dir = make_set(tmp_path)
    ds = LazyPatchDataset(set_dir / "manifest.json", augment=False, shuffle_seed=42)
    perm = np.random.default_rng(42).permutation(24)
    recs = records(set_dir)
    np.testing.assert_array_equal(ds[3][0].numpy(), recs[perm[3]])


def test_getitems_reads_a_whole_batch_like_getitem(tmp_path):
    ds = LazyPatchDataset(make_set(tmp_path), augment=False, shuffle_seed=1)
    batch = ds.__getitems__([5, 0, 17, 5])
    assert [tuple(t.shape) for t in batch] == [(1, 32, 32)] * 4
    for t, i in zip(batch, [5, 0, 17, 5]):
        assert torch.equal(t, ds[i])


def test_float16_shards_give_float32_items(tmp_path):
    ds = LazyPatchDataset(make_set(tmp_path, dtype="float16"), augment=False)
    assert ds[0].dtype == torch.float32


def test_stacked_bands_give_multichannel_items(tmp_path):
    set_dir = make_set(tmp_path, bands=2, band_mode="stack")
    ds = LazyPatchDataset(set_dir, augment=False, shuffle_seed=None)
    recs = records(set_dir)
    assert len(ds) == 24 and ds[3].shape == (2, 32, 32)
    np.testing.assert_array_equal(ds[3].numpy(), recs[6:8])


def test_indices_restrict_the_dataset(tmp_path):
    ds = LazyPatchDataset(make_set(tmp_path), augment=False, shuffle_seed=None, indices=[4, 9])
    assert len(ds) == 2 and ds.sources().tolist() == [0, 0]
    with pytest.raises(InputError, match="patch index out of range"):
        LazyPatchDataset(tmp_path / "set", indices=[24])


def test_files_are_opened_once_per_process(tmp_path, monkeypatch):
    set_dir = make_set(tmp_path, shard_size=10)
    ds = LazyPatchDataset(set_dir, augment=True)
    shard_paths = {str(p) for p in load_manifest(set_dir).shard_paths()}
    opened = []
    real_open = os.open

    def counting_open(path, *args, **kwargs):
        if str(path) in shard_paths:
            opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    for i in range(len(ds)):
        ds[i]
    ds.__getitems__(list(range(8)))
    assert sorted(opened) == sorted(shard_paths)


def test_forked_workers_read_the_same_batches(tmp_path):
    ds = LazyPatchDataset(make_set(tmp_path, shard_size=10), augment=False)
    ds[0]  # open the descriptors in the parent before forking
    serial = [b for b in DataLoader(ds, batch_size=5)]
    forked = DataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context="fork")
    for a, b in zip(serial, forked, strict=True):
        assert torch.equal(a, b)


def test_shard_shorter_than_manifest_is_an_input_error(tmp_path):
    set_dir = make_set(tmp_path)
    path = load_manifest(set_dir).shard_paths()[0]
    atomic_write_npy(path, np.load(path)[:-1], align=NPY_ALIGN)
    with pytest.raises(InputError, match="record count differs from the manifest"):
        LazyPatchDataset(set_dir)


def make_legacy(tmp_path):
    rng = np.random.default_rng(0)
    index = []
    for i, n in enumerate((3, 4)):
        p = tmp_path / f"patches_{i}.npy"
        np.save(p, rng.random((n, 8, 8), dtype=np.float32))
        index.append((str(p), n))
    np.save(tmp_path / "metadata.npy", np.array({"file_index": index}, dtype=object))
    return tmp_path / "metadata.npy"


def test_lazy_dataset_reads_legacy_metadata_only_when_trusted(tmp_path):
    meta = make_legacy(tmp_path)
    with pytest.raises(InputError, match="--trust-pickle"):
        LazyPatchDataset(meta)
    ds = LazyPatchDataset(meta, augment=False, shuffle_seed=None, trust_pickle=True)
    assert len(ds) == 7 and ds.preprocessing_params is None
    np.testing.assert_array_equal(ds[4][0].numpy(), np.load(tmp_path / "patches_1.npy")[1])
