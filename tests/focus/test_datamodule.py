import shutil
from typing import Any

import pytest
import torch

from tests.loading.quiet_trainer import quiet_trainer
from trainset.errors import InputError
from trainset.focus.clips import ClipSampler, FocusClipDataset, collate_fn
from trainset.focus.datamodule import FocusDataModule
from trainset.focus.pack import pack_dataset
from trainset.testing.clip_scenes import write_scene


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Train scenes alpha (6 frames) and beta (5), val gamma (5), test delta (4)."""
    base = tmp_path_factory.mktemp("scenes")
    write_scene(base, "alpha", "train", n_frames=6)
    write_scene(base, "beta", "train", n_frames=5)
    write_scene(base, "gamma", "val", n_frames=5)
    write_scene(base, "delta", "test", n_frames=4)
    return base


@pytest.fixture
def root(template, tmp_path):
    shutil.copytree(template, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture(scope="module")
def packed_template(template, tmp_path_factory):
    base = tmp_path_factory.mktemp("packed")
    shutil.copytree(template, base, dirs_exist_ok=True)
    pack_dataset(base)
    return base


def copied(batch):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def assert_same_batch(got, want):
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == got[key].dtype and torch.equal(value, got[key]), key
        else:
            assert value == got[key], key


def reference(root, split, batch_size, epoch, *, roi="full", drop_last=True, seed=0, **kw):
    """The clips of ``split`` in ClipSampler's order of ``epoch``, read one by one from the plan's
    files and collated: what every loader of the datamodule must give."""
    ds = FocusClipDataset(root, split, roi=roi, seed=seed, packed=False, **kw)
    ds.set_epoch(epoch)
    order = ClipSampler(ds, shuffle=split == "train", seed=seed).order(epoch)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    return [
        collate_fn([ds[int(i)] for i in order[a : min(a + batch_size, stop)]])
        for a in range(0, stop, batch_size)
    ]


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("packed", [False, True])
def test_train_batches_equal_the_collated_clips_for_any_thread_count(
    template, packed_template, threads, packed
):
    root = packed_template if packed else template
    dm = FocusDataModule(root, batch_size=3, clip_len=2, roi="random", seed=5, threads=threads)
    got = [copied(b) for b in dm.train_dataloader()]
    want = reference(template, "train", 3, 0, roi="random", seed=5, clip_len=2)
    assert len(got) == len(want) == 3  # (3 + 2) starts x 2 sets = 10 clips, batches of 3
    for g, w in zip(got, want):
        assert_same_batch(g, w)


def test_worker_processes_give_the_same_batches_as_threads(packed_template):
    kw: dict[str, Any] = {"batch_size": 3, "clip_len": 2, "roi": "random", "seed": 5}
    threaded = [copied(b) for b in FocusDataModule(packed_template, **kw).train_dataloader()]
    workers = list(FocusDataModule(packed_template, num_workers=2, **kw).train_dataloader())
    assert len(threaded) == len(workers) == 3
    for g, w in zip(workers, threaded):
        assert_same_batch(g, w)


def test_clip_batches_are_batch_time_channel_height_width(template):
    batch = next(iter(FocusDataModule(template, batch_size=2, clip_len=3).train_dataloader()))
    assert batch["frames"].shape == batch["bokeh"].shape == (2, 3, 3, 8, 12)
    assert batch["focus"].shape == batch["depth"].shape == (2, 3, 1, 8, 12)
    assert batch["roi"].shape == (2, 4) and batch["set"].dtype == torch.int64


@pytest.mark.parametrize(("split", "scenes"), [("val", {"gamma"}), ("test", {"delta"})])
def test_val_and_test_loaders_hold_their_split_in_order(template, split, scenes):
    dm = FocusDataModule(template, batch_size=2, clip_len=2)
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    got = [copied(b) for b in loader]
    assert {s for b in got for s in b["scene_id"]} == scenes
    want = reference(template, split, 2, 0, drop_last=False, clip_len=2)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_same_batch(g, w)


def test_every_validation_pass_starts_at_the_first_batch(template):
    loader = FocusDataModule(template, batch_size=1, clip_len=2).val_dataloader()
    it = iter(loader)
    next(it)  # a sanity check stops early ...
    it.close()
    starts = [b["start"].item() for b in loader]  # ... and validation still sees every clip
    assert starts == [0, 2, 0, 2] and len(loader) == 4


def test_train_loader_moves_to_the_next_epoch_on_each_pass(template):
    loader = FocusDataModule(template, batch_size=2, clip_len=2, seed=1).train_dataloader()
    first = [b["start"].tolist() + b["set"].tolist() for b in loader]
    second = [copied(b) for b in loader]
    assert loader.state_dict()["epoch"] == 2
    want = reference(template, "train", 2, 1, seed=1, clip_len=2)
    for g, w in zip(second, want):
        assert_same_batch(g, w)
    assert first != [b["start"].tolist() + b["set"].tolist() for b in second]


def test_pack_true_packs_on_prepare_data_and_reads_the_packs(root):
    dm = FocusDataModule(root, clip_len=2, pack=True)
    dm.prepare_data()
    assert (root / "alpha" / "packed" / "pack.json").is_file()
    ds = dm.train_dataset
    assert all(ds._pack(k) is not None for k in range(len(ds.scenes)))


def test_packed_true_without_packs_is_refused(root):
    with pytest.raises(InputError, match="no current pack; run `trainset focus pack`"):
        FocusDataModule(root, clip_len=2, packed=True).setup()


def test_no_train_clip_is_an_input_error(root):
    with pytest.raises(InputError, match="no training clips"):
        FocusDataModule(root, clip_len=7).train_dataloader()


def test_scenes_of_different_sizes_in_one_loader_are_refused(root):
    write_scene(root, "wide", "train", n_frames=4, h=8, w=16)
    loader = FocusDataModule(root, batch_size=2, clip_len=2, threads=1).train_dataloader()
    with pytest.raises(InputError, match=r"scene \w+ frame \d: clip size differs from the batch's"):
        list(loader)


def test_recycle_off_gives_batches_that_later_ones_do_not_touch(template):
    loader = FocusDataModule(template, batch_size=1, clip_len=2, recycle=False).train_dataloader()
    batches = list(loader)
    want = reference(template, "train", 1, 0, clip_len=2)
    for g, w in zip(batches, want, strict=True):
        assert_same_batch(g, w)


def test_resume_mid_epoch_gives_the_remaining_batches(template):
    kw: dict[str, Any] = {"batch_size": 2, "clip_len": 2, "seed": 3}
    loader = FocusDataModule(template, **kw).train_dataloader()
    it = iter(loader)
    [next(it) for _ in range(2)]
    state = dict(loader.state_dict())
    rest = [copied(b) for b in it]
    resumed = FocusDataModule(template, threads=1, **kw).train_dataloader()
    resumed.load_state_dict(state)
    again = [copied(b) for b in resumed]
    assert (state["epoch"], state["batch"]) == (0, 2) and len(again) == len(rest) == 3
    for g, w in zip(again, rest):
        assert_same_batch(g, w)


def test_datamodule_is_a_plain_object_without_lightning(template):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['lightning'] = None\n"
        "from trainset.focus.datamodule import FocusDataModule\n"
        f"dm = FocusDataModule({str(template)!r}, batch_size=2, clip_len=2)\n"
        "print(FocusDataModule.__mro__[1].__name__, len(dm.train_dataloader()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["object", "5"]


def test_lightning_fit_runs_one_epoch_over_every_train_clip(template, tmp_path):
    pytest.importorskip("lightning")
    import lightning

    seen = []

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            seen.append(
                list(zip(batch["scene_id"], batch["set"].tolist(), batch["start"].tolist()))
            )
            return (batch["frames"].mean() * self.w).sum()

        def validation_step(self, batch, batch_idx):
            self.log("v", batch["focus"].mean(), batch_size=len(batch["scene_id"]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = FocusDataModule(template, batch_size=2, clip_len=2)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Tiny(), datamodule=dm)
    want = reference(template, "train", 2, 0, clip_len=2)
    assert seen == [list(zip(w["scene_id"], w["set"].tolist(), w["start"].tolist())) for w in want]
    assert trainer.global_step == 5


def test_lightning_recreates_the_worker_loaders_clip_sampler_for_its_rank(template):
    pytest.importorskip("lightning")
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from trainset.focus.clip_loader import ClipBatchSampler

    dm = FocusDataModule(template, batch_size=2, clip_len=2, seed=4, num_workers=1)
    # What Trainer does under DDP: request the loader with the init arguments recorded ...
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = dm.train_dataloader()
    # ... then re-create it around the DistributedSampler of this process's rank.
    dist: DistributedSampler[Any] = DistributedSampler(
        loader.dataset, num_replicas=2, rank=1, shuffle=True
    )
    sampler = _update_dataloader(loader, dist, mode=RunningStage.TRAINING).batch_sampler
    assert isinstance(sampler, ClipBatchSampler)
    assert (sampler.clips.rank, sampler.clips.world_size, sampler.seed) == (1, 2, 4)
    want = ClipSampler(dm.train_dataset, seed=4, rank=1, world_size=2).order(0)
    got = [sampler.batch(0, j).indices.tolist() for j in range(len(sampler))]
    assert got == [want[0:2].tolist(), want[2:4].tolist()] and sampler.drop_last
