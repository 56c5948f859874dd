import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.loading.quiet_trainer import quiet_trainer
from trainset.cli import main
from trainset.errors import InputError
from trainset.sar.datamodule import SARDataModule, split_patches
from trainset.sar.datasets import LazyPatchDataset
from trainset.sar.manifest import load_manifest
from trainset.testing.sar_rasters import speckle_amplitude_dn, speckle_intensity, write_geotiff


@pytest.fixture(scope="module")
def amplitude_set(tmp_path_factory):
    """`trainset sar patches` on three 512 x 512 uint16 amplitude GeoTIFFs (nodata 0)."""
    root = tmp_path_factory.mktemp("amp")
    tifs = []
    for i in range(3):
        dn = speckle_amplitude_dn((512, 512), seed=20 + i)
        dn[:, :40] = 0
        tifs.append(str(write_geotiff(root / f"s1_{i}.tif", dn, nodata=0, block=256)))
    code = main(["sar", "patches", *tifs, "--out", str(root / "patches"), "--units", "amplitude"])
    assert code == 0
    return root / "patches"


@pytest.fixture(scope="module")
def intensity_set(tmp_path_factory):
    """`trainset sar patches` on three 384 x 640 float32 intensity GeoTIFFs (nodata NaN)."""
    root = tmp_path_factory.mktemp("int")
    tifs = []
    for i in range(3):
        inten = speckle_intensity((384, 640), seed=30 + i)
        inten[:16, :16] = np.nan
        tifs.append(str(write_geotiff(root / f"i_{i}.tif", inten, nodata=float("nan"), block=128)))
    code = main(["sar", "patches", *tifs, "--out", str(root / "patches"), "--shard-size", "5"])
    assert code == 0
    return root / "patches"


@pytest.mark.parametrize("which", ["amplitude_set", "intensity_set"])
def test_plan_verification_block(which, request):
    dm = SARDataModule(request.getfixturevalue(which), batch_size=8, lazy=True)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (8, 1, 256, 256), f"Wrong shape: {batch.shape}"
    assert batch.dtype == torch.float32, f"Wrong dtype: {batch.dtype}"
    assert batch.min() >= 0 and batch.max() <= 1, "Values out of range"


def test_sample_batch_sizes_and_params(amplitude_set):
    dm = SARDataModule(amplitude_set, batch_size=8)
    manifest = load_manifest(amplitude_set)
    assert dm.get_sample_batch("train").shape == (8, 1, 256, 256)
    assert dm.train_size + dm.val_size == manifest.num_patches
    assert dm.preprocessing_params == {
        "vmin": manifest.vmin,
        "vmax": manifest.vmax,
        "units": "amplitude",
    }


def test_by_source_split_shares_no_patch_and_no_source(intensity_set):
    dm = SARDataModule(intensity_set, val_fraction=0.3)
    dm.setup("fit")
    sources = load_manifest(intensity_set).source_of_patches()
    assert not set(dm.train_indices) & set(dm.val_indices)
    assert not set(sources[dm.train_indices]) & set(sources[dm.val_indices])
    assert sorted([*dm.train_indices, *dm.val_indices]) == list(range(len(sources)))
    val = dm.val_dataset
    assert isinstance(val, LazyPatchDataset)
    assert set(val.sources()) == set(sources[dm.val_indices])


def test_random_split_is_disjoint_and_sized_by_fraction():
    train, val = split_patches(np.zeros(50, np.int64), 0.1, seed=3, policy="random")
    assert len(val) == 5 and len(train) == 45
    assert not set(train) & set(val) and sorted([*train, *val]) == list(range(50))


def test_by_source_split_moves_whole_sources_until_the_fraction():
    groups = np.repeat(np.arange(10), 10)
    train, val = split_patches(groups, 0.25, seed=0)
    assert len(val) == 30 and len(train) == 70
    assert not set(groups[train]) & set(groups[val])


def test_by_source_split_keeps_a_training_source():
    train, val = split_patches(np.array([0, 0, 1]), 0.9, seed=0)
    assert len(train) > 0 and len(val) > 0


def test_by_source_split_needs_two_sources():
    with pytest.raises(InputError, match="at least two source rasters"):
        split_patches(np.zeros(10, np.int64), 0.1, seed=0)


def test_unknown_split_policy_is_an_input_error(amplitude_set):
    with pytest.raises(InputError, match="unknown split policy"):
        SARDataModule(amplitude_set, split="spatial")


def test_different_seeds_give_different_random_splits():
    a = split_patches(np.zeros(100, np.int64), 0.2, seed=1, policy="random")[1]
    b = split_patches(np.zeros(100, np.int64), 0.2, seed=2, policy="random")[1]
    assert a.tolist() != b.tolist()


SCRIPT = """
import sys
sys.modules["lightning"] = None  # keep the subprocess light: the plain-object base
from trainset.sar.datamodule import SARDataModule
{body}
print(fingerprint(SARDataModule, sys.argv[1]))
"""


def fingerprint(datamodule_cls, path):
    """Split indices of both policies and a hash of every training batch, in order."""
    import hashlib

    lines = []
    for policy in ("by_source", "random"):
        dm = datamodule_cls(path, val_fraction=0.3, batch_size=4, augment_train=False, split=policy)
        h = hashlib.sha256()
        for batch in dm.train_dataloader():
            h.update(batch.numpy().tobytes())
        lines.append(
            f"{policy} {dm.train_indices.tolist()} {dm.val_indices.tolist()} {h.hexdigest()}"
        )
    return "\n".join(lines)


def test_same_seed_gives_same_split_and_order_in_two_processes(intensity_set):
    body = inspect.getsource(fingerprint)
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PATH": os.environ.get("PATH", "")}
    other = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(body=body), str(intensity_set)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**env, "PYTHONHASHSEED": "12345"},
    ).stdout
    here = fingerprint(SARDataModule, str(intensity_set))
    assert other.strip() == here and len(here.splitlines()) == 2


def test_train_order_is_shuffled_and_val_order_is_not(intensity_set):
    dm = SARDataModule(intensity_set, val_fraction=0.3, batch_size=2, augment_train=False)
    val = torch.cat(list(dm.val_dataloader()))
    val_set = dm.val_dataset
    assert isinstance(val_set, LazyPatchDataset)
    assert torch.equal(val, torch.stack(val_set.__getitems__(list(range(dm.val_size)))))
    first = next(iter(dm.train_dataloader()))
    train_set = dm.train_dataset
    assert isinstance(train_set, LazyPatchDataset)
    assert not torch.equal(first, torch.stack(train_set.__getitems__([0, 1])))


def test_in_memory_mode_gives_the_same_val_data(intensity_set):
    lazy = SARDataModule(intensity_set, val_fraction=0.3, batch_size=4)
    eager = SARDataModule(intensity_set, val_fraction=0.3, batch_size=4, lazy=False)
    assert torch.equal(lazy.get_sample_batch("val"), eager.get_sample_batch("val"))


def test_max_samples_truncates_both_splits(intensity_set):
    dm = SARDataModule(intensity_set, val_fraction=0.3, max_samples=3)
    assert (dm.train_size, dm.val_size) == (3, 3)


def test_single_npy_file_with_random_split(tmp_path):
    patches = np.random.default_rng(0).random((20, 16, 16), dtype=np.float32)
    np.save(tmp_path / "patches.npy", patches)
    dm = SARDataModule(tmp_path / "patches.npy", batch_size=4, split="random", augment_train=False)
    assert (dm.train_size, dm.val_size) == (18, 2)
    assert dm.preprocessing_params is None
    np.testing.assert_array_equal(dm.get_sample_batch("val")[:, 0].numpy(), patches[dm.val_indices])


def test_single_npy_file_with_by_source_split_is_an_input_error(tmp_path):
    np.save(tmp_path / "patches.npy", np.zeros((4, 8, 8), np.float32))
    with pytest.raises(InputError, match="use split='random'"):
        SARDataModule(tmp_path / "patches.npy").setup()


def test_unknown_sample_split_is_an_input_error(amplitude_set):
    with pytest.raises(InputError, match="unknown split"):
        SARDataModule(amplitude_set).get_sample_batch("test")


def test_manifest_on_disk_is_json_with_one_key_per_line(amplitude_set):
    text = (amplitude_set / "manifest.json").read_text()
    data = json.loads(text)
    assert text.count("\n") == len(data) + 2


def test_lightning_fit_runs_one_step(intensity_set, tmp_path):
    pytest.importorskip("lightning")
    import lightning

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
            self.steps = 0

        def training_step(self, batch, batch_idx):
            assert batch.shape == (4, 1, 256, 256)
            self.steps += 1
            return torch.nn.functional.mse_loss(self.conv(batch), batch)

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.nn.functional.mse_loss(self.conv(batch), batch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = SARDataModule(intensity_set, val_fraction=0.3, batch_size=4)
    model = Tiny()
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    assert model.steps == 1 and trainer.global_step == 1
