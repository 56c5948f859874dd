"""Files shared by every scene of an output root: config.yaml, logs, failures, the lock.

Scenes run in parallel (a process pool, or SLURM array tasks on several nodes), so each scene
writes its own log part under ``logs/by_scene/{log}/{scene_id}.part`` and the shared log
``logs/{log}`` is rebuilt from all parts (sorted by scene) under the output root's lock. Every
write is atomic and only happens when the content changes, so a run that does nothing rewrites
nothing.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from trainset.errors import InputError
from trainset.store.atomic import TEMP_MARKER, atomic_write_bytes, remove_stale_temps
from trainset.store.codecs import read_yaml
from trainset.store.locks import exclusive_lock

LOCK_NAME = ".trainset.lock"
LOCKS_DIR = ".locks"  # {out_root}/.locks/{scene_id}.lock: one process per scene
CONFIG_NAME = "config.yaml"
LOGS_DIR = "logs"
PARTS_DIR = "by_scene"
FAILURES_LOG = "failures.jsonl"
# Folders of the output root beside the scenes (logs, SLURM scripts, the HTML report).
RESERVED_NAMES = frozenset({LOGS_DIR, "slurm", "report"})


# Called with the scene id when scene_lock has to wait: a hook for the tests of concurrent runs
# (they wait for it instead of sleeping); None in normal use.
on_lock_wait: Callable[[str], None] | None = None


@contextmanager
def scene_lock(out_root: str | Path, scene_id: str) -> Iterator[None]:
    """Hold ``{out_root}/.locks/{scene_id}.lock``: one process works on a scene at a time.

    A second process (another run on the same output root, a SLURM task) waits, saying so on
    stderr, and is released when the first finishes or dies.
    """
    path = Path(out_root) / LOCKS_DIR / f"{scene_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"{safe_text(scene_id)}: another process is working on it; waiting", file=sys.stderr
            )
            if on_lock_wait is not None:
                on_lock_wait(scene_id)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def out_root_lock(out_root: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``{out_root}/.trainset.lock`` (released on death)."""
    with exclusive_lock(Path(out_root) / LOCK_NAME):
        yield


def write_bytes_if_changed(path: str | Path, data: bytes) -> bool:
    """Write ``data`` atomically unless ``path`` already holds exactly it; True when written."""
    p = Path(path)
    try:
        if p.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_bytes(p, data)
    return True


def write_text_if_changed(path: str | Path, text: str) -> bool:
    """UTF-8 text version of :func:`write_bytes_if_changed`."""
    return write_bytes_if_changed(path, text.encode("utf-8"))


def safe_text(name: str) -> str:
    """``name`` printable on one line: undecodable bytes (surrogate escapes) and control
    characters (a newline in a folder name) shown as backslash escapes."""
    text = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(
        c.encode("unicode_escape").decode("ascii") if ord(c) < 32 or ord(c) == 127 else c
        for c in text
    )


def unsafe_reason(scene_id: str) -> str | None:
    """Why ``scene_id`` cannot be used as a folder name in the output, or None when it can."""
    if not scene_id:
        return "empty scene id"
    if "/" in scene_id or "\\" in scene_id:
        return "scene id holds a path separator"
    if ".." in scene_id:
        return "scene id holds '..'"
    if scene_id.startswith("."):
        return "scene id starts with a dot"
    if scene_id in RESERVED_NAMES:
        return f"'{scene_id}' is reserved for the output root's own files"
    if any(ord(c) < 32 or ord(c) == 127 for c in scene_id):
        return "scene id holds a control character"
    try:
        scene_id.encode("utf-8")
    except UnicodeEncodeError:
        return "scene id is not valid UTF-8"
    return None


def check_out_root(out_root: str | Path) -> Path:
    """``out_root`` as a Path; InputError when it exists and is not a folder."""
    root = Path(out_root)
    if root.exists() and not root.is_dir():
        raise InputError(
            "output root is not a folder", file=root, expected="a folder", found="a file"
        )
    return root


def check_scene_ids(index: Mapping[str, Any], path: Path) -> None:
    """Refuse a scene index with an id that is not a safe folder name (``../x``, ``a/b``, a
    control character): every stage writes to ``{out_root}/{scene_id}``, so such an id would
    write or delete outside the output root. InputError naming the file and the id."""
    for scene_id in index:
        reason = unsafe_reason(scene_id)
        if reason is not None:
            raise InputError(
                "unsafe scene id in the scene index; re-run `trainset focus index`",
                file=path,
                key=safe_text(scene_id),
                expected="a folder name inside the output root",
                found=reason,
            )


def read_config(out_root: str | Path) -> dict[str, Any]:
    """``{out_root}/config.yaml`` as a dict (empty when absent)."""
    path = Path(out_root) / CONFIG_NAME
    if not path.exists():
        return {}
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(
            "config must be a mapping", file=path, expected="mapping", found=type(data)
        )
    return data


def record_config(out_root: str | Path, section: str, params: Mapping[str, Any]) -> bool:
    """Merge ``params`` as ``section`` into ``{out_root}/config.yaml`` (locked, atomic).

    Other sections are kept. Returns True when the file changed.
    """
    plain = json.loads(json.dumps(dict(params), default=str))
    with out_root_lock(out_root):
        config = read_config(out_root)
        config[section] = plain
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        return write_text_if_changed(Path(out_root) / CONFIG_NAME, text)


def _scene_log_part(out_root: str | Path, log_name: str, scene_id: str) -> Path:
    return Path(out_root) / LOGS_DIR / PARTS_DIR / log_name / f"{scene_id}.part"


def write_scene_log(out_root: str | Path, log_name: str, scene_id: str, text: str) -> None:
    """Store one scene's part of ``logs/{log_name}``; for ``.csv`` logs the first line is the header.

    Call :func:`rebuild_scene_logs` (the runner does, after a stage) to refresh the shared log.
    """
    write_text_if_changed(_scene_log_part(out_root, log_name, scene_id), text)


def read_scene_log(out_root: str | Path, log_name: str, scene_id: str) -> str:
    """One scene's part of ``logs/{log_name}`` as written by :func:`write_scene_log` ("" when
    the scene wrote none)."""
    part = _scene_log_part(out_root, log_name, scene_id)
    return part.read_text(encoding="utf-8") if part.is_file() else ""


def _merge_parts(log_name: str, parts: list[Path]) -> str:
    is_csv = log_name.endswith(".csv")
    header = ""
    rows: list[str] = []
    for part in parts:
        lines = part.read_text(encoding="utf-8").splitlines()
        if is_csv and lines:
            header = header or lines[0]
            lines = lines[1:]
        rows.extend(line for line in lines if line)
    body = [header] if header else []
    body.extend(rows)
    return "\n".join(body) + "\n" if body else ""


def rebuild_scene_logs(out_root: str | Path) -> list[Path]:
    """Rebuild every ``logs/{log}`` from its per-scene parts; return the logs that changed."""
    logs = Path(out_root) / LOGS_DIR
    parts_root = logs / PARTS_DIR
    changed: list[Path] = []
    if not parts_root.is_dir():
        return changed
    with out_root_lock(out_root):
        for log_dir in sorted(p for p in parts_root.iterdir() if p.is_dir()):
            parts = sorted(
                p for p in log_dir.glob("*.part") if p.is_file() and TEMP_MARKER not in p.name
            )
            target = logs / log_dir.name
            if write_text_if_changed(target, _merge_parts(log_dir.name, parts)):
                changed.append(target)
    return changed


def append_failure(out_root: str | Path, record: Mapping[str, Any]) -> None:
    """Add one JSON line (stage, scene, error, traceback, time) to ``logs/failures.jsonl``."""
    path = Path(out_root) / LOGS_DIR / FAILURES_LOG
    line = json.dumps(
        {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record},
        ensure_ascii=True,
        default=str,
    )
    with out_root_lock(out_root):
        old = path.read_bytes() if path.exists() else b""
        atomic_write_bytes(path, old + line.encode("ascii") + b"\n")


def read_failures(out_root: str | Path) -> list[dict[str, Any]]:
    """Every record of ``logs/failures.jsonl``, oldest first (unparseable lines skipped)."""
    path = Path(out_root) / LOGS_DIR / FAILURES_LOG
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            records.append(item)
    return records


def remove_shared_temps(out_root: str | Path) -> int:
    """Remove temp files killed writers left in the output root and ``logs/`` (under the lock).

    Those files are only written under the lock, so no live writer's temp file is touched.
    """
    root = Path(out_root)
    removed = 0
    with out_root_lock(root):
        for directory in (root, root / LOGS_DIR):
            if directory.is_dir():
                removed += remove_stale_temps(directory)
    return removed


def remove_scene_temps(out_root: str | Path, scene_id: str) -> int:
    """Remove temp files a killed run of ``scene_id`` left in its folder and its log parts."""
    root = Path(out_root)
    removed = remove_stale_temps(root / scene_id, recursive=True)
    parts_root = root / LOGS_DIR / PARTS_DIR
    if parts_root.is_dir():
        for stale in parts_root.glob(f"*/.{glob.escape(scene_id)}.part{TEMP_MARKER}*"):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed
