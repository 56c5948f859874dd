import os
import pickle

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.loading import ShardReader
from trainset.store import atomic_write_npy
from trainset.testing.shard_files import record_values, write_shards


def test_length_shape_and_dtype_come_from_the_headers(shards):
    reader = ShardReader(shards)
    assert len(reader) == 16
    assert reader.record_shape == (4, 5)
    assert reader.dtype == np.float32
    assert reader.starts.tolist() == [0, 7, 10, 16]


def test_read_across_shard_boundaries_is_exact(shards):
    reader = ShardReader(shards)
    idx = np.array([15, 6, 7, 9, 10, 0, 6, 3])
    got = reader.read(idx)
    want = np.stack([record_values(int(i), 1, 4, 5)[0] for i in idx])
    np.testing.assert_array_equal(got, want)


def test_every_record_matches_np_load(shards):
    reader = ShardReader(shards)
    want = np.concatenate([np.load(p) for p in shards])
    np.testing.assert_array_equal(reader.read(np.arange(16)), want)


def test_read_into_fills_the_given_buffer_and_returns_it(shards):
    reader = ShardReader(shards)
    out = np.full((3, 4, 5), -1, np.float32)
    got = reader.read_into(np.array([2, 12, 8]), out)
    assert got is out
    np.testing.assert_array_equal(out[1], record_values(12, 1, 4, 5)[0])


def test_adjacent_records_merge_into_one_run(shards):
    reader = ShardReader(shards)
    plan = reader.plan(np.array([5, 1, 2, 3, 9, 8, 12]))
    # sorted: shard 0 -> 1,2,3 | 5 ; shard 1 -> 8,9 ; shard 2 -> 12
    assert plan.n_runs == 4
    assert plan.run_start.tolist() == [0, 3, 4, 6, 7]
    assert plan.run_shard.tolist() == [0, 0, 1, 2]


def test_consecutive_indices_across_a_shard_boundary_are_two_runs(shards):
    reader = ShardReader(shards)
    plan = reader.plan(np.array([7, 6]))  # record 6 ends shard 0, record 7 starts shard 1
    assert plan.run_start.tolist() == [0, 1, 2]
    assert plan.run_shard.tolist() == [0, 1]
    assert plan.order.tolist() == [1, 0]
    want = np.stack([record_values(i, 1, 4, 5)[0] for i in (7, 6)])
    np.testing.assert_array_equal(reader.read(np.array([7, 6])), want)


def test_repeated_index_is_read_into_both_rows(shards):
    reader = ShardReader(shards)
    plan = reader.plan(np.array([5, 3, 5]))
    assert plan.run_start.tolist() == [0, 1, 2, 3]  # 3 | 5 | 5: a repeat is not adjacent
    got = reader.read(np.array([5, 3, 5]))
    np.testing.assert_array_equal(got[0], record_values(5, 1, 4, 5)[0])
    np.testing.assert_array_equal(got[1], record_values(3, 1, 4, 5)[0])
    np.testing.assert_array_equal(got[2], record_values(5, 1, 4, 5)[0])


def test_row_views_refuse_a_strided_buffer(shards):
    out = np.empty((4, 4, 5), np.float32)[::2]
    with pytest.raises(InputError, match="output buffer does not fit the records"):
        ShardReader(shards).row_views(out)


def test_plans_of_many_rows_equal_plans_one_row_at_a_time(tmp_path):
    reader = ShardReader(write_shards(tmp_path, [9, 14, 10], h=2, w=2))
    rng = np.random.default_rng(3)
    rows = np.stack([rng.permutation(33)[:6] for _ in range(20)])
    rows[0] = [9, 8, 10, 21, 22, 23]  # shards hold 0-8 | 9-22 | 23-32
    for got, row in zip(reader.plan_rows(rows), rows, strict=True):
        want = reader.plan(row)
        for field in ("order", "run_start", "run_shard", "run_offset"):
            assert getattr(got, field).tolist() == getattr(want, field).tolist(), field
    # sorted 8 | 9 10 | 21 22 | 23: shard boundaries after 8 and 22 cut the runs
    assert reader.plan_rows(rows)[0].run_start.tolist() == [0, 1, 3, 5, 6]


def test_plan_rows_refuses_one_dimensional_indices(shards):
    with pytest.raises(InputError, match="indices must be 2-D"):
        ShardReader(shards).plan_rows(np.arange(4))


def test_long_runs_are_cut_at_iov_max(tmp_path):
    paths = write_shards(tmp_path, [1500], h=1, w=2)
    reader = ShardReader(paths)
    plan = reader.plan(np.arange(1500))
    assert plan.run_start.tolist() == [0, 1024, 1500]
    np.testing.assert_array_equal(reader.read(np.arange(1500)), np.load(paths[0]))


def test_float16_shards_read_as_float16(tmp_path):
    paths = write_shards(tmp_path, [3, 2], dtype="float16", h=2, w=2)
    reader = ShardReader(paths)
    got = reader.read(np.array([4, 0]))
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, record_values(0, 5, 2, 2, "float16")[[4, 0]])


def test_unaligned_npy_from_np_save_reads_exactly(tmp_path):
    arr = record_values(0, 5, 3, 3)
    np.save(tmp_path / "plain.npy", arr)
    reader = ShardReader([tmp_path / "plain.npy"])
    np.testing.assert_array_equal(reader.read(np.array([4, 1])), arr[[4, 1]])


def test_empty_batch_gives_empty_array(shards):
    got = ShardReader(shards).read(np.array([], dtype=np.int64))
    assert got.shape == (0, 4, 5)


def test_pickle_carries_paths_and_reopens(shards):
    reader = ShardReader(shards)
    reader.read(np.array([1]))
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read(np.array([11])), record_values(11, 1, 4, 5))


def test_reader_reopens_files_in_a_forked_child(shards):
    reader = ShardReader(shards)
    reader.read(np.array([0]))
    parent_fd = reader.fileno(0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must get its own descriptors and correct data
        try:
            same = np.array_equal(reader.read(np.array([13])), record_values(13, 1, 4, 5))
            os.write(w, b"1" if (same and reader._pid == os.getpid()) else b"0")
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    os.close(r)
    assert reader.fileno(0) == parent_fd


def test_out_of_range_index_is_refused(shards):
    with pytest.raises(IndexError, match=r"record index 16 out of range \[0, 16\)"):
        ShardReader(shards).read(np.array([3, 16]))


def test_negative_index_is_refused(shards):
    with pytest.raises(IndexError, match=r"record index -1 out of range"):
        ShardReader(shards).read(np.array([-1]))


def test_non_integer_indices_are_refused(shards):
    with pytest.raises(InputError, match="indices must be a 1-D integer array"):
        ShardReader(shards).read(np.array([1.0, 2.0]))


def test_wrong_output_buffer_is_refused(shards):
    with pytest.raises(
        InputError,
        match=r"output buffer does not fit the batch \(expected C-contiguous \(2, 4, 5\) float32",
    ):
        ShardReader(shards).read_into(np.array([0, 1]), np.empty((2, 4, 5), np.float64))


def test_read_only_output_buffer_is_refused(shards):
    out = np.empty((1, 4, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(InputError, match="output buffer is read-only"):
        ShardReader(shards).read_into(np.array([0]), out)


def test_missing_shard_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nope\.npy: shard not found"):
        ShardReader([tmp_path / "nope.npy"])


def test_no_shards_is_refused():
    with pytest.raises(InputError, match="no shards given"):
        ShardReader([])


def test_garbage_file_is_not_a_shard(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"hello world")
    with pytest.raises(InputError, match=r"bad\.npy: not a readable \.npy shard"):
        ShardReader([tmp_path / "bad.npy"])


def test_two_dimensional_shard_is_refused(tmp_path):
    atomic_write_npy(tmp_path / "flat.npy", np.zeros((4, 5), np.float32))
    with pytest.raises(
        InputError, match=r"flat\.npy: shard must be 3-D \(expected \(N, H, W\), found \(4, 5\)\)"
    ):
        ShardReader([tmp_path / "flat.npy"])


def test_record_shape_mismatch_names_the_file(tmp_path):
    a = write_shards(tmp_path, [2])[0]
    atomic_write_npy(tmp_path / "b.npy", np.zeros((2, 4, 6), np.float32))
    with pytest.raises(
        InputError,
        match=r"b\.npy: record shape differs from the first shard \(expected \(4, 5\), found \(4, 6\)\)",
    ):
        ShardReader([a, tmp_path / "b.npy"])


def test_dtype_mismatch_names_the_file(tmp_path):
    a = write_shards(tmp_path, [2])[0]
    atomic_write_npy(tmp_path / "b.npy", np.zeros((2, 4, 5), np.float16))
    with pytest.raises(
        InputError,
        match=r"b\.npy: dtype differs from the first shard \(expected float32, found float16\)",
    ):
        ShardReader([a, tmp_path / "b.npy"])


def test_count_mismatch_with_manifest_names_the_file(shards):
    with pytest.raises(
        InputError,
        match=r"shard_00001\.npy: record count differs from the manifest \(expected 4, found 3\)",
    ):
        ShardReader(shards, counts=[7, 4, 6])


def test_counts_of_wrong_length_are_refused(shards):
    with pytest.raises(InputError, match=r"one count per shard is needed \(expected 3, found 2\)"):
        ShardReader(shards, counts=[7, 3])


def test_truncated_shard_is_refused(tmp_path):
    p = write_shards(tmp_path, [3])[0]
    data = p.read_bytes()
    p.write_bytes(data[:-8])
    with pytest.raises(InputError, match=r"shard_00000\.npy: shard is truncated"):
        ShardReader([p])


def test_fortran_order_shard_is_refused(tmp_path):
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((2, 3, 4), np.float32)))
    with pytest.raises(InputError, match=r"f\.npy: shard is stored in Fortran order"):
        ShardReader([tmp_path / "f.npy"])


def _chunked_preadv(limit):
    """A preadv that reads at most ``limit`` bytes per call (as signals or network FS may)."""
    real = os.preadv

    def preadv(fd, buffers, offset):
        take, rest = [], limit
        for b in buffers:
            if rest <= 0:
                break
            take.append(b[: min(len(b), rest)])
            rest -= len(take[-1])
        return real(fd, take, offset)

    return preadv


def test_short_reads_are_continued_until_the_record_is_complete(shards, monkeypatch):
    reader = ShardReader(shards)
    monkeypatch.setattr(os, "preadv", _chunked_preadv(7))
    np.testing.assert_array_equal(
        reader.read(np.array([3, 4, 12])), record_values(0, 16, 4, 5)[[3, 4, 12]]
    )


def test_shard_that_ends_early_while_reading_is_an_input_error(shards, monkeypatch):
    reader = ShardReader(shards)
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, off: 0)
    with pytest.raises(
        InputError, match=r"shard_00000\.npy: shard ended before the records its header promises"
    ):
        reader.read(np.array([1]))


def test_advise_and_evict_leave_reads_exact(shards):
    reader = ShardReader(shards)
    reader.advise(np.array([15, 2, 3]))
    reader.evict()
    np.testing.assert_array_equal(
        reader.read(np.array([15, 2])), record_values(0, 16, 4, 5)[[15, 2]]
    )
