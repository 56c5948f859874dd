"""`trainset focus extract`: videos the tests encode themselves with PyAV -> the raw layout."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainset.cli import main
from trainset.focus.video import scene_id_for
from trainset.store.codecs import read_png

av = pytest.importorskip("av", reason="PyAV is in the dev extra (pip install -e '.[dev]')")


def _encode(path: Path, n: int = 6, size: tuple[int, int] = (32, 48), codec: str = "mpeg4"):
    """Write an n-frame video of seeded noise bars (H, W) = size."""
    rng = np.random.default_rng(len(path.name))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for t in range(n):
            img = np.zeros((*size, 3), np.uint8)
            img[:, :, 0] = (np.arange(size[1]) * 5 + 20 * t) % 256
            img[:, :, 1] = rng.integers(0, 256, size=(size[0], 1))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _frames(scene: Path) -> list[str]:
    return sorted(p.name for p in scene.glob("frame_*.png"))


def test_each_video_becomes_a_scene_whose_frames_equal_the_decoded_ones(tmp_path):
    mp4, mkv = tmp_path / "clip.mp4", tmp_path / "other.mkv"
    _encode(mp4)
    _encode(mkv, n=4, codec="ffv1")
    raw = tmp_path / "raw"
    code, text, _ = _cli("focus", "extract", str(mp4), str(mkv), "--raw-root", str(raw))
    assert code == 0, text
    for video, scene in ((mp4, "clip"), (mkv, "other")):
        expected = _decoded(video)
        assert _frames(raw / scene) == [f"frame_{t:04d}.png" for t in range(len(expected))]
        for t, frame in enumerate(expected):
            assert np.array_equal(read_png(raw / scene / f"frame_{t:04d}.png"), frame)
    assert "extract: 2 extracted, 0 already extracted, 0 failed" in text


def test_every_and_max_frames_pick_the_decoded_frames(tmp_path):
    video = tmp_path / "v.mp4"
    _encode(video, n=9)
    raw = tmp_path / "raw"
    argv = ("focus", "extract", str(video), "--raw-root", str(raw))
    assert _cli(*argv, "--every", "2", "--max-frames", "3")[0] == 0
    decoded = _decoded(video)
    assert _frames(raw / "v") == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    for t, source in enumerate((0, 2, 4)):
        assert np.array_equal(read_png(raw / "v" / f"frame_{t:04d}.png"), decoded[source])


def test_second_run_skips_what_is_extracted_and_redoes_on_new_options(tmp_path):
    video = tmp_path / "v.mp4"
    _encode(video)
    raw = tmp_path / "raw"
    argv = ("focus", "extract", str(video), "--raw-root", str(raw))
    assert _cli(*argv)[0] == 0
    stamp = (raw / "v" / "frame_0000.png").stat().st_mtime_ns
    code, text, _ = _cli(*argv)
    assert code == 0 and "0 extracted, 1 already extracted" in text
    assert (raw / "v" / "frame_0000.png").stat().st_mtime_ns == stamp
    assert _cli(*argv, "--max-frames", "2")[0] == 0
    assert _frames(raw / "v") == ["frame_0000.png", "frame_0001.png"]
    record = json.loads((raw / "v" / ".extract.json").read_text())
    assert (record["frames"], record["max_frames"]) == (2, 2)


def test_scene_ids_are_made_safe_from_file_names():
    assert scene_id_for(Path("/x/my clip (1).mp4")) == "my_clip_1_"
    assert scene_id_for(Path("/x/..hidden.mov")) == "hidden"
    assert scene_id_for(Path("/x/a\nb.mkv")) == "a_b"


def test_two_videos_giving_one_scene_id_are_refused_and_nothing_is_written(tmp_path):
    a, b = tmp_path / "a b.mp4", tmp_path / "a_b.mp4"
    _encode(a)
    _encode(b)
    raw = tmp_path / "raw"
    code, _, err = _cli("focus", "extract", str(a), str(b), "--raw-root", str(raw))
    assert code == 2
    assert "two videos give the scene id 'a_b'" in err
    assert not raw.exists()


def test_a_corrupt_video_fails_alone_with_its_file_named(tmp_path):
    good, bad = tmp_path / "good.mp4", tmp_path / "bad.mp4"
    _encode(good)
    bad.write_bytes(os.urandom(4096))
    raw = tmp_path / "raw"
    code, text, _ = _cli("focus", "extract", str(bad), str(good), "--raw-root", str(raw))
    assert code == 1
    assert f"failed {bad}: {bad}: cannot decode video" in text
    assert len(_frames(raw / "good")) == 6
    assert not (raw / "bad").exists()
    assert [p.name for p in raw.iterdir()] == ["good"]


def test_a_folder_not_made_by_extract_is_never_overwritten(tmp_path):
    video = tmp_path / "scene.mp4"
    _encode(video)
    raw = tmp_path / "raw"
    (raw / "scene").mkdir(parents=True)
    (raw / "scene" / "frame_0000.png").write_bytes(b"mine")
    code, text, _ = _cli("focus", "extract", str(video), "--raw-root", str(raw))
    assert code == 1
    assert "was not written by `trainset focus extract`" in text
    assert (raw / "scene" / "frame_0000.png").read_bytes() == b"mine"


def test_not_a_video_name_and_missing_file_exit_2(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    raw = str(tmp_path / "raw")
    assert _cli("focus", "extract", str(tmp_path / "notes.txt"), "--raw-root", raw)[0] == 2
    assert _cli("focus", "extract", str(tmp_path / "gone.mp4"), "--raw-root", raw)[0] == 2
    assert (
        _cli("focus", "extract", str(tmp_path / "notes.txt"), "--raw-root", raw, "--every", "0")[0]
        == 2
    )


def test_a_killed_extraction_leaves_no_scene_and_the_next_run_cleans_up(tmp_path):
    video = tmp_path / "v.mp4"
    _encode(video)
    raw = tmp_path / "raw"
    env = {**os.environ, "TRAINSET_FAULT_KILL_AT": "3"}
    argv = [sys.executable, "-m", "trainset", "focus", "extract", str(video)]
    proc = subprocess.run([*argv, "--raw-root", str(raw)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not (raw / "v").exists()
    assert [p.name.startswith(".v.extract-") for p in raw.iterdir()] == [True]
    assert _cli("focus", "extract", str(video), "--raw-root", str(raw))[0] == 0
    assert [p.name for p in raw.iterdir()] == ["v"]
    assert len(_frames(raw / "v")) == 6


def test_extracted_scenes_index_without_mention_of_the_record(tmp_path):
    video = tmp_path / "v.mp4"
    _encode(video, n=5)
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert _cli("focus", "extract", str(video), "--raw-root", str(raw))[0] == 0
    code, _, _ = _cli(
        "focus", "index", "--raw-root", str(raw), "--out-root", str(out), "--min-frames", "4"
    )
    assert code == 0
    index = json.loads((out / "scene_index.json").read_text())
    assert len(index["v"]["frames"]) == 5
    assert json.loads((out / "logs" / "ignored_files.json").read_text()) == {}
