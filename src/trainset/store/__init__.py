"""Atomic file writes, codecs, hashing, sentinels and provenance records."""

from trainset.store.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_npy,
    atomic_write_npz,
    atomic_write_npz_with_sidecar,
    atomic_write_png,
    atomic_write_text,
    atomic_write_yaml,
    remove_dead_temps,
    remove_stale_temps,
    temps_of,
)
from trainset.store.codecs import (
    MAX_ARRAY_BYTES,
    NPY_ALIGN,
    check_array_size,
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
from trainset.store.sentinels import Sentinel, read_sentinel, write_sentinel

__all__ = [
    "MAX_ARRAY_BYTES",
    "NPY_ALIGN",
    "Sentinel",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_npy",
    "atomic_write_npz",
    "atomic_write_npz_with_sidecar",
    "atomic_write_png",
    "atomic_write_text",
    "atomic_write_yaml",
    "check_array_size",
    "encode_csv",
    "encode_npz",
    "npz_headers",
    "params_hash",
    "provenance_record",
    "read_json",
    "read_npz_array",
    "read_png",
    "read_sentinel",
    "read_yaml",
    "remove_dead_temps",
    "remove_stale_temps",
    "sha256_bytes",
    "sha256_file",
    "temps_of",
    "write_sentinel",
]
