"""Atomic writes: a temp file in the destination's directory, fsync, then rename.

A process killed at any moment leaves either the old file or the new one, never a truncated
file. Temp files are named ``.{name}.tmp-XXXXXXXX`` so :func:`remove_stale_temps` can clear what
a killed process left behind.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trainset.store.codecs import encode_png, npy_header_bytes, write_npz_to

TEMP_MARKER = ".tmp-"

# Indirection so tests can force a failure between write and rename.
_replace = os.replace

# Fault injection for the kill tests (docs/core.md, "Guarantees"): with this variable set to N,
# the process SIGKILLs itself just before its N-th atomic rename, leaving the temp file behind
# exactly as a real kill at that moment would. Unset (the normal case) it costs one dict lookup.
FAULT_ENV = "TRAINSET_FAULT_KILL_AT"
_renames_seen = 0


def _fault_point() -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    global _renames_seen
    _renames_seen += 1
    if _renames_seen == int(spec):
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on normal exit fsync it and rename it onto ``path``.

    On any exception the temp file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}{TEMP_MARKER}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        _fault_point()
        _replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (no NaN or Infinity allowed) to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, allow_nan=False, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


def atomic_write_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as YAML (safe dump, keys in insertion order) to ``path`` atomically."""
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def atomic_write_npy(
    path: str | os.PathLike[str], array: np.ndarray, *, align: int | None = None
) -> Path:
    """Write one array as ``.npy`` atomically.

    ``align`` pads the header so the data starts at a multiple of ``align`` bytes (use
    :data:`trainset.store.NPY_ALIGN` = 4096 to make every record page-aligned); ``np.load``
    reads such files as usual. Object arrays are refused: they would need pickle to read.
    """
    arr = np.asarray(array)
    header = npy_header_bytes(arr.shape, arr.dtype, align=align)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header)
        if arr.size:
            fh.write(np.ascontiguousarray(arr).data.cast("B"))
    return Path(path)


def atomic_write_npz(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], *, compress: bool = True
) -> Path:
    """Write named arrays as an NPZ atomically; the same arrays always give the same bytes.

    Unlike ``np.savez_compressed`` no time stamp goes into the zip, so a re-run produces a
    byte-identical file (same sha256). ``np.load`` reads the result as usual.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write_npz_to(fh, arrays, compress=compress)
    return Path(path)


def atomic_write_png(
    path: str | os.PathLike[str], image: np.ndarray, *, compress_level: int = 6
) -> Path:
    """Write an (H, W) or (H, W, 3|4) uint8 image, or an (H, W) uint16 image, as PNG atomically."""
    return atomic_write_bytes(path, encode_png(image, compress_level=compress_level))


def remove_stale_temps(directory: str | os.PathLike[str], *, recursive: bool = False) -> int:
    """Remove temp files a killed writer left in ``directory``; return how many were removed."""
    root = Path(directory)
    if not root.is_dir():
        return 0
    pattern = f"**/.*{TEMP_MARKER}*" if recursive else f".*{TEMP_MARKER}*"
    removed = 0
    for stale in root.glob(pattern):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed += 1
    return removed
