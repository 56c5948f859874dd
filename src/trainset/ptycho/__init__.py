"""Ptychography: legacy NPZ -> canonical (DATA-001) NPZ, small fixtures, contract checks,
diffraction simulated from a reconstruction, CXI and tike imports."""

from trainset.ptycho.contract import DATA001, PER_SCAN_KEYS, check_npz
from trainset.ptycho.convert import CanonicalizeResult, canonicalize
from trainset.ptycho.demo import run_ptycho_demo
from trainset.ptycho.fixture import generate_fixture, subset_indices
from trainset.ptycho.importer import import_file
from trainset.ptycho.layout import Layout, detect_layout, to_canonical
from trainset.ptycho.simulate import simulate, simulate_diffraction
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
    "import_file",
    "make_legacy_arrays",
    "read_source",
    "run_ptycho_demo",
    "simulate",
    "simulate_diffraction",
    "subset_indices",
    "to_canonical",
    "write_legacy_source",
]
