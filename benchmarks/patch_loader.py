"""Patch loader throughput: the ceiling, the SAR plan's LazyPatchDataset, and trainset.loading.

Builds synthetic page-aligned shards of 256x256 float32 patches (``--size-gb``, 4 GB by default
as the issue asks; ``--size-gb 0.25 --seconds 1`` is a quick try), then measures, interleaved
round by round so that machine noise hits every contender alike:

- ceiling:   random 256 KiB ``os.preadv`` into a batch buffer, ``--threads`` threads
- baseline:  the plan's ``LazyPatchDataset`` (``np.load(mmap_mode='r')[i].copy()`` per item,
             numpy flips/rot90) under ``DataLoader(shuffle=True)``, 0 workers
- ours/dev:  ``ThreadedLoader``, D4 left to the device (``augment="device"`` with CUDA,
             ``"deferred"`` without: the codes come with the batch, the GPU applies them)
- ours/cpu:  ``ThreadedLoader`` with D4 fused into the single CPU copy
- dl/recycled: ``ShardDataset`` under a DataLoader with 2 workers, recycled shared buffers
- dl/stock:  the same dataset under a stock DataLoader (default collate, fresh tensors)
- sar/dm:    ``SARDataModule(root, batch_size=B).train_dataloader()``, every other argument
             its default (threads chosen from the machine, D4 fused on the CPU): what a user of
             the plan's API gets
- sar/dm+dev: the same with ``augment_on_device=True`` (D4 left to the device: applied by
             ``on_after_batch_transfer`` on CUDA, yielded as codes without a GPU)
- sar/dm@8:  ``SARDataModule(root)`` with the plan's default batch of 8 (for information)
- focus/dm:  ``FocusDataModule(root, batch_size=4)`` over packed synthetic scenes (3 x 24
             frames of 256x256, 4 sets, all modalities, clips of 8), counted in bytes read from
             the packs per second / 256 KiB, so that its rate compares with the others'

``--cold`` then compares random patch reads from a dropped page cache: mmap page faults against
explicit reads with many in flight. The cache is dropped through ``/proc/sys/vm/drop_caches``
when that is writable (root on a real machine), else by ``posix_fadvise(DONTNEED)`` per shard.
Each round measures every contender once for ``--seconds`` (the order alternates from round to
round; the ceiling is measured right before or after ours/dev and sar/dm+dev and its rate is
the mean of its measurements), and the acceptance ratios are computed within each round and reported as the median over rounds, so that a slow spell of the machine hits both sides
of a ratio. Only ratios from one run mean anything.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainset.focus.datamodule import FocusDataModule
from trainset.loading import (
    EpochSampler,
    ShardDataset,
    ShardReader,
    ThreadedLoader,
    d4_codes,
    d4_view,
    default_threads,
    shard_dataloader,
)
from trainset.loading.loader import Augment
from trainset.sar.datamodule import SARDataModule
from trainset.sar.manifest import FORMAT, VERSION, write_manifest
from trainset.store import NPY_ALIGN, atomic_path
from trainset.store.codecs import npy_header_bytes

PATCH = 256


# -- synthetic shards ------------------------------------------------------------------------
def build_shards(root: Path, size_gb: float, per_shard: int) -> list[Path]:
    """Write shards totalling ``size_gb`` GB; record r carries r in its pixel (0, 0)."""
    rec_bytes = PATCH * PATCH * 4
    total = max(per_shard, int(size_gb * 1e9 // rec_bytes))
    block = np.random.default_rng(0).random((64, PATCH, PATCH), dtype=np.float32)
    paths: list[Path] = []
    first = 0
    while first < total:
        n = min(per_shard, total - first)
        path = root / f"shard_{len(paths):05d}.npy"
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(npy_header_bytes((n, PATCH, PATCH), np.float32, align=NPY_ALIGN))
            for a in range(0, n, len(block)):
                chunk = block[: min(len(block), n - a)].copy()
                chunk[:, 0, 0] = np.arange(first + a, first + a + len(chunk))
                fh.write(chunk.data)
        paths.append(path)
        first += n
    return paths


def write_bench_manifest(root: Path, reader: ShardReader) -> None:
    """A SAR manifest over the synthetic shards (every 256 patches a source raster, so that the
    datamodule's default by-source split works; no clip bounds)."""
    n = len(reader)
    source = np.arange(n) // 256
    write_manifest(
        root,
        {
            "format": FORMAT,
            "version": VERSION,
            "patch_size": PATCH,
            "stride": PATCH,
            "units": "intensity",
            "dtype": "float32",
            "channels": 1,
            "shards": [
                {"path": Path(s.path).name, "count": s.count, "sha256": None} for s in reader.shards
            ],
            "patches": {"source": source, "band": [0] * n, "row": [0] * n, "col": list(range(n))},
            "sources": [{"path": f"synthetic_{i}"} for i in range(int(source[-1]) + 1)],
        },
    )


# -- the plan's LazyPatchDataset, reproduced as the baseline ---------------------------------
class PlanLazyPatchDataset(Dataset[torch.Tensor]):
    """The SAR plan's LazyPatchDataset, as written there (file index instead of metadata.npy)."""

    def __init__(self, file_index: list[tuple[str, int]], augment: bool = True, shuffle_seed=42):
        self.file_index = file_index
        self.augment = augment
        self.cumsum = [0]
        for _, count in self.file_index:
            self.cumsum.append(self.cumsum[-1] + count)
        self.total = self.cumsum[-1]
        if shuffle_seed is not None:
            rng = np.random.default_rng(shuffle_seed)
            self.shuffle_idx = rng.permutation(self.total)
        else:
            self.shuffle_idx = np.arange(self.total)

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, idx: int) -> torch.Tensor:
        real_idx = self.shuffle_idx[idx]
        file_idx = np.searchsorted(self.cumsum[1:], real_idx, side="right")
        local_idx = real_idx - self.cumsum[file_idx]
        fpath, _ = self.file_index[file_idx]
        patch = np.load(fpath, mmap_mode="r")[local_idx].copy()
        if self.augment:
            patch = self._augment(patch)
        return torch.from_numpy(patch).unsqueeze(0).float()

    def _augment(self, patch: np.ndarray) -> np.ndarray:
        if np.random.random() > 0.5:
            patch = np.fliplr(patch).copy()
        if np.random.random() > 0.5:
            patch = np.flipud(patch).copy()
        k = np.random.randint(0, 4)
        if k > 0:
            patch = np.rot90(patch, k).copy()
        return patch


# -- contenders ------------------------------------------------------------------------------
def timed(batches: Iterable[object], seconds: float, size: Callable[[object], int]) -> float:
    """Patches per second drawn from ``batches`` for about ``seconds``."""
    it = iter(batches)
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    for b in it:
        n += size(b)
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - t0
    close = getattr(it, "close", None)
    if close is not None:
        close()
    return n / elapsed


def batch_size_of(b: object) -> int:
    x = b[0] if isinstance(b, tuple) else b
    assert isinstance(x, torch.Tensor)
    return int(x.shape[0])


def ceiling(reader: ShardReader, batch: int, threads: int, seconds: float, seed: int) -> float:
    """Random whole-record ``preadv`` into rows of a batch buffer, ``threads`` threads."""
    rb = reader.record_bytes
    shards = reader.shards
    counts = np.array([s.count for s in shards])
    fds = [os.open(s.path, os.O_RDONLY) for s in shards]
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def work(t: int) -> None:
        rng = np.random.default_rng(seed + t)
        buf = np.empty((batch, rb), np.uint8)
        rows = [memoryview(buf[i]) for i in range(batch)]
        while time.perf_counter() < stop:
            which = rng.integers(0, len(shards), batch)
            local = (rng.random(batch) * counts[which]).astype(np.int64)
            for i in range(batch):
                s = int(which[i])
                os.preadv(fds[s], [rows[i]], shards[s].data_offset + int(local[i]) * rb)
            done[t] += batch

    t0 = time.perf_counter()
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rate = sum(done) / (time.perf_counter() - t0)
    for fd in fds:
        os.close(fd)
    return rate


def check_loader(reader: ShardReader, batch: int, threads: int, mode: Augment, dev) -> None:
    """Ours gives exactly the records (and D4) the sampler asks for: every pixel of the first
    ``4 * threads`` batches from the start and from the middle of an epoch, against ``np.load``
    order and numpy's flips; pixel (0, 0) of record r also holds r."""
    sampler = EpochSampler(len(reader), batch, seed=0)
    loader = ThreadedLoader(reader, sampler, threads=threads, augment=mode, device=dev)
    for start in (0, len(sampler) // 2):
        loader.load_state_dict({**sampler.state_dict(), "epoch": 0, "batch": start})
        it = iter(loader)
        for j in range(start, min(start + 4 * threads, len(sampler) - 1)):
            got = next(it)
            want = sampler.batch(0, j)
            records = reader.read(want.indices)
            assert np.array_equal(records[:, 0, 0], want.indices.astype(np.float32)), j
            codes = d4_codes(0, 0, want.indices)
            if mode == "deferred":
                x, got_codes = got
                assert np.array_equal(got_codes.numpy(), codes), j
            else:
                x = got
                records = np.stack([d4_view(r, int(c)) for r, c in zip(records, codes)])
            assert np.array_equal(x[:, 0].cpu().numpy(), records), j
        it.close()


# -- cold cache ------------------------------------------------------------------------------
def drop_cache(reader: ShardReader) -> str:
    """Drop the shards from the page cache; returns how."""
    how = ["posix_fadvise(DONTNEED)"]
    reader.evict()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        how.append("drop_caches")
    except OSError:
        pass
    return " + ".join(how)


def cold_mmap(reader: ShardReader, picks: np.ndarray, threads: int, willneed: bool) -> float:
    """Random patches copied out of mmap views (page faults), ``threads`` threads.

    With ``willneed`` every picked record is first announced with ``madvise(MADV_WILLNEED)``.
    """
    maps = []
    views = []
    for s in reader.shards:
        with open(s.path, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        maps.append(mm)
        count = s.count * reader.record_shape[0] * reader.record_shape[1]
        views.append(
            np.frombuffer(mm, reader.dtype, count, s.data_offset).reshape(
                s.count, *reader.record_shape
            )
        )
    shard, offset = reader.locate(picks)
    local = picks - reader.starts[shard]
    parts = np.array_split(np.arange(len(picks)), threads)
    t0 = time.perf_counter()
    if willneed:
        for s, pos in zip(shard, offset):
            maps[int(s)].madvise(mmap.MADV_WILLNEED, int(pos), reader.record_bytes)

    def work(rows: np.ndarray) -> None:
        out = np.empty(reader.record_shape, reader.dtype)
        for k in rows:
            np.copyto(out, views[int(shard[k])][int(local[k])])

    workers = [threading.Thread(target=work, args=(p,)) for p in parts]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rate = len(picks) / (time.perf_counter() - t0)
    views.clear()  # release the buffers before closing the maps
    for mm in maps:
        mm.close()
    return rate


def cold_loader(reader: ShardReader, picks: np.ndarray, batch: int, threads: int, ra: int) -> float:
    """The same patches through ThreadedLoader: ``threads`` reads in flight, fadvise ahead."""
    sampler = EpochSampler(picks, batch, shuffle=False)
    loader = ThreadedLoader(
        reader, sampler, threads=threads, prefetch=threads + 2, readahead=ra, pin=False
    )
    t0 = time.perf_counter()
    n = 0
    for b in loader:
        n += int(b.shape[0])
    return n / (time.perf_counter() - t0)


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=4.0, help="synthetic set size (GB)")
    ap.add_argument("--dir", type=Path, default=None, help="where to build shards (kept)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=1.0, help="per contender per round")
    ap.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the uncounted first pass over every contender",
    )
    ap.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where D4 goes for ours/dev and sar/dm+dev (auto: cuda when available)",
    )
    ap.add_argument("--cold", action="store_true", help="also measure from a dropped cache")
    ap.add_argument("--cold-patches", type=int, default=2000)
    ap.add_argument("--cold-threads", type=int, default=16)
    ap.add_argument("--cold-readahead", type=int, default=4, help="batches announced ahead")
    args = ap.parse_args(argv)

    own_dir = args.dir is None
    root = Path(tempfile.mkdtemp(prefix="trainset-patch-bench-")) if own_dir else args.dir
    root.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, root)
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def focus_set(root: Path) -> tuple[Path, int]:
    """A packed synthetic focus set under ``root/focus`` (built once); returns it and the bytes
    one clip of 8 frames reads from the packs."""
    from clip_loader import build_set
    from trainset.focus.pack import pack_dataset

    focus = root / "focus"
    if not (focus / "scene_index.json").is_file():
        focus.mkdir(parents=True, exist_ok=True)
        build_set(focus, 3, 24, PATCH)
        pack_dataset(focus)
    clip_bytes = 8 * PATCH * PATCH * (3 + 2 + 2 + 3)  # frames u8, depth f16, focus f16, bokeh u8
    return focus, clip_bytes


def check_datamodule(root: Path, reader: ShardReader, batch: int) -> None:
    """The user's datamodule gives the sampler's records with their D4 codes, pixel by pixel."""
    dm = SARDataModule(root, batch_size=batch)
    loader = dm.train_dataloader()
    sampler = loader.batch_sampler
    for j, got in zip(range(3), loader):
        want = sampler.batch(0, j)
        records = reader.read(want.indices)
        codes = d4_codes(dm.seed, 0, want.indices)
        records = np.stack([d4_view(r, int(c)) for r, c in zip(records, codes)])
        assert np.array_equal(got[:, 0].numpy(), records), j


def run(args: argparse.Namespace, root: Path) -> int:
    existing = sorted(root.glob("shard_*.npy"))
    t0 = time.perf_counter()
    paths = existing or build_shards(root, args.size_gb, per_shard=1024)
    reader = ShardReader(paths)
    gb = len(reader) * reader.record_bytes / 1e9
    print(
        f"{len(reader)} patches of {PATCH}x{PATCH} float32 in {len(paths)} shards ({gb:.2f} GB), "
        f"{'reused' if existing else f'built in {time.perf_counter() - t0:.1f} s'} at {root}"
    )
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    print(
        f"batch {args.batch}, {args.threads} threads (ours), {default_threads()} threads "
        f"(datamodule default), {os.cpu_count()} cpus, "
        f"cuda={'yes: ' + torch.cuda.get_device_name() if cuda else 'no'}, "
        f"load {os.getloadavg()[0]:.2f}"
    )

    # Correctness first: ours equals np.load, record by record.
    sample = np.random.default_rng(1).choice(len(reader), 64, replace=False)
    got = reader.read(sample)
    assert np.array_equal(got[:, 0, 0], sample.astype(np.float32)), "records out of place"

    write_bench_manifest(root, reader)
    file_index = [(s.path, s.count) for s in reader.shards]
    baseline_ds = PlanLazyPatchDataset(file_index, augment=True)
    dev_mode: Augment = "device" if cuda else "deferred"
    dev = torch.device("cuda") if cuda else None
    t0 = time.perf_counter()
    focus_root, clip_bytes = focus_set(root)
    print(f"focus set: {focus_root} ({time.perf_counter() - t0:.1f} s)")

    # One loader each for the whole run, as a training loop keeps one: every round continues the
    # epoch where the previous round stopped (threads restart, the buffer ring is reused).
    ours_dev = ThreadedLoader(
        reader,
        EpochSampler(len(reader), args.batch, seed=0),
        threads=args.threads,
        augment=dev_mode,
        device=dev,
    )
    ours_cpu = ThreadedLoader(
        reader, EpochSampler(len(reader), args.batch, seed=1), threads=args.threads, augment="cpu"
    )
    check_loader(reader, args.batch, args.threads, dev_mode, dev)
    check_datamodule(root, reader, args.batch)
    sar_dm = SARDataModule(root, batch_size=args.batch).train_dataloader()
    dm_dev = SARDataModule(root, batch_size=args.batch, augment_on_device=True, device=dev)
    sar_dev = dm_dev.train_dataloader()
    sar_b8 = SARDataModule(root).train_dataloader()
    focus_dm = FocusDataModule(focus_root, batch_size=4).train_dataloader()

    def on_device(batches: Iterable[object]) -> Iterable[object]:
        for b in batches:  # what Lightning does after the transfer
            yield dm_dev.on_after_batch_transfer(b, 0) if cuda else b

    def clips(b: object) -> int:
        assert isinstance(b, dict)
        return int(b["frames"].shape[0]) * clip_bytes // reader.record_bytes

    contenders: dict[str, Callable[[int], float]] = {
        "ceiling": lambda r: ceiling(reader, args.batch, args.threads, args.seconds, r),
        f"ours/{dev_mode}": lambda r: timed(ours_dev, args.seconds, batch_size_of),
        "ours/cpu": lambda r: timed(ours_cpu, args.seconds, batch_size_of),
        "sar/dm": lambda r: timed(sar_dm, args.seconds, batch_size_of),
        "sar/dm+dev": lambda r: timed(on_device(sar_dev), args.seconds, batch_size_of),
        "sar/dm@8": lambda r: timed(sar_b8, args.seconds, batch_size_of),
        "focus/dm": lambda r: timed(focus_dm, args.seconds, clips),
        "baseline": lambda r: timed(
            DataLoader(baseline_ds, batch_size=args.batch, shuffle=True, num_workers=0),
            args.seconds,
            batch_size_of,
        ),
        "dl/recycled": lambda r: timed(
            shard_dataloader(
                ShardDataset(reader),
                EpochSampler(len(reader), args.batch, seed=r),
                num_workers=args.threads,
            ),
            args.seconds,
            batch_size_of,
        ),
        "dl/stock": lambda r: timed(
            DataLoader(
                ShardDataset(reader),
                batch_size=args.batch,
                shuffle=True,
                num_workers=args.threads,
            ),
            args.seconds,
            batch_size_of,
        ),
    }
    dev_name = f"ours/{dev_mode}"
    near_ceiling = (dev_name, "sar/dm+dev")  # the ceiling is measured next to these
    names = list(contenders)
    if args.warmup:
        for fn in contenders.values():
            fn(args.rounds)  # a seed no counted round uses
    results: dict[str, list[float]] = {k: [] for k in contenders}
    ratios: dict[str, list[float]] = {
        "dev/ceiling": [],
        "dev/baseline": [],
        "cpu/baseline": [],
        "sar/dm+dev/ceiling": [],
        "sar/dm+dev/baseline": [],
        "sar/dm/baseline": [],
        "sar/dm/ceiling": [],
        "focus/dm/ceiling": [],
    }
    for r in range(args.rounds):
        # Alternate the order so that no contender always runs first or last. The ceiling also
        # runs right after (or, backwards, right before) the device contenders, so a change of
        # the machine's load during the round hits both sides of their ratio alike.
        rates: dict[str, float] = {}
        ceilings: list[float] = []
        forward = r % 2 == 0
        for name in names if forward else names[::-1]:
            if name in near_ceiling and not forward:
                ceilings.append(contenders["ceiling"](r + 1))
            rates[name] = contenders[name](r)
            if name == "ceiling":
                ceilings.append(rates[name])
            if name in near_ceiling and forward:
                ceilings.append(contenders["ceiling"](r + 1))
        rates["ceiling"] = float(np.mean(ceilings))
        for name in names:
            results[name].append(rates[name])
        base, ceil = rates["baseline"], rates["ceiling"]
        ratios["dev/ceiling"].append(rates[dev_name] / ceil)
        ratios["dev/baseline"].append(rates[dev_name] / base)
        ratios["cpu/baseline"].append(rates["ours/cpu"] / base)
        ratios["sar/dm+dev/ceiling"].append(rates["sar/dm+dev"] / ceil)
        ratios["sar/dm+dev/baseline"].append(rates["sar/dm+dev"] / base)
        ratios["sar/dm/baseline"].append(rates["sar/dm"] / base)
        ratios["sar/dm/ceiling"].append(rates["sar/dm"] / ceil)
        ratios["focus/dm/ceiling"].append(rates["focus/dm"] / ceil)
        line = " | ".join(f"{name} {rates[name]:,.0f}" for name in names)
        print(
            f"round {r + 1}: {line} patches/s\n"
            f"         {dev_name} {ratios['dev/ceiling'][-1]:.2f} of ceiling; "
            f"sar/dm+dev {ratios['sar/dm+dev/ceiling'][-1]:.2f} of ceiling, "
            f"x{ratios['sar/dm+dev/baseline'][-1]:.1f} baseline; "
            f"sar/dm x{ratios['sar/dm/baseline'][-1]:.1f} baseline",
            flush=True,
        )

    med = {k: float(np.median(v)) for k, v in results.items()}
    print("\nmedian patches/s over rounds, and ratios of the medians:")
    for name, rate in med.items():
        print(
            f"  {name:14s} {rate:>10,.0f}   x{rate / med['baseline']:6.1f} baseline   "
            f"{rate / med['ceiling']:5.2f} of ceiling"
        )
    clip_rate = med["focus/dm"] * reader.record_bytes / clip_bytes
    print(f"  (focus/dm: {clip_rate:,.1f} clips of 8 frames/s, {clip_bytes / 2**20:.1f} MiB each)")
    per = {k: float(np.median(v)) for k, v in ratios.items()}
    spread = {k: (min(v), max(v)) for k, v in ratios.items()}
    print("\nper-round ratios (both sides measured back to back), median [min, max]:")
    for k, v in per.items():
        print(f"  {k:20s} {v:6.2f}  [{spread[k][0]:.2f}, {spread[k][1]:.2f}]")
    print(
        f"\nacceptance (median of per-round ratios): sar/dm+dev {per['sar/dm+dev/baseline']:.1f}x "
        f"baseline (>= 10) and {per['sar/dm+dev/ceiling']:.2f} of ceiling (>= 0.8); "
        f"sar/dm {per['sar/dm/baseline']:.1f}x baseline (>= 5); "
        f"{dev_name} {per['dev/ceiling']:.2f} of ceiling; load {os.getloadavg()[0]:.2f}"
    )
    if args.cold:
        cold(args, reader)
    return 0


def cold(args: argparse.Namespace, reader: ShardReader) -> None:
    picks = np.random.default_rng(7).choice(len(reader), args.cold_patches, replace=False)
    picks = picks.astype(np.int64)
    print(f"\ncold cache, {len(picks)} random patches per measurement:")
    rates: dict[str, float] = {}
    for name, fn in (
        ("mmap faults, 1 thread", lambda: cold_mmap(reader, picks, 1, False)),
        (
            f"mmap faults, {args.threads} threads",
            lambda: cold_mmap(reader, picks, args.threads, False),
        ),
        ("mmap + madvise(WILLNEED)", lambda: cold_mmap(reader, picks, args.threads, True)),
        ("preadv, 1 in flight", lambda: cold_loader(reader, picks, args.batch, 1, 0)),
        (
            f"preadv, {args.cold_threads} in flight + fadvise",
            lambda: cold_loader(reader, picks, args.batch, args.cold_threads, args.cold_readahead),
        ),
    ):
        how = drop_cache(reader)
        rates[name] = fn()
        print(f"  {name:34s} {rates[name]:>9,.0f} patches/s   (cache dropped by {how})", flush=True)
    best = rates[f"preadv, {args.cold_threads} in flight + fadvise"]
    faults = rates[f"mmap faults, {args.threads} threads"]
    print(f"acceptance: explicit reads {best / faults:.1f}x mmap page faults (>= 3)")


if __name__ == "__main__":
    sys.exit(main())
