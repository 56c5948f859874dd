"""Transforming reads go through a small cache-sized scratch, a few records at a time."""

import os

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.loading import ShardReader, fill_batch
from trainset.loading.buffers import CHUNK_BYTES, scratch_rows
from trainset.testing.shard_files import record_values, write_shards


def _expected(values: np.ndarray, indices: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The plan's numpy operations, record by record: rot90(fliplr if code >= 4, code % 4)."""
    out = []
    for i, c in zip(indices, codes):
        x = values[i]
        out.append(np.rot90(np.fliplr(x) if c >= 4 else x, c % 4))
    return np.stack(out)


def test_read_chunks_yields_pieces_of_at_most_the_scratch_rows_within_one_run(shards):
    reader = ShardReader(shards)
    plan = reader.plan(np.array([0, 1, 2, 3, 4, 9, 10, 11]))
    scratch = np.empty((2, 4, 5), np.float32)
    values = record_values(0, 16, 4, 5)
    sorted_records = np.array([0, 1, 2, 3, 4, 9, 10, 11])
    pieces = []
    for a, z in reader.read_chunks(plan, scratch):
        np.testing.assert_array_equal(scratch[: z - a], values[sorted_records[a:z]])
        pieces.append((a, z))
    # Runs: 0..4 in shard 0, 9 in shard 1, 10..11 in shard 2.
    assert pieces == [(0, 2), (2, 4), (4, 5), (5, 6), (6, 8)]


def test_read_chunks_continues_short_reads(shards, monkeypatch):
    reader = ShardReader(shards)
    real = os.preadv

    def one_row_at_a_time(fd, bufs, offset):
        return real(fd, [bufs[0][:20]], offset)

    monkeypatch.setattr(os, "preadv", one_row_at_a_time)
    scratch = np.empty((3, 4, 5), np.float32)
    plan = reader.plan(np.array([5, 6, 7]))
    got = [scratch[: z - a].copy() for a, z in reader.read_chunks(plan, scratch)]
    np.testing.assert_array_equal(np.concatenate(got), record_values(0, 16, 4, 5)[[5, 6, 7]])


def test_read_chunks_names_a_shard_that_ends_early(shards, monkeypatch):
    reader = ShardReader(shards)
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, off: 0)
    scratch = np.empty((2, 4, 5), np.float32)
    with pytest.raises(InputError, match=r"shard_00001\.npy: shard ended before the records"):
        list(reader.read_chunks(reader.plan(np.array([8])), scratch))


@pytest.mark.parametrize("rows", [1, 2, 3, 64])
def test_fused_fill_equals_numpy_for_any_scratch_size(tmp_path, rows):
    paths = write_shards(tmp_path, [7, 3, 6], h=4, w=4)
    reader = ShardReader(paths)
    values = record_values(0, 16, 4, 4)
    indices = np.array([15, 0, 1, 2, 8, 7, 3, 9, 14, 13, 4, 5, 6, 10, 11, 12])
    codes = np.array([1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 3], np.uint8)
    out = np.full((16, 4, 4), -1.0, np.float32)
    fill_batch(reader, indices, out, codes, np.empty((rows, 4, 4), np.float32))
    np.testing.assert_array_equal(out, _expected(values, indices, codes))


def test_unfit_scratch_is_replaced_not_used(tmp_path):
    paths = write_shards(tmp_path, [7, 3, 6], h=4, w=4)
    reader = ShardReader(paths)
    wrong = np.zeros((8, 5, 5), np.float32)
    indices = np.array([3, 12, 9])
    codes = np.array([1, 4, 7], np.uint8)
    out = np.empty((3, 4, 4), np.float32)
    fill_batch(reader, indices, out, codes, wrong)
    np.testing.assert_array_equal(out, _expected(record_values(0, 16, 4, 4), indices, codes))
    assert not wrong.any()


def test_float16_records_convert_through_the_small_scratch(tmp_path):
    paths = write_shards(tmp_path, [5, 4], h=4, w=4, dtype="float16")
    reader = ShardReader(paths)
    indices = np.array([8, 0, 4, 5])
    codes = np.array([0, 3, 0, 6], np.uint8)
    out = np.empty((4, 4, 4), np.float32)
    fill_batch(reader, indices, out, codes, np.empty((1, 4, 4), np.float16))
    values = record_values(0, 9, 4, 4, "float16").astype(np.float32)
    np.testing.assert_array_equal(out, _expected(values, indices, codes))


def test_scratch_rows_hold_about_one_chunk_and_at_least_one_record(tmp_path):
    small = ShardReader(write_shards(tmp_path, [2], h=4, w=4))
    assert scratch_rows(small) == CHUNK_BYTES // 64
    big_dir = tmp_path / "big"
    big_dir.mkdir()
    big = ShardReader(write_shards(big_dir, [1], h=1024, w=512))  # 2 MiB a record
    assert scratch_rows(big) == 1
