import io
import json
import random
import shutil

import numpy as np
import pytest
from PIL import Image

from trainset.errors import InputError
from trainset.focus.index import assign_splits, build_index
from trainset.pipeline.dataset_files import unsafe_reason


def plan_assign_splits(scene_ids, seed=42):
    """Independent copy of the plan's assign_splits."""
    ids = sorted(scene_ids)
    rng = random.Random(seed)
    rng.shuffle(ids)
    n = len(ids)
    splits = {}
    for i, sid in enumerate(ids):
        if i < int(0.8 * n):
            splits[sid] = "train"
        elif i < int(0.9 * n):
            splits[sid] = "val"
        else:
            splits[sid] = "test"
    return splits


def _png(path, size=(8, 6), value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _scene(raw, name, n=3, size=(8, 6), ext="png"):
    for t in range(n):
        _png(raw / name / f"frame_{t:04d}.{ext}", size, value=10 * t)


@pytest.mark.parametrize("n", [1, 7, 10, 23, 100])
def test_splits_equal_the_plans_assign_splits(n):
    ids = [f"s{i:03d}" for i in range(n)]
    random.Random(n).shuffle(ids)
    assert assign_splits(ids) == plan_assign_splits(ids)
    assert assign_splits(ids, seed=3) == plan_assign_splits(ids, seed=3)


def test_index_writes_the_plans_scene_index_and_split_files(small_raw, tmp_path):
    out = tmp_path / "out"
    result = build_index(small_raw, out, min_frames=4)
    index = json.loads((out / "scene_index.json").read_text())
    expected = plan_assign_splits(["scene_000", "scene_001", "scene_002"])
    assert sorted(index) == ["scene_000", "scene_001", "scene_002"]
    for sid, entry in index.items():
        assert set(entry) == {"frames", "split"}
        assert entry["split"] == expected[sid]
        assert entry["frames"] == [
            str((small_raw / sid / f"frame_{t:04d}.png").resolve()) for t in range(6)
        ]
        assert (out / sid / "split.txt").read_text() == expected[sid]
    assert result.rejected == {}
    assert json.loads((out / "logs" / "rejected_scenes.json").read_text()) == {}


def test_second_index_run_rewrites_no_file(small_raw, tmp_path):
    out = tmp_path / "out"
    build_index(small_raw, out, min_frames=4)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    build_index(small_raw, out, min_frames=4)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert before == after


def test_extensions_match_in_any_case_and_other_files_are_reported(tmp_path):
    raw = tmp_path / "raw"
    _png(raw / "a" / "frame_0000.PNG")
    _png(raw / "a" / "frame_0001.png")
    (raw / "a" / "notes.txt").write_text("hello")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(buf, format="JPEG")
    (raw / "a" / "frame_0002.JPG").write_bytes(buf.getvalue())
    result = build_index(raw, tmp_path / "out", min_frames=3)
    frames = result.scenes["a"]["frames"]
    assert isinstance(frames, list)
    assert [f.rsplit("/", 1)[1] for f in frames] == [
        "frame_0000.PNG",
        "frame_0001.png",
        "frame_0002.JPG",
    ]
    ignored = json.loads((tmp_path / "out" / "logs" / "ignored_files.json").read_text())
    assert ignored == {"a": ["notes.txt"]}


def test_bad_scenes_are_rejected_with_reasons_and_good_ones_kept(tmp_path):
    raw = tmp_path / "raw"
    _scene(raw, "good")
    _scene(raw, "corrupt")
    (raw / "corrupt" / "frame_0001.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _scene(raw, "truncated", ext="png")
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    shutil.rmtree(raw / "truncated")
    (raw / "truncated").mkdir()
    for t in range(3):
        (raw / "truncated" / f"frame_{t:04d}.jpg").write_bytes(buf.getvalue())
    (raw / "truncated" / "frame_0002.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _scene(raw, "mixed")
    _png(raw / "mixed" / "frame_0002.png", size=(9, 6))
    _scene(raw, "short", n=2)
    _scene(raw, ".hidden")
    _scene(raw, "bad\x01name")
    _scene(raw, "dots..name")
    result = build_index(raw, tmp_path / "out", min_frames=3)
    assert sorted(result.scenes) == ["good"]
    rejected = json.loads((tmp_path / "out" / "logs" / "rejected_scenes.json").read_text())
    assert rejected[".hidden"] == "scene id starts with a dot"
    assert rejected["bad\\x01name"] == "scene id holds a control character"
    assert rejected["dots..name"] == "scene id holds '..'"
    assert rejected["short"] == "only 2 frames (minimum 3)"
    assert rejected["corrupt"].startswith("corrupt frame frame_0001.png")
    assert rejected["truncated"].startswith("corrupt frame frame_0002.jpg")
    assert (
        rejected["mixed"] == "inconsistent frame sizes: 8x6 (frame_0000.png), 9x6 (frame_0002.png)"
    )
    assert len(rejected) == 7
    assert not (tmp_path / "out" / "short").exists()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a/b", "scene id holds a path separator"),
        ("a\\b", "scene id holds a path separator"),
        ("..", "scene id holds '..'"),
        (".x", "scene id starts with a dot"),
        ("a\nb", "scene id holds a control character"),
        ("a\x7fb", "scene id holds a control character"),
        ("", "empty scene id"),
        ("bad\udcff", "scene id is not valid UTF-8"),
        ("scene_001", None),
    ],
)
def test_unsafe_scene_ids(name, reason):
    assert unsafe_reason(name) == reason


def test_raw_set_without_usable_scene_is_an_input_error(tmp_path):
    _scene(tmp_path / "raw", "short", n=1)
    with pytest.raises(InputError, match="no usable scene in the raw root"):
        build_index(tmp_path / "raw", tmp_path / "out", min_frames=2)


def test_missing_raw_root_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="raw root is not a folder"):
        build_index(tmp_path / "nope", tmp_path / "out")


def test_min_frames_below_one_is_an_input_error(tmp_path):
    _scene(tmp_path / "raw", "a")
    with pytest.raises(InputError, match="minimum frame count must be positive"):
        build_index(tmp_path / "raw", tmp_path / "out", min_frames=0)


def test_parallel_validation_gives_the_same_index_as_serial(tmp_path):
    raw = tmp_path / "raw"
    for name in ("a", "b", "c"):
        _scene(raw, name)
    _scene(raw, "short", n=1)
    serial = build_index(raw, tmp_path / "one", min_frames=2)
    parallel = build_index(raw, tmp_path / "two", min_frames=2, workers=2)
    assert parallel.scenes == serial.scenes
    assert parallel.rejected == serial.rejected == {"short": "only 1 frames (minimum 2)"}
    assert (tmp_path / "one" / "scene_index.json").read_bytes() == (
        tmp_path / "two" / "scene_index.json"
    ).read_bytes()


def test_reindexing_a_scene_whose_frames_changed_removes_its_deblur_sentinel(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _scene(raw, "a", n=3)
    _scene(raw, "b", n=3)
    build_index(raw, out, min_frames=2)
    for sid in ("a", "b"):
        (out / sid / "frames_sharp").mkdir(parents=True)
        (out / sid / "frames_sharp" / ".done").write_text("{}")
    (raw / "a" / "frame_0002.png").unlink()
    result = build_index(raw, out, min_frames=2)
    assert result.changed == ["a"]
    assert not (out / "a" / "frames_sharp" / ".done").exists()
    assert (out / "b" / "frames_sharp" / ".done").exists()
