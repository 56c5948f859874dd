"""Ptychography: legacy NPZ -> canonical (DATA-001) NPZ, small fixtures, contract checks."""
