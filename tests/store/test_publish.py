import errno
import fcntl
import os
import socket
import stat
import subprocess
import sys

import pytest

import trainset.store.publish as publish
from trainset.errors import InputError
from trainset.store.publish import (
    folder_lock,
    lock_path,
    make_staging,
    publish_folder,
    remove_leftovers,
)


def folder(path, files):
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def contents(path):
    return {p.name: p.read_text() for p in sorted(path.iterdir())}


def dead_pid():
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_staging_is_a_hidden_sibling_named_for_this_process(tmp_path):
    staging = make_staging(tmp_path / "set")
    assert staging.parent == tmp_path
    assert staging.name.startswith(f".set.staging-{socket.gethostname()}-{os.getpid()}-")


@pytest.mark.parametrize("existing", [None, {}], ids=["absent", "empty"])
def test_publishing_into_an_absent_or_empty_folder_renames_the_staging_folder(tmp_path, existing):
    target = tmp_path / "set"
    if existing is not None:
        folder(target, existing)
    staging = folder(make_staging(target), {"manifest.json": "new"})
    publish_folder(staging, target)
    assert contents(target) == {"manifest.json": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_publishing_over_a_folder_replaces_it_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(publish, "_exchange", lambda a, b: False)
    target = folder(tmp_path / "set", {"manifest.json": "old", "shard_00001.npy": "old"})
    staging = folder(make_staging(target), {"manifest.json": "new", "table.npy": "new"})
    publish_folder(staging, target)
    assert contents(target) == {"manifest.json": "new", "table.npy": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_an_old_folder_left_between_the_two_renames_is_put_back(tmp_path):
    target = tmp_path / "set"
    folder(tmp_path / f".set.old-{socket.gethostname()}-{dead_pid()}-abcd", {"m": "old"})
    folder(tmp_path / f".set.staging-{socket.gethostname()}-{dead_pid()}-efgh", {"m": "new"})
    remove_leftovers(target, locked=True)
    assert contents(target) == {"m": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_without_the_lock_only_leftovers_of_dead_processes_here_are_removed(tmp_path):
    target = folder(tmp_path / "set", {"m": "current"})
    host = socket.gethostname()
    dead = folder(tmp_path / f".set.staging-{host}-{dead_pid()}-abcd", {})
    alive = folder(tmp_path / f".set.staging-{host}-{os.getpid()}-efgh", {})
    elsewhere = folder(tmp_path / ".set.staging-otherhost-1-ijkl", {})
    assert remove_leftovers(target, locked=False) == [dead]
    assert alive.is_dir() and elsewhere.is_dir()


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    target = tmp_path / "set"
    with folder_lock(target) as locked:
        assert locked
        refused = rf"writing this folder \(pid {os.getpid()} on "
        with pytest.raises(InputError, match=refused), folder_lock(target):
            pass


def test_the_lock_file_is_removed_and_the_lock_free_again_after_release(tmp_path):
    target = tmp_path / "set"
    with folder_lock(target):
        assert lock_path(target).exists()
    assert not lock_path(target).exists()
    with folder_lock(target) as locked:
        assert locked


def test_a_file_system_without_locks_warns_and_runs_unlocked(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match="no file locks"), folder_lock(tmp_path / "set") as ok:
        assert ok is False
    assert not lock_path(tmp_path / "set").exists()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_folder_gets_the_umask_mode_not_the_temp_folder_mode(tmp_path, umask_022):
    target = tmp_path / "set"
    publish_folder(folder(make_staging(target), {"m": "new"}), target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_a_replaced_folder_keeps_its_mode(tmp_path, umask_022):
    target = folder(tmp_path / "set", {"m": "old"})
    target.chmod(0o2750)
    publish_folder(folder(make_staging(target), {"m": "new"}), target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o2750
