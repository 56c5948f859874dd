"""Ptychography: legacy NPZ -> canonical (DATA-001) NPZ, small fixtures, contract checks."""

from trainset.ptycho.contract import DATA001, PER_SCAN_KEYS, check_npz
from trainset.ptycho.convert import CanonicalizeResult, canonicalize
from trainset.ptycho.demo import run_ptycho_demo
from trainset.ptycho.fixture import generate_fixture, subset_indices
from trainset.ptycho.layout import Layout, detect_layout, to_canonical
from trainset.ptycho.source import CanonicalData, read_source
from trainset.ptycho.synthetic import make_legacy_arrays, write_legacy_source

__all__ = [
    "DATA001",
    "PER_SCAN_KEYS",
    "CanonicalData",
    "CanonicalizeResult",
    "Layout",
    "canonicalize",
    "check_npz",
    "detect_layout",
    "generate_fixture",
    "make_legacy_arrays",
    "read_source",
    "run_ptycho_demo",
    "subset_indices",
    "to_canonical",
    "write_legacy_source",
]
