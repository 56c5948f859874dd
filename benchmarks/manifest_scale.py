"""SAR manifest at archive scale: open time and memory of a 5-million-patch manifest.

Writes one patch set's manifest twice, without pixel data (no shard is read to open a
manifest): in today's JSON form (version 1: the per-patch table as JSON lists inside
``manifest.json``, as ``trainset sar patches`` wrote it) and in the current form (version 2:
``manifest.json`` plus the per-patch table in a ``.npy`` beside it, written by
``Manifest.write``). Then, in a fresh child process per measurement (so that memory is that
of the open alone), it opens each:

- json:  what the loader did until now: ``read_json`` and the per-patch list checks
- npy:   ``Manifest.open`` of the current form (the table is memory-mapped)
- json via Manifest: ``Manifest.open`` of the old form (existing manifests still load)

and, after the open, reads every patch's source (what ``SARDataModule`` needs for its split).
Each child reports wall time and the growth of its peak RSS over its state after the imports.
Rounds alternate the order; ratios are computed within each round and reported as the median
[min, max] over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from trainset.sar.manifest import FORMAT, PATCH_KEYS, Manifest, ShardEntry, patch_table
from trainset.store import read_json

SHARD_PATCHES = 4096  # patches per shard, as `trainset sar patches` writes them


def synthetic_table(n: int) -> np.ndarray:
    """(n,) per-patch table of a plausible archive: 2000 sources, 2 bands, 128 px stride."""
    rng = np.random.default_rng(0)
    i = np.arange(n)
    columns = {
        "source": i * 2000 // n,
        "band": 1 + i % 2,
        "row": (i // 2 // 150) % 150 * 128,
        "col": (i // 2) % 150 * 128,
        "valid_fraction": np.round(rng.uniform(0.9, 1.0, n), 6),
    }
    return patch_table(columns, n)


def header(n: int, version: int) -> dict[str, Any]:
    counts = [SHARD_PATCHES] * (n // SHARD_PATCHES) + (
        [n % SHARD_PATCHES] if n % SHARD_PATCHES else []
    )
    return {
        "format": FORMAT,
        "version": version,
        "patch_size": 256,
        "stride": 128,
        "units": "amplitude",
        "dtype": "float32",
        "channels": 1,
        "band_mode": "separate",
        "bands": None,
        "vmin": 37.5,
        "vmax": 70.4,
        "clip": {"method": "percentile", "low_pct": 1.0, "high_pct": 99.0},
        "quality": {"low": 0.01, "high": 0.99, "min_fraction": 0.9},
        "shards": [
            {"path": f"shard_{i:05d}.npy", "count": c, "sha256": "0" * 64}
            for i, c in enumerate(counts)
        ],
        "sources": [{"path": f"../raw/S1_{i:04d}.tif", "sha256": "0" * 64} for i in range(2000)],
    }


def write_json_form(directory: Path, table: np.ndarray) -> None:
    """Version 1 as the tiling wrote it: one key per line, per-patch lists on one line each
    (streamed in chunks, so that writing does not need the lists in memory)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = header(len(table["source"]), 1)
    with open(directory / "manifest.json", "w") as fh:
        fh.write("{\n")
        for k, v in data.items():
            fh.write(f" {json.dumps(k)}: {json.dumps(v)},\n")
        fh.write(' "patches": {')
        for i, key in enumerate((*PATCH_KEYS, "valid_fraction")):
            fh.write(("" if i == 0 else ", ") + f"{json.dumps(key)}: [")
            column = np.asarray(table[key])
            for a in range(0, len(column), 1_000_000):
                chunk = column[a : a + 1_000_000]
                text = ", ".join(
                    map(repr, chunk.astype(float if key == "valid_fraction" else int).tolist())
                )
                fh.write(("" if a == 0 else ", ") + text)
            fh.write("]")
        fh.write("}\n}\n")


def write_npy_form(directory: Path, table: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data = header(len(table["source"]), 2)
    shards = [ShardEntry(s["path"], s["count"], s["sha256"]) for s in data["shards"]]
    Manifest(
        root=directory,
        patch_size=256,
        dtype="float32",
        shards=shards,
        patches=table,
        stride=128,
        units="amplitude",
        vmin=37.5,
        vmax=70.4,
        sources=data["sources"],
    ).write(directory)


# -- the child: one open ---------------------------------------------------------------------
def status_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    """Make the peak RSS the current RSS (Linux >= 4.0), so that a later peak is the open's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_mib() -> float:
    return status_mib("VmHWM")


def today_open(path: Path) -> tuple[dict[str, Any], int]:
    """What ``load_manifest`` did before the table moved out of the JSON."""
    data = read_json(path / "manifest.json")
    assert isinstance(data, dict) and data.get("format") == FORMAT
    total = sum(int(s["count"]) for s in data["shards"])
    for key in PATCH_KEYS:
        assert isinstance(data["patches"][key], list) and len(data["patches"][key]) == total
    return data, total


def child(kind: str, path: Path) -> None:
    reset_peak()
    before = status_mib("VmRSS")
    t0 = time.perf_counter()
    if kind == "json":
        data, total = today_open(path)
        t1 = time.perf_counter()
        open_peak = peak_mib()
        sources = np.asarray(data["patches"]["source"], dtype=np.int64)
    else:  # "npy" or "manifest": Manifest.open of either form
        manifest = Manifest.open(path)
        total = manifest.num_patches
        t1 = time.perf_counter()
        open_peak = peak_mib()
        sources = manifest.source_of_patches()
    t2 = time.perf_counter()
    assert len(sources) == total
    print(
        json.dumps(
            {
                "open_s": t1 - t0,
                "sources_s": t2 - t0,
                "open_mib": open_peak - before,
                "sources_mib": peak_mib() - before,
            }
        )
    )


def measure(kind: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=5_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the manifests (kept)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, path = args.child
        child(kind, Path(path))
        return 0
    own = args.dir is None
    root = Path(tempfile.mkdtemp(prefix="trainset-manifest-bench-")) if own else args.dir
    try:
        old, new = root / "json", root / "npy"
        if not ((old / "manifest.json").is_file() and (new / "manifest.json").is_file()):
            t0 = time.perf_counter()
            table = synthetic_table(args.patches)
            write_json_form(old, table)
            write_npy_form(new, table)
            del table
            print(
                f"wrote both forms of {args.patches:,} patches in {time.perf_counter() - t0:.1f} s"
            )
        sizes = {
            "json": (old / "manifest.json").stat().st_size,
            "npy": sum(p.stat().st_size for p in new.iterdir()),
        }
        print(
            f"on disk: json {sizes['json'] / 2**20:.0f} MiB, "
            f"npy (manifest.json + table) {sizes['npy'] / 2**20:.0f} MiB; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        runs: dict[str, list[dict[str, float]]] = {"json": [], "npy": [], "json via Manifest": []}
        paths = {"json": old, "npy": new, "json via Manifest": old}
        kinds = {"json": "json", "npy": "npy", "json via Manifest": "manifest"}
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for name in order:
                runs[name].append(measure(kinds[name], paths[name]))
            line = " | ".join(
                f"{n} open {runs[n][-1]['open_s']:.3f} s +{runs[n][-1]['open_mib']:.1f} MiB"
                for n in runs
            )
            print(f"round {r + 1}: {line}", flush=True)
        print("\nmedian over rounds (open; open + every patch's source):")
        for name, rs in runs.items():
            med = {k: float(np.median([x[k] for x in rs])) for k in rs[0]}
            print(
                f"  {name:18s} {med['open_s']:8.3f} s  +{med['open_mib']:7.1f} MiB peak RSS;"
                f"  {med['sources_s']:8.3f} s  +{med['sources_mib']:7.1f} MiB"
            )
        for what, key in (("open time", "open_s"), ("open memory", "open_mib"),
                          ("open + sources time", "sources_s"),
                          ("open + sources memory", "sources_mib")):  # fmt: skip
            # RSS is counted in pages of 4 KiB: a floor of one page keeps the ratio finite
            floor = 4 / 1024 if key.endswith("mib") else 1e-6
            ratio = [j[key] / max(n[key], floor) for j, n in zip(runs["json"], runs["npy"])]
            print(
                f"{what:22s} json / npy {np.median(ratio):10.1f}x [{min(ratio):.1f}, {max(ratio):.1f}]"
            )
        print("acceptance: open >= 10x faster and in >= 10x less memory than the JSON form")
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
