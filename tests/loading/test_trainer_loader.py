import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trainset.loading import EpochSampler, ShardReader, ThreadedLoader, TrainerLoader
from trainset.loading.trainer import batch_device, fresh_copy
from trainset.testing.shard_files import write_shards


@pytest.fixture
def loader(tmp_path):
    """A ring loader over 20 records of 4x4 (5 batches of 4), seed 2."""
    reader = ShardReader(write_shards(tmp_path, [12, 8], h=4, w=4))
    return ThreadedLoader(reader, EpochSampler(len(reader), 4, seed=2), threads=2)


def firsts(batches):
    """Record ids (pixel (0, 0) // 1000) of each batch."""
    return [(b[:, 0, 0, 0] // 1000).int().tolist() for b in batches]


def test_trainer_epoch_hook_moves_to_a_new_epoch_from_its_first_batch(loader):
    tl = TrainerLoader(loader)
    it = iter(tl)
    next(it)
    it.close()
    tl.sampler.set_epoch(3)  # what Lightning calls when epoch 3 begins
    assert (tl.state_dict()["epoch"], tl.state_dict()["batch"]) == (3, 0)


def test_trainer_epoch_hook_keeps_the_place_of_a_resumed_epoch(loader):
    tl = TrainerLoader(loader)
    tl.load_state_dict({**tl.state_dict(), "epoch": 1, "batch": 3})
    tl.sampler.set_epoch(1)  # Lightning restores the state, then announces the epoch
    got = firsts(b.clone() for b in tl)
    order = EpochSampler(20, 4, seed=2).order(1)
    assert got == [order[12:16].tolist(), order[16:20].tolist()]


def test_fresh_batches_are_copies_that_later_batches_do_not_touch(loader):
    kept = list(TrainerLoader(loader, fresh=True))
    order = EpochSampler(20, 4, seed=2).order(0)
    assert firsts(kept) == [order[a : a + 4].tolist() for a in range(0, 20, 4)]


def test_fresh_copy_clones_tensors_inside_tuples_and_dicts():
    a, b = torch.zeros(2), torch.ones(3)
    out = fresh_copy({"x": (a, [b]), "id": "s"})
    assert torch.equal(out["x"][0], a) and out["x"][0].data_ptr() != a.data_ptr()
    assert out["x"][1][0].data_ptr() != b.data_ptr() and out["id"] == "s"


def test_a_new_pass_ends_the_threads_of_the_previous_one(loader):
    before = threading.active_count()
    first = iter(loader)
    next(first)
    second = iter(loader)
    next(second)  # starting the second pass halts the first one's threads
    assert threading.active_count() == before + 2
    assert list(first) == []  # the superseded pass stops instead of reading a shared ring
    second.close()
    assert threading.active_count() == before


def test_batch_device_prefers_the_given_device():
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 1)))
    assert batch_device("cpu", trainer) == torch.device("cpu")


def test_batch_device_takes_the_trainers_cuda_device():
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 1)))
    assert batch_device(None, trainer) == torch.device("cuda", 1)


@pytest.mark.parametrize("trainer", [None, SimpleNamespace(strategy=SimpleNamespace(
    root_device=torch.device("cpu")))])  # fmt: skip
def test_batch_device_is_none_without_a_cuda_trainer(trainer):
    assert batch_device(None, trainer) is None


def test_restarting_sampler_starts_every_pass_at_the_first_batch():
    sampler = EpochSampler(10, 3, shuffle=False, restart=True)
    it = iter(sampler)
    next(it)
    it.close()
    assert [b.indices.tolist() for b in sampler] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert np.array_equal(next(iter(sampler)).indices, [0, 1, 2])
