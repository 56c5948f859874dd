import numpy as np
import pytest

from trainset.errors import InputError
from trainset.focus.synthetic import DEPTH_RANGES_M, generate_scenes, render_scene
from trainset.store.codecs import read_png


def test_same_seed_gives_identical_files(tmp_path):
    a = generate_scenes(tmp_path / "a", n_scenes=2, n_frames=3, size=(16, 16), seed=5)
    b = generate_scenes(tmp_path / "b", n_scenes=2, n_frames=3, size=(16, 16), seed=5)
    for sa, sb in zip(a, b):
        for pa, pb in zip(sa.frame_paths + sa.depth_paths, sb.frame_paths + sb.depth_paths):
            assert pa.read_bytes() == pb.read_bytes()


def test_different_seeds_give_different_frames():
    f1, _ = render_scene(2, 16, 16, "indoor", seed=1)
    f2, _ = render_scene(2, 16, 16, "indoor", seed=2)
    assert not np.array_equal(f1, f2)


def test_layout_is_the_plans_raw_layout(tmp_path):
    (scene,) = generate_scenes(tmp_path, n_scenes=1, n_frames=2, size=(16, 16))
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert names == [
        "scene_000/depth/depth_0000.npy",
        "scene_000/depth/depth_0001.npy",
        "scene_000/frame_0000.png",
        "scene_000/frame_0001.png",
    ]
    assert read_png(scene.frame_paths[0]).shape == (16, 16, 3)
    depth = np.load(scene.depth_paths[0], allow_pickle=False)
    assert depth.shape == (16, 16) and depth.dtype == np.float32


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_depth_stays_in_the_kinds_range(kind):
    _, depth = render_scene(4, 32, 32, kind, seed=3)
    near, far = DEPTH_RANGES_M[kind]
    assert depth.min() >= near and depth.max() <= far


def test_scene_has_occlusion_edges_between_objects_and_background():
    _, depth = render_scene(1, 64, 64, "outdoor", seed=4)
    jumps = np.abs(np.diff(depth[0], axis=1)) / depth[0][:, 1:]
    assert (jumps > 0.5).sum() >= 4
    assert len(np.unique(depth[0])) > 3


def test_nearest_object_moves_by_parallax_between_frames():
    _, depth = render_scene(12, 64, 64, "indoor", seed=6)
    nearest = depth.min()
    cols_first = np.nonzero((depth[0] == nearest).any(axis=0))[0]
    cols_last = np.nonzero((depth[-1] == nearest).any(axis=0))[0]
    # Camera steps so the nearest object shifts 1.5 px per frame: 11 steps -> ~16 px left.
    assert cols_first.mean() - cols_last.mean() == pytest.approx(16.5, abs=1.5)


def test_jpeg_scenes_are_written_as_jpg(tmp_path):
    (scene,) = generate_scenes(tmp_path, n_scenes=1, n_frames=1, size=(16, 16), image_format="jpg")
    assert scene.frame_paths[0].name == "frame_0000.jpg"
    assert scene.frame_paths[0].read_bytes()[:2] == b"\xff\xd8"


def test_unknown_image_format_is_rejected(tmp_path):
    with pytest.raises(InputError, match="image format must be png or jpg"):
        generate_scenes(tmp_path, image_format="tif")
