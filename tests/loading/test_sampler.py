import numpy as np
import pytest

from trainset.errors import InputError
from trainset.loading import EpochSampler, d4_codes


def test_shuffled_epoch_is_a_permutation_of_all_records():
    s = EpochSampler(10, 3, seed=1)
    seen = np.concatenate([b.indices for b in s])
    assert sorted(seen.tolist()) == list(range(10))


def test_order_depends_only_on_seed_and_epoch():
    a = EpochSampler(50, 8, seed=5).order(2)
    b = EpochSampler(50, 8, seed=5, epoch=9).order(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, EpochSampler(50, 8, seed=5).order(3))
    assert not np.array_equal(a, EpochSampler(50, 8, seed=6).order(2))


def test_order_is_pinned_for_a_known_seed():
    # The order is part of reproducibility: numpy's PCG64 seeded by SeedSequence([seed, epoch]).
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([3, 1])))
    np.testing.assert_array_equal(EpochSampler(12, 4, seed=3).order(1), rng.permutation(12))


def test_unshuffled_order_is_sequential():
    assert [b.indices.tolist() for b in EpochSampler(5, 2, shuffle=False)] == [[0, 1], [2, 3], [4]]


def test_drop_last_drops_the_short_batch():
    s = EpochSampler(5, 2, shuffle=False, drop_last=True)
    assert len(s) == 2
    assert [len(b) for b in s] == [2, 2]


def test_subset_sampler_draws_only_the_given_records():
    s = EpochSampler(np.array([9, 4, 7]), 2, shuffle=False)
    assert [b.indices.tolist() for b in s] == [[9, 4], [7]]
    assert s.end == 10


def test_iterating_again_runs_the_next_epoch():
    s = EpochSampler(6, 3, seed=0)
    first, second = list(s), list(s)
    assert [b.epoch for b in first + second] == [0, 0, 1, 1]
    assert s.epoch == 2
    np.testing.assert_array_equal(second[0].indices, s.order(1)[:3])


def test_resume_continues_with_the_remaining_batches():
    s = EpochSampler(20, 3, seed=4)
    s.set_epoch(1)
    it = iter(s)
    [next(it) for _ in range(2)]
    state = s.state_dict()
    fresh = EpochSampler(20, 3, seed=4)
    fresh.load_state_dict(state)
    assert [b.indices.tolist() for b in fresh] == [b.indices.tolist() for b in it]
    assert state["batch"] == 2 and state["epoch"] == 1


def test_batch_codes_are_the_d4_codes_of_its_records():
    b = EpochSampler(10, 4, seed=2).batch(0, 1)
    np.testing.assert_array_equal(b.codes(), d4_codes(2, 0, b.indices))


def test_batch_number_out_of_range_is_refused():
    with pytest.raises(IndexError, match=r"batch 4 out of range \[0, 4\)"):
        EpochSampler(10, 3).batch(0, 4)


def test_resume_point_past_the_epoch_is_refused():
    with pytest.raises(
        InputError, match=r"resume point outside the epoch \(expected 0..4, found 5\)"
    ):
        EpochSampler(10, 3).resume(0, 5)


def test_state_of_another_seed_is_refused():
    state = EpochSampler(10, 3, seed=1).state_dict()
    with pytest.raises(
        InputError,
        match=r"key 'seed': sampler state does not match this sampler \(expected 2, found 1\)",
    ):
        EpochSampler(10, 3, seed=2).load_state_dict(state)


def test_zero_batch_size_is_refused():
    with pytest.raises(InputError, match=r"batch size must be >= 1"):
        EpochSampler(10, 0)


def test_negative_count_is_refused():
    with pytest.raises(InputError, match=r"record count must be >= 0"):
        EpochSampler(-1, 2)


def test_two_dimensional_records_are_refused():
    with pytest.raises(InputError, match="records must be a count or a 1-D integer array"):
        EpochSampler(np.zeros((2, 2), np.int64), 2)


def test_negative_record_index_is_refused():
    with pytest.raises(InputError, match="record indices must be >= 0"):
        EpochSampler(np.array([3, -1]), 2)


def _epoch_of_ranks(n, batch, world, drop_last, epoch=2):
    ranks = [
        EpochSampler(n, batch, seed=5, drop_last=drop_last, rank=r, world_size=world)
        for r in range(world)
    ]
    return ranks, [[ranks[r].batch(epoch, j).indices.tolist() for j in range(len(ranks[r]))]
                   for r in range(world)]  # fmt: skip


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_take_every_world_size_th_global_batch(world):
    whole = EpochSampler(23, 4, seed=5)  # 6 global batches, the last one of 3 records
    ranks, got = _epoch_of_ranks(23, 4, world, drop_last=False)
    per_rank = -(-6 // world)
    assert [len(s) for s in ranks] == [per_rank] * world
    for r in range(world):
        for j in range(per_rank):
            k = (r + j * world) % 6  # past the end the list wraps around to its start
            assert got[r][j] == whole.batch(2, k).indices.tolist()


def test_ranks_see_every_record_once_when_batches_divide_evenly():
    _, got = _epoch_of_ranks(24, 4, 3, drop_last=False)  # 6 batches over 3 ranks
    seen = sorted(i for rank in got for b in rank for i in b)
    assert seen == list(range(24))


def test_drop_last_ranks_share_no_record_and_get_equal_batches():
    ranks, got = _epoch_of_ranks(30, 4, 4, drop_last=True)  # 7 full batches -> 1 per rank
    assert [len(s) for s in ranks] == [1, 1, 1, 1]
    flat = [i for rank in got for b in rank for i in b]
    assert len(flat) == len(set(flat)) == 16


def test_padding_repeats_batches_only_to_even_out_the_ranks():
    _, got = _epoch_of_ranks(20, 4, 3, drop_last=False)  # 5 batches -> 2 per rank, 1 repeat
    batches = [tuple(b) for rank in got for b in rank]
    assert len(batches) == 6 and len(set(batches)) == 5
    assert sorted({i for b in batches for i in b}) == list(range(20))


def test_rank_and_world_size_come_from_a_distributed_sampler():
    import torch
    from torch.utils.data import TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    records = TensorDataset(torch.arange(10))
    dist: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(
        records, num_replicas=3, rank=2, shuffle=False
    )
    s = EpochSampler(10, 2, sampler=dist)
    assert (s.rank, s.world_size) == (2, 3)


def test_a_sampler_without_rank_is_refused():
    with pytest.raises(InputError, match="sampler must say its rank"):
        EpochSampler(10, 2, sampler=range(10))


@pytest.mark.parametrize(("rank", "world"), [(2, 2), (-1, 2), (0, 0)])
def test_rank_outside_the_world_is_refused(rank, world):
    with pytest.raises(InputError, match=r"rank must lie in 0\.\.world_size-1"):
        EpochSampler(10, 2, rank=rank, world_size=world)


def test_state_of_another_world_size_is_refused():
    state = EpochSampler(10, 2, world_size=2).state_dict()
    with pytest.raises(InputError, match="key 'world_size'"):
        EpochSampler(10, 2).load_state_dict(state)


def test_state_saved_before_sharding_still_loads():
    state = EpochSampler(10, 2).state_dict()
    del state["world_size"], state["rank"]
    state["batch"] = 3
    s = EpochSampler(10, 2)
    s.load_state_dict(state)
    assert s.state_dict()["batch"] == 3
