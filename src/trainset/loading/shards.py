"""Batched reads of fixed-size records from ``.npy`` shards with ``os.preadv``.

A shard is an ``.npy`` file holding (N, H, W) records (float32 or float16), ideally with its
header padded to 4096 bytes so that every record starts on a page boundary. A
:class:`ShardReader` concatenates shards in the given order, checks every header once, opens each
file once per process (again after a fork) and reads a batch of global indices straight into the
rows of a caller's buffer, in (file, offset) order, merging records that lie next to each other in
a file into one system call.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError

# Most buffers one preadv call accepts (POSIX IOV_MAX; 1024 on Linux).
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


@dataclass(frozen=True)
class ShardInfo:
    """One shard as its header describes it: path, record count and byte offset of record 0."""

    path: str
    count: int
    data_offset: int


@dataclass(frozen=True)
class ReadPlan:
    """A batch read, sorted by (file, offset) and cut into runs of adjacent records.

    ``order[k]`` is the batch row that receives the k-th record in file order. Run ``r`` covers
    sorted positions ``run_start[r]:run_start[r + 1]``, all in shard ``run_shard[r]`` starting at
    byte ``run_offset[r]``, one record after the other.
    """

    order: np.ndarray
    run_start: np.ndarray
    run_shard: np.ndarray
    run_offset: np.ndarray

    @property
    def n_runs(self) -> int:
        """Number of system calls (at most) this plan needs."""
        return len(self.run_shard)


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any], bool, int]:
    """Return (shape, dtype, fortran_order, data offset) of an ``.npy`` file."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            return tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), fh.tell()
    except FileNotFoundError as exc:
        raise InputError("shard not found", file=path) from exc
    except IsADirectoryError as exc:
        raise InputError("is a directory, not an .npy shard", file=path) from exc
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"not a readable .npy shard: {exc}", file=path) from exc


class ShardReader:
    """Read records of (H, W) from ``.npy`` shards of (N, H, W), concatenated in order.

    ``counts`` (optional) are the record counts the caller expects (e.g. from a manifest); a
    shard whose header disagrees is refused. The reader is picklable: it holds paths, and opens
    file descriptors lazily in each process that reads.
    """

    def __init__(
        self, paths: Sequence[str | os.PathLike[str]], counts: Sequence[int] | None = None
    ):
        if len(paths) == 0:
            raise InputError("no shards given", expected="at least one .npy shard", found=0)
        if counts is not None and len(counts) != len(paths):
            raise InputError(
                "one count per shard is needed", expected=len(paths), found=len(counts)
            )
        shards: list[ShardInfo] = []
        record_shape: tuple[int, int] | None = None
        dtype: np.dtype[Any] | None = None
        for i, raw in enumerate(paths):
            path = Path(raw)
            shape, dt, fortran, offset = _read_header(path)
            if len(shape) != 3:
                raise InputError("shard must be 3-D", file=path, expected="(N, H, W)", found=shape)
            if fortran:
                raise InputError(
                    "shard is stored in Fortran order", file=path, expected="C order", found="F"
                )
            if dt.hasobject or dt.itemsize == 0:
                raise InputError("shard dtype is not plain data", file=path, found=str(dt))
            if record_shape is None:
                record_shape, dtype = (shape[1], shape[2]), dt
            elif (shape[1], shape[2]) != record_shape:
                raise InputError(
                    "record shape differs from the first shard",
                    file=path,
                    expected=record_shape,
                    found=(shape[1], shape[2]),
                )
            elif dt != dtype:
                raise InputError(
                    "dtype differs from the first shard", file=path, expected=dtype, found=dt
                )
            if counts is not None and int(counts[i]) != shape[0]:
                raise InputError(
                    "record count differs from the manifest",
                    file=path,
                    expected=int(counts[i]),
                    found=shape[0],
                )
            need = offset + shape[0] * shape[1] * shape[2] * dt.itemsize
            size = path.stat().st_size
            if size < need:
                raise InputError(
                    "shard is truncated", file=path, expected=f"{need} bytes", found=size
                )
            shards.append(ShardInfo(str(path), shape[0], offset))
        assert record_shape is not None and dtype is not None
        self._shards = tuple(shards)
        self._shape = record_shape
        self._dtype = dtype
        self._record_bytes = record_shape[0] * record_shape[1] * dtype.itemsize
        starts = np.zeros(len(shards) + 1, dtype=np.int64)
        np.cumsum([s.count for s in shards], out=starts[1:])
        self._starts = starts
        self._offsets = np.array([s.data_offset for s in shards], dtype=np.int64)
        self._fds: list[int] = []
        self._pid = -1
        self._lock = threading.Lock()

    # -- description ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def record_shape(self) -> tuple[int, int]:
        """(H, W) of one record."""
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """dtype of the records as stored."""
        return self._dtype

    @property
    def record_bytes(self) -> int:
        """Size of one record in bytes."""
        return self._record_bytes

    @property
    def shards(self) -> tuple[ShardInfo, ...]:
        """The shards in concatenation order."""
        return self._shards

    @property
    def starts(self) -> np.ndarray:
        """(n_shards + 1,) int64: global index of each shard's first record, then the total."""
        return self._starts.copy()

    # -- file descriptors ----------------------------------------------------------------------
    def _descriptors(self) -> list[int]:
        """File descriptors of every shard, opened once per process (again after a fork)."""
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    # Descriptors inherited through fork share the parent's; leave them alone.
                    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
                    self._fds = [os.open(s.path, flags) for s in self._shards]
                    self._pid = pid
        return self._fds

    def close(self) -> None:
        """Close this process's descriptors (they are reopened on the next read)."""
        with self._lock:
            if self._pid == os.getpid():
                for fd in self._fds:
                    os.close(fd)
            self._fds = []
            self._pid = -1

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"] = []
        state["_pid"] = -1
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def fileno(self, shard: int) -> int:
        """This process's descriptor of shard ``shard`` (for ``posix_fadvise`` and the like)."""
        return self._descriptors()[shard]

    # -- reading -------------------------------------------------------------------------------
    def _checked(self, indices: np.ndarray) -> np.ndarray:
        """``indices`` as (B,) int64, refusing anything else and indices out of range."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise InputError(
                "indices must be a 1-D integer array",
                expected="(B,) int",
                found=f"{idx.shape} {idx.dtype}",
            )
        idx = idx.astype(np.int64, copy=False)
        total = len(self)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= total):
            bad = int(idx[(idx < 0) | (idx >= total)][0])
            raise IndexError(f"record index {bad} out of range [0, {total})")
        return idx

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (shard, byte offset) of each global index, both (B,) int64."""
        idx = self._checked(indices)
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        offset = self._offsets[shard] + (idx - self._starts[shard]) * self._record_bytes
        return shard, offset

    def plan(self, indices: np.ndarray) -> ReadPlan:
        """Sort a batch by (file, offset) and group adjacent records into runs.

        Shards are concatenated in order and records lie one after the other in a shard, so
        sorting global indices sorts by (file, offset), and consecutive indices in one shard
        are adjacent bytes.
        """
        idx = self._checked(indices)
        if len(idx) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return ReadPlan(empty, np.zeros(1, dtype=np.int64), empty, empty)
        order = np.argsort(idx, kind="stable")
        s_sorted = idx[order]
        shard = np.searchsorted(self._starts, s_sorted, side="right") - 1
        offset = self._offsets[shard] + (s_sorted - self._starts[shard]) * self._record_bytes
        joined = np.diff(s_sorted) == 1
        if joined.any():
            joined &= shard[1:] == shard[:-1]
        if not joined.any():  # the common case of random access: one record per run
            return ReadPlan(order, np.arange(len(order) + 1, dtype=np.int64), shard, offset)
        starts = np.flatnonzero(~joined) + 1
        starts = np.concatenate(([0], starts))
        if len(order) > _IOV_MAX:  # cap a run at IOV_MAX buffers
            lengths = np.diff(np.append(starts, len(order)))
            pieces = [np.arange(s, s + n, _IOV_MAX) for s, n in zip(starts, lengths)]
            starts = np.concatenate(pieces)
        run_start = np.append(starts, len(order)).astype(np.int64)
        return ReadPlan(order, run_start, shard[starts], offset[starts])

    def plan_rows(self, indices: np.ndarray) -> list[ReadPlan]:
        """:meth:`plan` of every row of ``indices`` (K, B), worked out for all rows at once.

        A loader plans a block of batches in one go: the numpy calls cost per call, not per
        element, so this is several times cheaper per batch than :meth:`plan` one at a time.
        """
        idx = np.asarray(indices)
        if idx.ndim != 2:
            raise InputError("indices must be 2-D", expected="(K, B) int", found=idx.shape)
        flat = self._checked(idx.reshape(-1))
        k, b = idx.shape
        if b == 0 or b > _IOV_MAX:
            return [self.plan(row) for row in flat.reshape(k, b)]
        rows = flat.reshape(k, b)
        order = np.argsort(rows, axis=1, kind="stable")
        s_sorted = np.take_along_axis(rows, order, axis=1)
        shard = np.searchsorted(self._starts, s_sorted, side="right") - 1
        offset = self._offsets[shard] + (s_sorted - self._starts[shard]) * self._record_bytes
        joined = (np.diff(s_sorted, axis=1) == 1) & (shard[:, 1:] == shard[:, :-1])
        merges = joined.any(axis=1).tolist()
        singles = np.arange(b + 1, dtype=np.int64)
        return [
            self.plan(rows[r]) if merges[r] else ReadPlan(order[r], singles, shard[r], offset[r])
            for r in range(k)
        ]

    def row_views(self, out: np.ndarray) -> list[memoryview]:
        """One writable byte view per row of ``out`` (>= B, H, W), for :meth:`read_planned`.

        Building them costs a little per row; a caller that refills the same buffer keeps them.
        """
        if not out.flags.c_contiguous or out.shape[1:] != self._shape:
            raise InputError(
                "output buffer does not fit the records",
                expected=f"C-contiguous (B, {self._shape[0]}, {self._shape[1]})",
                found=f"{'C-contiguous ' if out.flags.c_contiguous else ''}{out.shape}",
            )
        flat = out.reshape(out.shape[0], self._shape[0] * self._shape[1]).view(np.uint8)
        return [memoryview(flat[b]) for b in range(flat.shape[0])]

    def read_planned(
        self,
        plan: ReadPlan,
        out: np.ndarray,
        runs: range | None = None,
        rows: np.ndarray | None = None,
        views: list[memoryview] | None = None,
    ) -> None:
        """Read the runs ``runs`` (all by default) of ``plan`` into the rows of ``out``.

        Batch position b of the plan goes to row ``rows[b]`` of ``out`` (row b without
        ``rows``). ``views`` are :meth:`row_views` of ``out``, kept by a caller that refills
        one buffer. Several threads may read disjoint run ranges of one plan into one ``out``.
        """
        fds = self._descriptors()
        if views is None:
            views = self.row_views(out)
        order = (plan.order if rows is None else np.asarray(rows)[plan.order]).tolist()
        starts = plan.run_start.tolist()
        shards = plan.run_shard.tolist()
        offsets = plan.run_offset.tolist()
        rb = self._record_bytes
        if runs is None and len(shards) == len(order):  # one record per run: no slicing
            for b, shard, pos in zip(order, shards, offsets):
                bufs = [views[b]]
                got = os.preadv(fds[shard], bufs, pos)
                if got != rb:
                    self._finish_short_read(fds[shard], bufs, pos, got, shard)
            return
        for r in runs if runs is not None else range(plan.n_runs):
            a, z = starts[r], starts[r + 1]
            bufs = [views[b] for b in order[a:z]]
            got = os.preadv(fds[shards[r]], bufs, offsets[r])
            if got != (z - a) * rb:
                self._finish_short_read(fds[shards[r]], bufs, offsets[r], got, shards[r])

    def read_chunks(self, plan: ReadPlan, scratch: np.ndarray) -> Iterator[tuple[int, int]]:
        """Read ``plan`` piece by piece into the first rows of ``scratch`` (G, H, W).

        Yields ``(a, z)`` after sorted positions ``a:z`` of the plan (at most G records of one
        run) lie in ``scratch[: z - a]``; the caller uses them before asking for the next piece.
        A piece of a few records stays in the CPU cache, so a transforming copy out of it reads
        cache instead of memory.
        """
        fds = self._descriptors()
        views = self.row_views(scratch)
        size = len(views)
        starts = plan.run_start.tolist()
        shards = plan.run_shard.tolist()
        offsets = plan.run_offset.tolist()
        rb = self._record_bytes
        for r in range(plan.n_runs):
            a, z = starts[r], starts[r + 1]
            fd, pos = fds[shards[r]], offsets[r]
            for k in range(a, z, size):
                n = min(size, z - k)
                bufs = views[:n]
                got = os.preadv(fd, bufs, pos)
                if got != n * rb:
                    self._finish_short_read(fd, bufs, pos, got, shards[r])
                pos += n * rb
                yield k, k + n

    def _finish_short_read(
        self, fd: int, bufs: list[memoryview], pos: int, got: int, shard: int
    ) -> None:
        """Continue a preadv that returned fewer bytes than asked (signals, network files)."""
        done = got
        while True:
            skip = done
            rest: list[memoryview] = []
            for buf in bufs:
                if skip >= len(buf):
                    skip -= len(buf)
                    continue
                rest.append(buf[skip:])
                skip = 0
            if not rest:
                return
            n = os.preadv(fd, rest, pos + done)
            if n == 0:
                raise InputError(
                    "shard ended before the records its header promises",
                    file=self._shards[shard].path,
                    expected=f"{sum(len(b) for b in bufs)} bytes at {pos}",
                    found=f"{done} bytes",
                )
            done += n

    def check_out(self, out: np.ndarray, batch: int) -> None:
        """Refuse an output buffer that cannot hold ``batch`` records."""
        want = (batch, *self._shape)
        if out.shape != want or out.dtype != self._dtype or not out.flags.c_contiguous:
            raise InputError(
                "output buffer does not fit the batch",
                expected=f"C-contiguous {want} {self._dtype}",
                found=f"{'C-contiguous ' if out.flags.c_contiguous else ''}{out.shape} {out.dtype}",
            )
        if not out.flags.writeable:
            raise InputError(
                "output buffer is read-only", expected="writeable array", found="read-only"
            )

    def read_into(self, indices: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Read records ``indices`` (B,) into ``out`` (B, H, W); row b holds record indices[b]."""
        plan = self.plan(np.asarray(indices))
        self.check_out(out, len(plan.order))
        self.read_planned(plan, out)
        return out

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Read records ``indices`` (B,) into a fresh (B, H, W) array."""
        idx = np.asarray(indices)
        self.locate(idx)
        out = np.empty((int(idx.shape[0]), *self._shape), self._dtype)
        return self.read_into(idx, out)

    def advise(self, indices: np.ndarray, advice: int | None = None) -> None:
        """Tell the kernel records ``indices`` will be needed soon (``POSIX_FADV_WILLNEED``).

        The kernel starts reading them in the background, so a cold batch has many reads in
        flight instead of one page fault at a time. A no-op where ``posix_fadvise`` is missing.
        """
        if not hasattr(os, "posix_fadvise"):
            return
        how = os.POSIX_FADV_WILLNEED if advice is None else advice
        plan = self.plan(np.asarray(indices))
        fds = self._descriptors()
        lengths = np.diff(plan.run_start) * self._record_bytes
        for shard, pos, length in zip(plan.run_shard, plan.run_offset, lengths):
            os.posix_fadvise(fds[int(shard)], int(pos), int(length), how)

    def evict(self) -> None:
        """Drop the shards' clean pages from the page cache (``POSIX_FADV_DONTNEED``).

        Without root this is the way to make the data cold again for a measurement.
        """
        if not hasattr(os, "posix_fadvise"):
            return
        for fd in self._descriptors():
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
