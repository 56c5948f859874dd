import shutil

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.focus import pack as pack_mod
from trainset.focus.clips import FocusClipDataset
from trainset.focus.pack import (
    PackResult,
    check_packed_scene,
    open_packed,
    pack_dataset,
    pack_scene,
)
from trainset.store import (
    NPY_ALIGN,
    atomic_write_json,
    atomic_write_npz,
    atomic_write_png,
    sha256_file,
)
from trainset.testing.clip_scenes import (
    SETS,
    bokeh_rgb,
    depth_map,
    focus_value,
    frame_rgb,
    write_scene,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    base = tmp_path_factory.mktemp("scenes")
    write_scene(base, "alpha", "train", n_frames=3, h=6, w=10)
    write_scene(base, "beta", "val", n_frames=2, h=6, w=10, bokeh=False)
    return base


@pytest.fixture
def root(template, tmp_path):
    shutil.copytree(template, tmp_path / "data")
    return tmp_path / "data"


def test_packed_arrays_hold_the_plan_values_channels_first(root):
    pack_scene(root, "alpha")
    p = open_packed(root / "alpha")
    assert p is not None
    assert p.depth is not None and p.focus is not None and p.bokeh is not None
    np.testing.assert_array_equal(
        p.frames, np.stack([frame_rgb(t, 6, 10).transpose(2, 0, 1) for t in range(3)])
    )
    np.testing.assert_array_equal(p.depth, np.stack([depth_map(t, 6, 10) for t in range(3)]))
    assert p.depth.dtype == np.float16 and p.focus.dtype == np.float16 and p.bokeh.dtype == np.uint8
    assert p.focus.shape == (2, 3, 6, 10)
    assert p.focus[1, 2, 0, 0] == np.float16(focus_value(1, 2))
    np.testing.assert_array_equal(p.bokeh[1, 2], bokeh_rgb(1, 2, 6, 10).transpose(2, 0, 1))


def test_packed_files_are_page_aligned_npy(root):
    pack_scene(root, "alpha")
    for name in ("frames", "depth", "focus", "bokeh"):
        arr = np.load(root / "alpha" / "packed" / f"{name}.npy", mmap_mode="r")
        assert arr.offset == NPY_ALIGN


def test_pack_record_describes_files_and_sources(root):
    record = pack_scene(root, "alpha")
    assert record["format"] == "trainset.focus.packed" and record["version"] == 1
    assert (record["n_frames"], record["height"], record["width"]) == (3, 6, 10)
    assert record["sets"] == SETS
    for entry in record["files"].values():
        assert entry["sha256"] == sha256_file(root / "alpha" / "packed" / entry["file"])
    assert record["files"]["bokeh"]["shape"] == [2, 3, 3, 6, 10]


def test_scene_without_renders_packs_without_bokeh(root):
    record = pack_scene(root, "beta")
    assert sorted(record["files"]) == ["depth", "focus", "frames"]
    with pytest.raises(InputError, match=r"scene beta: the pack has no bokeh"):
        FocusClipDataset(root, "val", clip_len=2, modalities=["bokeh"], packed=True)[0]


def test_pack_dataset_packs_each_scene_once(root):
    assert pack_dataset(root) == PackResult(["alpha", "beta"], [], {})
    assert pack_dataset(root) == PackResult([], ["alpha", "beta"], {})
    assert pack_dataset(root, force=True) == PackResult(["alpha", "beta"], [], {})


def test_changed_metadata_makes_the_pack_stale(root):
    pack_scene(root, "alpha")
    atomic_write_json(root / "alpha" / "metadata.json", {"sets": SETS[:1]})
    assert open_packed(root / "alpha") is None
    assert pack_dataset(root, scenes=["alpha"]) == PackResult(["alpha"], [], {})


def test_rerun_stage_sentinel_makes_the_pack_stale(root):
    pack_scene(root, "alpha")
    atomic_write_json(root / "alpha" / "depth_maps" / ".done", {"stage": "depth", "time": "later"})
    assert open_packed(root / "alpha") is None


def test_check_of_a_good_pack_finds_nothing(root):
    pack_scene(root, "alpha")
    assert check_packed_scene(root, "alpha") == []


def test_check_without_a_pack_finds_nothing(root):
    assert check_packed_scene(root, "alpha") == []


def test_check_finds_a_tampered_packed_file(root):
    pack_scene(root, "alpha")
    path = root / "alpha" / "packed" / "depth.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert check_packed_scene(root, "alpha") == [
        ("packed/depth", "depth.npy sha256 differs from pack.json")
    ]


def test_check_finds_a_stale_pack(root):
    pack_scene(root, "alpha")
    atomic_write_json(root / "alpha" / "metadata.json", {"sets": SETS[:1]})
    assert check_packed_scene(root, "alpha") == [
        ("packed", "pack is stale: a stage re-ran since; run pack again")
    ]


def test_check_finds_a_plan_file_that_changed_without_a_sentinel(root):
    pack_scene(root, "alpha")
    atomic_write_png(root / "alpha" / "frames_sharp" / "frame_0001.png", frame_rgb(9, 6, 10))
    assert check_packed_scene(root, "alpha") == [
        ("packed/frames", "frame 1 differs from the plan's file")
    ]


def test_pack_killed_midway_leaves_no_usable_pack(root, monkeypatch):
    pack_scene(root, "alpha")
    real = pack_mod._stream_npy

    def fail_on_focus(path, *args):
        if path.name == "focus.npy":
            raise OSError("disk full")
        return real(path, *args)

    monkeypatch.setattr(pack_mod, "_stream_npy", fail_on_focus)
    with pytest.raises(OSError, match="disk full"):
        pack_scene(root, "alpha")
    assert not (root / "alpha" / "packed" / "pack.json").exists()
    assert open_packed(root / "alpha") is None


def test_frame_of_another_size_is_refused_naming_scene_and_frame(root):
    atomic_write_png(
        root / "alpha" / "frames_sharp" / "frame_0002.png", np.zeros((5, 10, 3), np.uint8)
    )
    with pytest.raises(
        InputError, match=r"scene alpha frame 2: frame differs from the scene's first frame"
    ):
        pack_scene(root, "alpha")


def test_focus_map_of_another_size_names_set_and_frame(root):
    atomic_write_npz(
        root / "alpha" / "focus_maps" / "set_01" / "focus_0001.npz",
        {"focus_map": np.zeros((6, 9), np.float16)},
    )
    with pytest.raises(InputError, match=r"scene alpha frame 1: set 1 focus differs"):
        pack_scene(root, "alpha")


def test_missing_scene_is_refused(root):
    with pytest.raises(InputError, match=r"scene nowhere not found"):
        pack_scene(root, "nowhere")


def test_missing_root_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"absent/scene_index.json: scene index not found"):
        pack_dataset(tmp_path / "absent")


def test_stream_with_missing_chunks_is_refused_and_leaves_no_file(tmp_path):
    target = tmp_path / "x.npy"
    chunks = iter([np.zeros((2, 2), np.uint8)])
    with pytest.raises(
        InputError, match=r"packed x\.npy has the wrong size \(expected 8, found 4\)"
    ):
        pack_mod._stream_npy(target, (2, 2, 2), np.dtype(np.uint8), chunks)
    assert list(tmp_path.iterdir()) == []
