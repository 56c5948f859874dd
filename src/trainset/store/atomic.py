"""Atomic writes: a temp file in the destination's directory, fsync, then rename.

A process killed at any moment leaves either the old file or the new one, never a truncated
file. Temp files are named ``.{name}.tmp-XXXXXXXX`` so :func:`remove_stale_temps` can clear what
a killed process left behind. The writer holds an exclusive ``flock`` on its temp file until the
rename; the kernel releases it when the process dies, so :func:`remove_dead_temps` can tell the
temp of a dead writer (removed) from one still being written by a live process (kept).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trainset.store.codecs import encode_png, npy_header_bytes, write_npz_to
from trainset.store.hashing import sha256_file

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


def _locked_temp(target: Path) -> tuple[int, Path]:
    """Create a temp file beside ``target`` and return (fd, path) with an exclusive lock held."""
    while True:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}{TEMP_MARKER}", dir=target.parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            # A file system without locks (NFSv3 without lockd): write unlocked; such temps
            # are never taken for a dead writer's (remove_dead_temps keeps them).
            return fd, Path(tmp_name)
        try:
            same = os.stat(tmp_name).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, Path(tmp_name)
        # A cleaner removed the temp between its creation and the lock: take another.
        os.close(fd)


@contextmanager
def _temp_beside(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a locked temp path beside ``path`` (nothing is renamed); removed on error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _locked_temp(target)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _seal(tmp: Path) -> None:
    """Flush a finished temp file to disk and give it the usual permissions."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on normal exit fsync it and rename it onto ``path``.

    On any exception the temp file is removed and ``path`` is left as it was. An OSError that
    names no file (``[Errno 28] No space left on device`` from a write) is raised again naming
    ``path``.
    """
    target = Path(path)
    try:
        with _temp_beside(target) as tmp:
            yield tmp
            _seal(tmp)
            _fault_point()
            _replace(tmp, target)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # a write error names no file
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise
    _fsync_dir(target.parent)


def atomic_write_npz_with_sidecar(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    sidecar_path: str | os.PathLike[str],
    make_sidecar: Callable[[str], Any],
    *,
    compress: bool = True,
) -> str:
    """Write an NPZ and a JSON sidecar that describes it; return the NPZ's sha256.

    ``make_sidecar(sha256)`` returns the sidecar's JSON object. Both files are written to temps
    first; then the previous sidecar is moved aside, the NPZ renamed, the sidecar renamed last.
    So a kill at any moment never leaves a sidecar beside an NPZ it does not describe: between
    the move and the last rename the NPZ (old or new) has no sidecar, and temps of the sidecar
    (``.{sidecar name}.tmp-*``, see :func:`temps_of`) lie where it goes. An exception before
    the NPZ is renamed puts the previous sidecar back (old NPZ, old sidecar); one after it
    leaves the new NPZ without a sidecar.
    """
    npz, sidecar = Path(path), Path(sidecar_path)
    with ExitStack() as stack:
        npz_tmp = stack.enter_context(_temp_beside(npz))
        sidecar_tmp = stack.enter_context(_temp_beside(sidecar))
        with open(npz_tmp, "wb") as fh:
            write_npz_to(fh, arrays, compress=compress)
        checksum = sha256_file(npz_tmp)
        text = json.dumps(make_sidecar(checksum), indent=2, allow_nan=False, ensure_ascii=False)
        sidecar_tmp.write_text(text + "\n", encoding="utf-8")
        _seal(npz_tmp)
        _seal(sidecar_tmp)
        previous = stack.enter_context(_temp_beside(sidecar)) if sidecar.exists() else None
        if previous is not None:
            _replace(sidecar, previous)
            _fsync_dir(sidecar.parent)
        try:
            _fault_point()
            _replace(npz_tmp, npz)
        except BaseException:
            if previous is not None:
                _replace(previous, sidecar)
            raise
        _fsync_dir(npz.parent)
        if previous is not None:
            previous.unlink(missing_ok=True)
        _fault_point()
        _replace(sidecar_tmp, sidecar)
    _fsync_dir(sidecar.parent)
    return checksum


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
    """Remove the temp files in ``directory`` whose writer has died (a process killed before
    its rename); a live writer's temp (its lock is held) is kept, so two processes working in
    one folder never delete each other's files in flight. Returns how many were removed."""
    root = Path(directory)
    if not root.is_dir():
        return 0
    pattern = f"**/.*{TEMP_MARKER}*" if recursive else f".*{TEMP_MARKER}*"
    return sum(_remove_if_writer_gone(stale) for stale in root.glob(pattern) if _is_regular(stale))


def _temp_name_pattern(target: Path) -> re.Pattern[str]:
    # tempfile.mkstemp adds 8 characters from [a-z0-9_] after the prefix.
    return re.compile(rf"\.{re.escape(target.name)}{re.escape(TEMP_MARKER)}[a-z0-9_]{{8}}")


def temps_of(path: str | os.PathLike[str]) -> list[Path]:
    """The temp files of atomic writes to ``path`` that are still on disk (from live or dead
    writers), sorted by name."""
    target = Path(path)
    if not target.parent.is_dir():
        return []
    pattern = _temp_name_pattern(target)
    return sorted(
        p for p in target.parent.iterdir() if pattern.fullmatch(p.name) and _is_regular(p)
    )


def _is_regular(path: Path) -> bool:
    try:
        return path.lstat().st_mode & 0o170000 == 0o100000
    except OSError:
        return False


def _remove_if_writer_gone(temp: Path) -> bool:
    """Remove ``temp`` when no process holds its writer's lock; True when it was removed."""
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # Held by a live writer (EWOULDBLOCK), or no locks on this file system: keep it.
            return False
        try:
            if os.stat(temp, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                return False
        except FileNotFoundError:
            return False
        temp.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def remove_dead_temps(path: str | os.PathLike[str]) -> int:
    """Remove the temps of atomic writes to ``path`` whose writer has died (killed before its
    rename); temps of writers still running are kept. Returns how many were removed.

    Only ``path``'s own temps (``.{name}.tmp-XXXXXXXX`` beside it) are considered, never other
    files of the folder.
    """
    return sum(_remove_if_writer_gone(temp) for temp in temps_of(path))
