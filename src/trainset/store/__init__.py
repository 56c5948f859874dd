"""Atomic file writes, codecs, hashing, sentinels and provenance records."""

from trainset.store.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_npy,
    atomic_write_npz,
    atomic_write_png,
    atomic_write_text,
    atomic_write_yaml,
    remove_stale_temps,
)
from trainset.store.codecs import (
    NPY_ALIGN,
    encode_csv,
    encode_npz,
    npz_headers,
    read_json,
    read_npz_array,
    read_png,
    read_yaml,
)
from trainset.store.hashing import params_hash, sha256_bytes, sha256_file
from trainset.store.provenance import provenance_record
from trainset.store.sentinels import Sentinel, is_current, read_sentinel, write_sentinel

__all__ = [
    "NPY_ALIGN",
    "Sentinel",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_npy",
    "atomic_write_npz",
    "atomic_write_png",
    "atomic_write_text",
    "atomic_write_yaml",
    "encode_csv",
    "encode_npz",
    "is_current",
    "npz_headers",
    "params_hash",
    "provenance_record",
    "read_json",
    "read_npz_array",
    "read_png",
    "read_sentinel",
    "read_yaml",
    "remove_stale_temps",
    "sha256_bytes",
    "sha256_file",
    "write_sentinel",
]
