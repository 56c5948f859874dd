"""Issue 18, focus items: concurrent runs, killed parents, full disks and seeded SIGKILLs."""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainset.pipeline.dataset_files as dataset_files
from trainset.cli import main
from trainset.focus.synthetic import generate_scenes
from trainset.pipeline.runner import run_stage
from trainset.pipeline.stage import Stage, register_stage
from trainset.store import atomic_write_text, read_json
from trainset.store.atomic import atomic_path
from trainset.store.codecs import read_npz_array, read_png


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


# -- 18.12: two runs on one output root ------------------------------------------------------
_FIRST_IN_FLIGHT = threading.Event()
_RELEASE_FIRST = threading.Event()
_RUNS: list[str] = []


def _slow_once(out_root: Path, scene_id: str, params: Mapping[str, Any]) -> dict[str, int]:
    """Writes its output through an atomic temp; the first call stops with the temp in flight."""
    _RUNS.append(scene_id)
    target = out_root / scene_id / "slow" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("first" if len(_RUNS) == 1 else "second")
        if len(_RUNS) == 1:
            _FIRST_IN_FLIGHT.set()
            assert _RELEASE_FIRST.wait(60)
    return {}


SLOW = register_stage(Stage("reliability_slow", 1, "slow", (), _slow_once))


def test_a_second_run_waits_for_a_scene_in_flight_and_never_deletes_its_temps(
    tmp_path, monkeypatch
):
    (tmp_path / "scene_index.json").write_text('{"a": {"frames": [], "split": "train"}}')
    second_waiting = threading.Event()
    monkeypatch.setattr(dataset_files, "on_lock_wait", lambda scene: second_waiting.set())
    results: dict[str, Any] = {}
    first = threading.Thread(target=lambda: results.update(a=run_stage(SLOW, tmp_path, ["a"], {})))
    second = threading.Thread(target=lambda: results.update(b=run_stage(SLOW, tmp_path, ["a"], {})))
    first.start()
    assert _FIRST_IN_FLIGHT.wait(60)
    second.start()
    assert second_waiting.wait(60), "the second run did not wait for the scene's lock"
    _RELEASE_FIRST.set()
    first.join(60)
    second.join(60)
    assert results["a"].outcomes[0].status == "done"
    assert results["b"].outcomes[0].status == "skipped"
    assert _RUNS == ["a"]
    assert (tmp_path / "a" / "slow" / "out.txt").read_text() == "first"


# -- 18.17: workers die with their parent ----------------------------------------------------
def test_pool_workers_exit_when_the_main_process_is_killed(tmp_path):
    (tmp_path / "scene_index.json").write_text(
        '{"a": {"frames": [], "split": "train"}, "b": {"frames": [], "split": "train"}}'
    )
    script = textwrap.dedent(
        f"""
        import os, pathlib, time
        from trainset.pipeline.runner import run_stage
        from trainset.pipeline.stage import Stage, register_stage

        def park(out_root, scene_id, params):
            pathlib.Path({str(tmp_path)!r}, f"worker_{{scene_id}}.pid").write_text(str(os.getpid()))
            while True:  # a long scene; the test kills the parent meanwhile
                time.sleep(0.2)

        stage = register_stage(Stage("park", 1, "park", (), park))
        run_stage(stage, {str(tmp_path)!r}, ["a", "b"], {{}}, workers=2)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    pid_files = [tmp_path / "worker_a.pid", tmp_path / "worker_b.pid"]
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not all(p.exists() and p.read_text() for p in pid_files):
            assert time.monotonic() < deadline, "workers did not start"
            assert parent.poll() is None
            time.sleep(0.05)
        workers = [int(p.read_text()) for p in pid_files]
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in workers if _alive(pid)] == []
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


# -- 18.13: a full disk ----------------------------------------------------------------------
def test_a_full_disk_fails_each_scene_naming_the_path_and_the_run_goes_on(
    tmp_path, small_disk, fill_disk
):
    raw, out = tmp_path / "raw", small_disk / "out"
    generate_scenes(raw, n_scenes=3, n_frames=4, size=(16, 24), seed=13)
    root = ("--out-root", str(out))
    render = ("focus", "render", *root, "--max-coc", "0.0005", "--sets", "1")
    assert _cli("focus", "index", "--raw-root", str(raw), *root, "--min-frames", "4")[0] == 0
    assert _cli("focus", "deblur", *root)[0] == 0
    assert _cli("focus", "depth", *root)[0] == 0
    assert _cli(*render, "--scene", "scene_000")[0] == 0
    filler = fill_disk(small_disk, 1)

    code, text, err = _cli(*render)

    assert code == 1, err
    assert "scene_001: OSError: [Errno 28] No space left on device: '" in text
    assert "scene_002: OSError: [Errno 28] No space left on device: '" in text
    for scene in ("scene_001", "scene_002"):
        assert f"could not record the failure of labels on {scene}" in err
    assert "Traceback" not in err
    for scene in ("scene_000", "scene_001", "scene_002"):  # earlier outputs intact
        for t in range(4):
            read_npz_array(out / scene / "depth_maps" / f"depth_{t:04d}.npz", "depth")
    filler.unlink()
    assert _cli(*render)[0] == 0
    assert _cli("focus", "validate", *root)[0] == 0
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


# -- seeded SIGKILLs of depth, render and pack -----------------------------------------------
def _trainset(*argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainset", *argv],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _every_file_loads(out: Path) -> None:
    for path in out.rglob("*.npz"):
        read_npz_array(path, "depth" if path.name.startswith("depth") else "focus_map")
    for path in out.rglob("*.png"):
        read_png(path)
    for path in out.rglob("*.npy"):
        np.load(path, mmap_mode="r", allow_pickle=False)


@pytest.mark.slow
def test_seeded_kills_of_depth_render_and_pack_leave_loadable_files_and_a_valid_set(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=2, n_frames=4, size=(16, 24), seed=17)
    root = ("--out-root", str(out))
    assert (
        _trainset("focus", "index", "--raw-root", str(raw), *root, "--min-frames", "4").returncode
        == 0
    )
    assert _trainset("focus", "deblur", *root).returncode == 0
    commands = {
        "depth": ("focus", "depth", *root),
        "render": ("focus", "render", *root, "--max-coc", "0.0005", "--sets", "2"),
        "pack": ("focus", "pack", *root),
    }
    rng = random.Random(18)
    killed = []
    for name, argv in commands.items():
        for _ in range(2):
            # depth writes ~12 files, render ~40, pack ~10 (per scene and log); N in that range.
            n = rng.randint(1, {"depth": 12, "render": 40, "pack": 10}[name])
            # --force: every killed run has work to do (the scenes are done after the re-run).
            run = _trainset(*argv, "--force", env={"TRAINSET_FAULT_KILL_AT": str(n)})
            assert run.returncode in (0, -signal.SIGKILL), run.stderr
            killed.append((name, n, run.returncode))
            _every_file_loads(out)
            again = _trainset(*argv)
            assert again.returncode == 0, again.stdout + again.stderr
            assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
            _every_file_loads(out)
    assert all(code == -signal.SIGKILL for *_, code in killed), killed
    assert _trainset("focus", "validate", *root).returncode == 0
    report = read_json(out / "logs" / "validation_report.json")
    assert report["passing_scenes"] == 2


def test_a_live_writers_temp_in_a_scene_survives_another_runs_cleanup(tmp_path):
    """remove_stale_temps keeps a temp whose writer holds its lock (18.12)."""
    from trainset.pipeline.dataset_files import remove_scene_temps

    target = tmp_path / "a" / "frames_sharp" / "frame_0000.png"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"in flight")
        dead = tmp.parent / ".frame_0001.png.tmp-deadbeef"
        dead.write_bytes(b"left by a killed run")
        assert remove_scene_temps(tmp_path, "a") == 1
        assert tmp.exists() and not dead.exists()
    assert target.read_bytes() == b"in flight"
    shutil.rmtree(tmp_path / "a")
    atomic_write_text(tmp_path / "ok.txt", "x")
