"""LazyPatchDataset and SARDataModule on trainset.loading: batches, augmentation, workers."""

from typing import Any

import numpy as np
import pytest
import torch

from tests.loading.quiet_trainer import quiet_trainer
from trainset.errors import InputError
from trainset.loading import EpochSampler, d4_codes
from trainset.sar.datamodule import SARDataModule
from trainset.sar.datasets import LazyPatchDataset
from trainset.testing.patch_sets import augmented, make_patch_set, records


def test_lazy_batch_is_the_d4_of_the_shard_records(tmp_path):
    root = make_patch_set(tmp_path, [7, 6])
    ds = LazyPatchDataset(root, augment=True, shuffle_seed=None, aug_seed=5)
    ds.set_epoch(2)
    got = torch.stack(ds.__getitems__([3, 12, 0])).numpy()
    np.testing.assert_array_equal(got, augmented(records(root), np.array([3, 12, 0]), 5, 2))


def test_stacked_bands_of_a_patch_get_the_same_flip(tmp_path):
    root = make_patch_set(tmp_path, [5, 4], channels=2)
    ds = LazyPatchDataset(root, augment=True, shuffle_seed=None, aug_seed=1)
    got = torch.stack(ds.__getitems__(list(range(9)))).numpy()
    np.testing.assert_array_equal(got, augmented(records(root, 2), np.arange(9), 1, 0))


def test_float16_shards_become_float32_batches(tmp_path):
    root = make_patch_set(tmp_path, [4, 4], dtype="float16")
    ds = LazyPatchDataset(root, augment=True, shuffle_seed=None)
    got = torch.stack(ds.__getitems__([1, 6]))
    assert got.dtype == torch.float32
    want = augmented(records(root), np.array([1, 6]), 0, 0)
    np.testing.assert_array_equal(got.numpy(), want)


def test_getitem_returns_a_tensor_that_later_reads_do_not_touch(tmp_path):
    root = make_patch_set(tmp_path, [9])
    ds = LazyPatchDataset(root, augment=False, shuffle_seed=None, ring=1)
    first = ds[2]
    for i in range(9):
        ds.__getitems__([i])
    np.testing.assert_array_equal(first.numpy(), records(root)[2])


SETS = {"float32": ([10, 8, 12], 1, "float32"), "float16": ([10, 8, 12], 1, "float16"),
        "two bands": ([5, 4, 6], 2, "float32")}  # fmt: skip


@pytest.mark.parametrize("kind", list(SETS))
@pytest.mark.parametrize(("workers", "threads"), [(0, 1), (0, 2), (0, 4), (2, None)])
def test_datamodule_train_batches_are_the_same_for_any_thread_or_worker_count(
    tmp_path, kind, workers, threads
):
    counts, channels, dtype = SETS[kind]
    root = make_patch_set(tmp_path, counts, channels=channels, dtype=dtype)
    dm = SARDataModule(
        root, val_fraction=0.3, batch_size=4, num_workers=workers, seed=9, threads=threads
    )
    got = [b.clone().numpy() for b in dm.train_dataloader()]
    ids = dm.train_indices
    sampler = EpochSampler(len(ids), 4, seed=9, drop_last=True)
    recs = records(root, channels)
    want = [augmented(recs, ids[sampler.batch(0, k).indices], 9, 0) for k in range(len(sampler))]
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize(("workers", "threads"), [(0, 1), (0, 3), (2, None)])
def test_deferred_codes_are_the_same_for_any_thread_or_worker_count(tmp_path, workers, threads):
    root = make_patch_set(tmp_path, [10, 8, 12])
    dm = SARDataModule(
        root, val_fraction=0.3, batch_size=4, seed=9, augment_on_device=True,
        num_workers=workers, threads=threads,
    )  # fmt: skip
    got = [(b.clone().numpy(), c.clone().numpy()) for b, c in dm.train_dataloader()]
    ids = dm.train_indices
    sampler = EpochSampler(len(ids), 4, seed=9, drop_last=True)
    recs = records(root)
    assert len(got) == len(sampler)
    for k, (batch, codes) in enumerate(got):
        picked = ids[sampler.batch(0, k).indices]
        np.testing.assert_array_equal(batch, recs[picked])
        np.testing.assert_array_equal(codes, d4_codes(9, 0, picked))


def test_every_validation_pass_starts_at_the_first_batch(tmp_path):
    root = make_patch_set(tmp_path, [10, 8, 12])
    loader = SARDataModule(root, val_fraction=0.3, batch_size=2).val_dataloader()
    it = iter(loader)
    next(it)  # a sanity check stops after a batch or two ...
    it.close()
    seen = [b.clone() for b in loader]  # ... and validation still sees every batch
    assert len(seen) == len(loader) == 5


def test_datamodule_moves_to_the_next_epoch_on_each_pass(tmp_path):
    root = make_patch_set(tmp_path, [10, 8, 12])
    dm = SARDataModule(root, val_fraction=0.3, batch_size=4, augment_train=False)
    first = torch.cat([b.clone() for b in dm.train_dataloader()])
    second = torch.cat([b.clone() for b in dm.train_dataloader()])
    assert not torch.equal(first, second)
    dm.train_dataloader().batch_sampler.set_epoch(0)
    assert torch.equal(first, torch.cat([b.clone() for b in dm.train_dataloader()]))


def test_recycled_batches_share_a_small_ring(tmp_path):
    root = make_patch_set(tmp_path, [40, 40, 40])
    dm = SARDataModule(root, val_fraction=0.3, batch_size=2, augment_train=False, threads=2)
    loader = dm.train_dataloader()
    pointers = {b.data_ptr() for b in loader}
    assert len(pointers) == 2 * 2 + 3 < len(loader)  # 2 threads: 4 read ahead, 3 kept


def test_recycle_off_gives_independent_batches(tmp_path):
    root = make_patch_set(tmp_path, [40, 40, 40])
    dm = SARDataModule(root, val_fraction=0.3, batch_size=2, augment_train=False, recycle=False)
    batches = list(dm.train_dataloader())
    assert len({b.data_ptr() for b in batches}) == len(batches)
    ids = dm.train_indices
    order = EpochSampler(len(ids), 2, seed=42, drop_last=True).order(0)
    np.testing.assert_array_equal(torch.cat(batches).numpy(), records(root)[ids[order]])


def test_augment_on_device_yields_codes_that_the_transfer_hook_applies(tmp_path):
    root = make_patch_set(tmp_path, [10, 8, 12])
    fused = SARDataModule(root, val_fraction=0.3, batch_size=4, seed=3)
    deferred = SARDataModule(root, val_fraction=0.3, batch_size=4, seed=3, augment_on_device=True)
    for a, raw in zip(fused.train_dataloader(), deferred.train_dataloader()):
        batch, codes = raw
        assert codes.dtype == torch.uint8 and codes.shape == (4,)
        assert torch.equal(deferred.on_after_batch_transfer((batch, codes), 0), a)


def test_sample_train_batch_is_augmented_with_augment_on_device(tmp_path):
    root = make_patch_set(tmp_path, [10, 8, 12])
    fused = SARDataModule(root, val_fraction=0.3, batch_size=8, seed=3)
    deferred = SARDataModule(root, val_fraction=0.3, batch_size=8, seed=3, augment_on_device=True)
    got = deferred.get_sample_batch("train")
    assert torch.equal(got, fused.get_sample_batch("train"))
    raw = torch.from_numpy(records(root)[deferred.train_indices[:8]])
    assert not torch.equal(got, raw)  # some of the 8 codes are not the identity


def test_transfer_hook_leaves_plain_batches_alone(tmp_path):
    root = make_patch_set(tmp_path, [10, 8, 12])
    dm = SARDataModule(root, val_fraction=0.3, batch_size=4)
    batch = torch.zeros(2, 1, 8, 8)
    assert dm.on_after_batch_transfer(batch, 0) is batch


def test_recycle_off_keeps_deferred_codes(tmp_path):
    root = make_patch_set(tmp_path, [10, 8, 12])
    dm = SARDataModule(root, val_fraction=0.3, batch_size=4, recycle=False, augment_on_device=True)
    batch, codes = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 1, 8, 8) and codes.shape == (4,)


def test_deferred_augmentation_with_a_transform_is_refused(tmp_path):
    root = make_patch_set(tmp_path, [4])
    with pytest.raises(InputError, match="a transform needs the augmentation done first"):
        LazyPatchDataset(root, transform=lambda x: x, defer_augment=True)


def test_lightning_fit_applies_device_augmentation_in_the_hook(tmp_path):
    pytest.importorskip("lightning")
    import lightning

    root = make_patch_set(tmp_path, [10, 8, 12])
    shapes = []

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            shapes.append(tuple(batch.shape))
            return (batch * self.w).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = SARDataModule(root, val_fraction=0.3, batch_size=4, augment_on_device=True)
    quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(Tiny(), datamodule=dm)
    assert shapes == [(4, 1, 8, 8), (4, 1, 8, 8)]


def test_lightning_reinstantiates_the_lazy_sampler_for_its_rank(tmp_path):
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader
    from torch.utils.data.distributed import DistributedSampler

    root = make_patch_set(tmp_path, [10, 8, 12])
    dm = SARDataModule(
        root, val_fraction=0.3, batch_size=2, seed=3, augment_train=False, num_workers=1
    )
    # What Trainer does under DDP (to the DataLoader of num_workers > 0): request the loader with the init arguments recorded ...
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = dm.train_dataloader()
    # ... then re-create it around the DistributedSampler of this process's rank.
    dist: DistributedSampler[Any] = DistributedSampler(
        loader.dataset, num_replicas=2, rank=1, shuffle=True
    )
    ranked = _update_dataloader(loader, dist, mode=RunningStage.TRAINING)
    sampler = ranked.batch_sampler
    assert isinstance(sampler, EpochSampler)
    assert (sampler.rank, sampler.world_size, sampler.seed) == (1, 2, 3)
    assert sampler.drop_last and sampler.shuffle and sampler.n == len(dm.train_indices)
    got = [b[:, 0, 0, 0].numpy() // 1000 for b in ranked]
    want = [dm.train_indices[sampler.batch(0, j).indices] for j in range(len(sampler))]
    assert len(got) == len(want) == len(dm.train_indices) // 2 // 2
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def lightning_module(seen: dict[str, list[list[int]]]) -> Any:
    """A LightningModule that records the patch ids (pixel (0, 0) // 1000) of each batch."""
    import lightning

    class Recorder(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            seen.setdefault("train", []).append((batch[:, 0, 0, 0] // 1000).int().tolist())
            return (batch * self.w).sum()

        def validation_step(self, batch, batch_idx):
            stage = "sanity" if self.trainer.sanity_checking else "val"
            seen.setdefault(stage, []).append((batch[:, 0, 0, 0] // 1000).int().tolist())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Recorder()


def test_lightning_fit_of_one_epoch_sees_every_batch_and_validates_fully(tmp_path):
    pytest.importorskip("lightning")
    root = make_patch_set(tmp_path, [10, 8, 12])
    dm = SARDataModule(root, val_fraction=0.3, batch_size=2, seed=4, augment_train=False)
    seen: dict[str, list[list[int]]] = {}
    quiet_trainer(tmp_path, max_epochs=1).fit(lightning_module(seen), datamodule=dm)
    ids = dm.train_indices
    sampler = EpochSampler(len(ids), 2, seed=4, drop_last=True)
    assert seen["train"] == [ids[sampler.batch(0, k).indices].tolist() for k in range(len(sampler))]
    val = dm.val_indices.tolist()
    assert seen["sanity"] == [val[0:2], val[2:4]]  # Lightning's 2 sanity batches ...
    assert seen["val"] == [val[a : a + 2] for a in range(0, len(val), 2)]  # ... then all of val


def test_lightning_resumes_mid_epoch_from_a_checkpoint(tmp_path):
    pytest.importorskip("lightning")
    import lightning

    root = make_patch_set(tmp_path, [10, 8, 12])
    kw: dict[str, Any] = {"val_fraction": 0.3, "batch_size": 2, "seed": 4, "augment_train": False}
    ckpt = tmp_path / "mid.ckpt"

    class SaveAfterThirdStep(lightning.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3:
                trainer.save_checkpoint(ckpt)  # what a run killed after step 3 leaves

    first: dict[str, list[list[int]]] = {}
    rest: dict[str, list[list[int]]] = {}
    whole = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    whole.callbacks.append(SaveAfterThirdStep())
    whole.fit(lightning_module(first), datamodule=SARDataModule(root, **kw))
    dm = SARDataModule(root, threads=1, **kw)
    resumed = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    resumed.fit(lightning_module(rest), datamodule=dm, ckpt_path=ckpt)
    ids = dm.train_indices
    sampler = EpochSampler(len(ids), 2, seed=4, drop_last=True)
    want = [ids[sampler.batch(0, k).indices].tolist() for k in range(len(sampler))]
    assert first["train"] == want
    assert rest["train"] == want[3:]  # the 4 batches the killed run had not trained on
