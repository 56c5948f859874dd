import threading

import numpy as np
import pytest
import torch

from trainset.errors import InputError
from trainset.loading import (
    EpochSampler,
    ShardDataset,
    ShardReader,
    ThreadedLoader,
    d4_codes,
    d4_view,
    shard_dataloader,
)
from trainset.testing.shard_files import write_shards


@pytest.fixture
def square(tmp_path):
    """Shards of 8x8 records: 9 + 14 + 10 = 33 records."""
    return ShardReader(write_shards(tmp_path, [9, 14, 10], h=8, w=8))


def expected_batches(reader, seed, epoch, batch_size, augment):
    sampler = EpochSampler(len(reader), batch_size, seed=seed)
    everything = reader.read(np.arange(len(reader)))
    out = []
    for number in range(len(sampler)):
        b = sampler.batch(epoch, number)
        recs = everything[b.indices]
        if augment:
            recs = np.stack(
                [d4_view(r, int(c)) for r, c in zip(recs, d4_codes(seed, epoch, b.indices))]
            )
        out.append(recs[:, None])
    return out


def threaded(reader, threads, augment="none", seed=7, **kw):
    return ThreadedLoader(
        reader, EpochSampler(len(reader), 4, seed=seed), threads=threads, augment=augment, **kw
    )


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_threaded_batches_equal_the_reference_for_any_thread_count(square, threads):
    got = [b.clone().numpy() for b in threaded(square, threads)]
    want = expected_batches(square, 7, 0, 4, augment=False)
    assert len(got) == len(want) == 9
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_cpu_fused_augmentation_equals_numpy_for_any_thread_count(square, threads):
    got = [b.clone().numpy() for b in threaded(square, threads, augment="cpu")]
    for g, w in zip(got, expected_batches(square, 7, 0, 4, augment=True)):
        np.testing.assert_array_equal(g, w)


def test_device_augmentation_equals_cpu_fused(square):
    cpu = [b.clone() for b in threaded(square, 2, augment="cpu")]
    dev = [b.clone() for b in threaded(square, 2, augment="device", device="cpu")]
    for a, b in zip(cpu, dev):
        assert torch.equal(a, b)


def test_deferred_mode_yields_batch_and_codes(square):
    loader = threaded(square, 2, augment="deferred")
    batch, codes = next(iter(loader))
    sampler = EpochSampler(len(square), 4, seed=7)
    np.testing.assert_array_equal(codes.numpy(), d4_codes(7, 0, sampler.batch(0, 0).indices))
    np.testing.assert_array_equal(batch.numpy()[:, 0], square.read(sampler.batch(0, 0).indices))


def test_batch_stays_intact_after_the_next_one_is_produced(square):
    it = iter(threaded(square, 2, keep=2, prefetch=2))
    first = next(it)
    snapshot = first.clone()
    second = next(it)
    assert first.data_ptr() != second.data_ptr()
    assert torch.equal(first, snapshot)
    it.close()


def test_buffers_are_recycled_across_batches(square):
    loader = threaded(square, 1, keep=1, prefetch=1)
    pointers = [b.data_ptr() for b in loader]
    assert len(set(pointers)) == 2


def test_last_short_batch_has_the_remaining_records(square):
    batches = list(b.shape[0] for b in threaded(square, 2))
    assert batches == [4] * 8 + [1]


def test_iteration_moves_on_to_the_next_epoch(square):
    loader = threaded(square, 2)
    first = torch.cat([b.clone() for b in loader])
    second = torch.cat([b.clone() for b in loader])
    assert loader.state_dict()["epoch"] == 2
    want = np.concatenate(expected_batches(square, 7, 1, 4, augment=False))
    np.testing.assert_array_equal(second.numpy(), want)
    assert not torch.equal(first, second)


def test_resume_mid_epoch_continues_with_the_same_batches(square):
    loader = threaded(square, 2, augment="cpu")
    loader.set_epoch(3)
    it = iter(loader)
    [next(it).clone() for _ in range(4)]
    state = dict(loader.state_dict())
    rest = [b.clone() for b in it]
    resumed = threaded(square, 4, augment="cpu")
    resumed.load_state_dict(state)
    again = [b.clone() for b in resumed]
    assert state["epoch"] == 3 and state["batch"] == 4
    assert len(again) == len(rest) == 5
    for a, b in zip(again, rest):
        assert torch.equal(a, b)


def test_resume_state_from_another_sampler_is_refused(square):
    loader = threaded(square, 1)
    state = {**loader.state_dict(), "batch_size": 8}
    with pytest.raises(InputError, match=r"key 'batch_size': sampler state does not match"):
        loader.load_state_dict(state)


def test_read_error_reaches_the_consumer(square, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(square, "read_planned", broken)
    with pytest.raises(OSError, match="disk gone"):
        list(threaded(square, 2))


def test_error_in_one_batch_arrives_after_the_batches_before_it(square, monkeypatch):
    bad = int(EpochSampler(len(square), 4, seed=7).batch(0, 3).indices[0])
    real = square.read_planned

    def fails_on_batch_3(plan, out, *args, **kwargs):
        real(plan, out, *args, **kwargs)
        if (out[:, 0, 0] == bad * 1000.0).any():  # record r holds r * 1000 at pixel (0, 0)
            raise OSError("sector unreadable")

    monkeypatch.setattr(square, "read_planned", fails_on_batch_3)
    got = []
    with pytest.raises(OSError, match="sector unreadable"):
        for b in threaded(square, 2):
            got.append(b.clone().numpy())
    monkeypatch.undo()
    assert len(got) == 3
    for g, w in zip(got, expected_batches(square, 7, 0, 4, augment=False)):
        np.testing.assert_array_equal(g, w)


def test_more_threads_than_prefetched_batches_still_gives_the_reference(square):
    got = [b.clone().numpy() for b in threaded(square, 4, prefetch=1, keep=1)]
    for g, w in zip(got, expected_batches(square, 7, 0, 4, augment=False), strict=True):
        np.testing.assert_array_equal(g, w)


def test_stopping_early_ends_the_reading_threads(square):
    before = threading.active_count()
    it = iter(threaded(square, 3))
    next(it)
    assert threading.active_count() == before + 3
    it.close()
    assert threading.active_count() == before


def test_unknown_augmentation_mode_is_refused(square):
    with pytest.raises(InputError, match="unknown augmentation mode"):
        threaded(square, 1, augment="gpu")


def test_augmentation_of_non_square_records_is_refused(shards):
    with pytest.raises(
        InputError,
        match=r"D4 augmentation needs square records \(expected H == W, found \(4, 5\)\)",
    ):
        ThreadedLoader(ShardReader(shards), EpochSampler(16, 4), augment="cpu")


def test_sampler_of_another_size_is_refused(square):
    with pytest.raises(
        InputError,
        match=r"sampler draws records the reader does not have \(expected indices < 33, found 39\)",
    ):
        ThreadedLoader(square, EpochSampler(40, 4))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers", [0, 1, 2, 4])
def test_dataloader_path_gives_the_same_batches_for_any_worker_count(square, workers):
    ds = ShardDataset(square, augment=True)
    loader = shard_dataloader(ds, EpochSampler(len(square), 4, seed=7), num_workers=workers)
    got = [b.clone().numpy() for b in loader]
    want = expected_batches(square, 7, 0, 4, augment=True)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_dataloader_path_recycles_buffers_in_process(square):
    ds = ShardDataset(square, ring=3)
    pointers = [b.data_ptr() for b in shard_dataloader(ds, EpochSampler(len(square), 4))]
    assert len(set(pointers)) == 3


def test_plain_dataloader_with_default_collate_still_works(square):
    ds = ShardDataset(square)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False)))
    assert batch.shape == (5, 1, 8, 8)
    np.testing.assert_array_equal(batch.numpy()[:, 0], square.read(np.arange(5)))


def test_getitem_returns_one_channel_patch(square):
    item = ShardDataset(square)[12]
    assert item.shape == (1, 8, 8)
    np.testing.assert_array_equal(item.numpy()[0], square.read(np.array([12]))[0])


def test_sampler_over_a_subset_reads_only_those_records(square):
    subset = np.array([30, 2, 17, 5, 11])
    loader = ThreadedLoader(square, EpochSampler(subset, 2, shuffle=False), threads=2)
    got = torch.cat([b.clone() for b in loader]).numpy()[:, 0]
    np.testing.assert_array_equal(got, square.read(subset))


@pytest.mark.parametrize("augment", ["none", "cpu", "deferred"])
def test_threaded_loader_of_one_rank_reads_that_ranks_batches(square, augment):
    sampler = EpochSampler(len(square), 4, seed=7, rank=1, world_size=2)
    want_sampler = EpochSampler(len(square), 4, seed=7, rank=1, world_size=2)
    loader = ThreadedLoader(square, sampler, threads=2, augment=augment, prefetch=1, keep=1)
    got = [(b if augment != "deferred" else b[0]).clone() for b in loader]
    assert len(got) == 5  # 9 global batches over 2 ranks, padded to 5 each
    for j, batch in enumerate(got):
        b = want_sampler.batch(0, j)
        recs = square.read(b.indices)
        if augment == "cpu":
            recs = np.stack([d4_view(r, int(c)) for r, c in zip(recs, d4_codes(7, 0, b.indices))])
        np.testing.assert_array_equal(batch.numpy()[:, 0], recs)
