"""Publish a folder as a whole: build it beside its target, then put it in place in one step.

A result that is a folder (a manifest and the files it names) is built in a sibling staging
folder ``.{name}.staging-{host}-{pid}-XXXX`` and swapped with the target by one atomic
``renameat2(RENAME_EXCHANGE)`` (Linux: ext4, xfs, btrfs, tmpfs), so at every moment the target
is either the complete old folder or the complete new one. File systems without an atomic
exchange (NFS, Lustre, GPFS) get two renames, target -> ``.{name}.old-...`` then staging ->
target: for that instant the target is absent (readers get "not found", never a mixture), and a
run killed in between leaves the old folder under ``.old-``, which :func:`remove_leftovers` puts
back.

:func:`folder_lock` keeps two writers off one target: an advisory ``flock`` on ``.{name}.lock``
beside it, refused at once (not waited for) with the holder's pid, host and start time.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import stat
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainset.errors import InputError
from trainset.store.atomic import _fault_point, _fsync_dir

STAGING = "staging"
OLD = "old"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# flock errors that mean "this file system has no locks", not "someone holds it".
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def sibling_prefix(target: Path, kind: str) -> str:
    """Name prefix of the ``kind`` (``staging`` / ``old``) folders of ``target``."""
    return f".{target.name}.{kind}-"


def lock_path(target: Path) -> Path:
    """The lock file of ``target``: ``.{name}.lock`` beside it."""
    return target.parent / f".{target.name}.lock"


def make_staging(target: Path) -> Path:
    """Create an empty staging folder beside ``target`` (same file system, so it can be swapped
    in by a rename); its name carries this host and pid. Its mode is the umask's (not
    ``mkdtemp``'s 0700), or the existing target's, so that the published folder keeps who may
    read it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = _owned_prefix(target, STAGING)
    while True:
        path = target.parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o777)
            break
        except FileExistsError:
            continue
    if target.is_dir():
        path.chmod(stat.S_IMODE(target.stat().st_mode))
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False when the system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def publish_folder(staging: Path, target: Path) -> None:
    """Put the complete folder ``staging`` at ``target``, replacing what was there as a whole.

    ``target`` absent or an empty folder: one rename. Otherwise an atomic exchange, then the old
    folder is removed; without exchange support, two renames (see the module docstring).
    """
    _fsync_dir(staging)
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        _fault_point()
        os.rename(staging, target)
    else:
        _fault_point()
        if _exchange(staging, target):
            old = staging
        else:
            old = Path(tempfile.mkdtemp(prefix=_owned_prefix(target, OLD), dir=target.parent))
            os.rename(target, old)  # onto the empty folder just made: atomic, unique name
            _fault_point()
            os.rename(staging, target)
        _fsync_dir(target.parent)
        shutil.rmtree(old)
    _fsync_dir(target.parent)


def _owned_prefix(target: Path, kind: str) -> str:
    return f"{sibling_prefix(target, kind)}{socket.gethostname()}-{os.getpid()}-"


def _owner_gone(suffix: str) -> bool:
    """True when ``{host}-{pid}-XXXX`` names a process of this host that no longer exists."""
    parts = suffix.rsplit("-", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_leftovers(target: Path, *, locked: bool) -> list[Path]:
    """Clear the staging and old folders of ``target`` that killed runs left; return them.

    An ``old`` folder is put back at ``target`` when ``target`` is missing (a run killed between
    the two renames of a swap); anything else is removed. Holding :func:`folder_lock`
    (``locked``) every leftover is stale; without it only those of dead processes of this host.
    """
    if not target.parent.is_dir():
        return []
    found = []
    for kind in (OLD, STAGING):
        prefix = sibling_prefix(target, kind)
        for path in sorted(target.parent.iterdir()):
            if not path.name.startswith(prefix) or path.is_symlink() or not path.is_dir():
                continue
            if locked or _owner_gone(path.name[len(prefix) :]):
                if kind == OLD and not target.exists():
                    os.rename(path, target)
                else:
                    shutil.rmtree(path)
                found.append(path)
    return found


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


@contextmanager
def folder_lock(target: Path) -> Iterator[bool]:
    """Hold the lock of ``target`` for the ``with`` block; yields True when locked.

    Another holder: :class:`InputError` at once, naming it. A file system without locks: a
    warning, and the block runs unlocked (yields False). The lock file is removed on exit.
    """
    path = lock_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, target)
    if fd is None:
        yield False
        return
    try:
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        yield True
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _acquire(path: Path, target: Path) -> int | None:
    """Open and flock ``path``; the locked descriptor, or None where the file system has no
    locks. The file is re-checked after locking: a holder that was leaving may have removed it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise InputError(
                f"another process is writing this folder ({holder}); wait for it to finish "
                "or write elsewhere",
                file=target,
            ) from None
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            if exc.errno not in _NO_LOCKS:
                raise
            warnings.warn(
                f"{path}: this file system has no file locks ({exc.strerror}); two runs "
                "writing to one output at once are not detected",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
