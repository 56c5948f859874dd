"""Ptychography fixture generation: trainset vs the plan's bare pseudocode, same process.

The baseline is the plan's section 4 algorithm without validation (np.load, transpose, slice,
cast, np.savez_compressed). Prints seconds per run and the ratio trainset / baseline, which is
the price of the input checks, the DATA-001 check and the deterministic atomic writer.
Run: python benchmarks/bench_ptycho_fixture.py [--positions 1087] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from trainset.ptycho import canonicalize, generate_fixture, write_legacy_source


def plan_baseline(source: Path, output: Path, n_subset: int) -> None:
    """The plan's section 4 pseudocode: no checks, first n positions."""
    with np.load(source, allow_pickle=False) as src:
        arrays = {
            "diffraction": src["diffraction"].transpose(2, 0, 1)[:n_subset].astype(np.float32),
            "objectGuess": src["objectGuess"].astype(np.complex64),
            "probeGuess": src["probeGuess"].astype(np.complex64),
            "xcoords": src["xcoords"][:n_subset],
            "ycoords": src["ycoords"][:n_subset],
            "xcoords_start": src["xcoords_start"][:n_subset],
            "ycoords_start": src["ycoords_start"][:n_subset],
        }
    np.savez_compressed(output, **arrays)


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=1087)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = write_legacy_source(root / "src.npz", args.positions, compress=False)
        base = best_of(args.repeats, lambda: plan_baseline(source, root / "base.npz", 64))
        ours = best_of(args.repeats, lambda: generate_fixture(source, root / "fix.npz", 64))
        whole = best_of(args.repeats, lambda: canonicalize(source, root / "canon.npz"))
    print(f"source: (64, 64, {args.positions}) float64, best of {args.repeats}")
    print(f"plan baseline fixture   {base:8.3f} s")
    print(f"trainset fixture        {ours:8.3f} s   ratio {ours / base:5.2f} x baseline")
    print(f"trainset canonicalize   {whole:8.3f} s   ratio {whole / base:5.2f} x baseline")


if __name__ == "__main__":
    main()
