import json
import shutil

import numpy as np
import pytest
import torch

from trainset.errors import InputError
from trainset.focus.clips import ClipSampler, FocusClipDataset, collate_fn
from trainset.focus.pack import pack_dataset
from trainset.store import atomic_write_npz, atomic_write_png
from trainset.testing.clip_scenes import SETS, depth_map, focus_value, write_scene


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Three scenes written once (atomic writes fsync: slow); each test gets a copy."""
    base = tmp_path_factory.mktemp("scenes")
    write_scene(base, "alpha", "train", n_frames=6)
    write_scene(base, "beta", "train", n_frames=4)
    write_scene(base, "gamma", "val", n_frames=5)
    return base


@pytest.fixture
def root(template, tmp_path):
    shutil.copytree(template, tmp_path / "data")
    return tmp_path / "data"


def test_split_filters_scenes_by_split_txt(root):
    ds = FocusClipDataset(root, "val", clip_len=2)
    assert {ds.scene_of(i) for i in range(len(ds))} == {"gamma"}


def test_clips_cover_every_start_set_and_scene(root):
    ds = FocusClipDataset(root, "train", clip_len=3, stride=2)
    # alpha: starts 0, 2 (6 frames); beta: start 0 (4 frames); 2 sets each
    assert ds.clips.tolist() == [[0, 0, 0], [0, 0, 2], [0, 1, 0], [0, 1, 2], [1, 0, 0], [1, 1, 0]]


def test_coc_sets_restrict_the_sets(root):
    ds = FocusClipDataset(root, "train", clip_len=4, coc_sets=[1])
    assert sorted(set(ds.clips[:, 1].tolist())) == [1]


def test_frames_are_rgb_in_unit_range_time_first(root):
    ds = FocusClipDataset(root, "train", clip_len=3, stride=2, modalities=["frames"])
    item = ds[1]  # alpha, set 0, start 2
    frames = item["frames"]
    assert frames.shape == (3, 3, 8, 12) and frames.dtype == torch.float32
    assert frames[:, 0, 0, 0].tolist() == pytest.approx([2 / 255, 3 / 255, 4 / 255])
    assert frames[0, 1, 0, 0].item() == pytest.approx(12 / 255)
    assert frames[0, 2, 0, 11].item() == pytest.approx(11 / 255)


def test_depth_is_in_metres_with_one_channel(root):
    item = FocusClipDataset(root, "train", clip_len=2, modalities=["depth"])[0]
    assert item["depth"].shape == (2, 1, 8, 12)
    want = np.stack([depth_map(t, 8, 12) for t in range(2)]).astype(np.float32)[:, None]
    np.testing.assert_array_equal(item["depth"].numpy(), want)


def test_focus_and_bokeh_come_from_the_clip_set(root):
    ds = FocusClipDataset(root, "train", clip_len=2, coc_sets=[1], modalities=["focus", "bokeh"])
    item = ds[0]
    assert item["set"] == 1
    np.testing.assert_array_equal(
        item["focus"][:, 0, 0, 0].numpy(),
        np.array([focus_value(1, 0), focus_value(1, 1)], np.float16).astype(np.float32),
    )
    assert item["bokeh"][:, 0, 0, 0].tolist() == pytest.approx([110 / 255, 111 / 255])


def test_set_parameters_come_from_metadata(root):
    item = FocusClipDataset(root, "train", clip_len=2, coc_sets=[1])[0]
    for key in ("f", "N", "S_focus", "max_coc"):
        assert item[key].item() == pytest.approx(SETS[1][key])
        assert item[key].dtype == torch.float32


def test_full_roi_is_the_unit_box(root):
    item = FocusClipDataset(root, "train", clip_len=2)[0]
    assert item["roi"].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_random_roi_lies_inside_the_frame_and_is_reproducible(root):
    a = FocusClipDataset(root, "train", clip_len=2, roi="random", seed=3)
    b = FocusClipDataset(root, "train", clip_len=2, roi="random", seed=3)
    boxes = np.stack([a.roi_box(i) for i in range(len(a))])
    np.testing.assert_array_equal(boxes, np.stack([b.roi_box(i) for i in range(len(b))]))
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 1).all()
    assert (boxes[:, 2:] - boxes[:, :2] >= 0.25 - 1e-6).all()
    a.set_epoch(1)
    assert not np.array_equal(boxes, np.stack([a.roi_box(i) for i in range(len(a))]))


def test_packed_and_plan_files_give_identical_tensors(root):
    plain = FocusClipDataset(root, "train", clip_len=3, stride=1, packed=False)
    pack_dataset(root)
    packed = FocusClipDataset(root, "train", clip_len=3, stride=1, packed=True)
    assert len(plain) == len(packed) == 12
    for i in range(len(plain)):
        x, y = plain[i], packed[i]
        assert x.keys() == y.keys()
        for key, value in x.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, y[key]), (i, key)
            else:
                assert value == y[key]


def test_stale_pack_is_ignored(root):
    pack_dataset(root)
    write_scene(root, "alpha", "train", n_frames=7)  # the scene changed after packing
    ds = FocusClipDataset(root, "train", clip_len=7, modalities=["frames"])
    assert ds._pack(0) is None
    assert ds[0]["frames"].shape[0] == 7


def test_requiring_a_pack_without_one_is_refused(root):
    with pytest.raises(
        InputError, match=r"scene alpha: no current pack; run `trainset focus pack`"
    ):
        FocusClipDataset(root, "train", packed=True)


def test_missing_frame_file_names_scene_and_frame(root):
    (root / "alpha" / "depth_maps" / "depth_0001.npz").unlink()
    ds = FocusClipDataset(root, "train", clip_len=2, modalities=["depth"])
    with pytest.raises(InputError, match=r"alpha/depth_maps/depth_0001\.npz: file not found"):
        ds[0]


def test_frame_of_another_size_names_scene_and_frame(root):
    atomic_write_npz(
        root / "beta" / "depth_maps" / "depth_0001.npz", {"depth": np.ones((4, 4), np.float16)}
    )
    ds = FocusClipDataset(root, "train", clip_len=2, modalities=["depth"])
    idx = next(i for i in range(len(ds)) if ds.scene_of(i) == "beta")
    with pytest.raises(
        InputError,
        match=r"scene beta frame 1: depth differs from frame 0 \(expected \(8, 12\) float16, found \(4, 4\) float16\)",
    ):
        ds[idx]


def test_modality_of_another_size_names_scene_and_frame(root):
    for t in range(4):
        atomic_write_npz(
            root / "beta" / "depth_maps" / f"depth_{t:04d}.npz",
            {"depth": np.ones((4, 4), np.float16)},
        )
    ds = FocusClipDataset(root, "train", clip_len=2, modalities=["frames", "depth"])
    idx = next(i for i in range(len(ds)) if ds.scene_of(i) == "beta")
    with pytest.raises(InputError, match=r"scene beta frame 0: depth size differs from frames"):
        ds[idx]


def test_grey_png_render_reads_as_three_equal_channels(root):
    atomic_write_png(
        root / "alpha" / "bokeh_renders" / "set_00" / "bokeh_0001.png", np.zeros((8, 12), np.uint8)
    )
    ds = FocusClipDataset(root, "train", clip_len=2, modalities=["bokeh"])
    item = ds[0]
    assert item["bokeh"][1].abs().sum().item() == 0.0


def test_unknown_modality_is_refused(root):
    with pytest.raises(InputError, match="unknown modality"):
        FocusClipDataset(root, "train", modalities=["normals"])


def test_unknown_split_is_refused(root):
    with pytest.raises(InputError, match="unknown split"):
        FocusClipDataset(root, "holdout")


def test_unknown_roi_mode_is_refused(root):
    with pytest.raises(InputError, match="unknown roi mode"):
        FocusClipDataset(root, roi="saliency")


def test_missing_set_names_the_scene(root):
    with pytest.raises(
        InputError, match=r"scene alpha: CoC set 2 does not exist \(expected 0..1, found 2\)"
    ):
        FocusClipDataset(root, "train", coc_sets=[2])


def test_gap_in_frames_names_the_scene(root):
    (root / "beta" / "frames_sharp" / "frame_0002.png").unlink()
    with pytest.raises(InputError, match=r"scene beta: frame files are not numbered contiguously"):
        FocusClipDataset(root, "train")


def test_bad_clip_length_is_refused(root):
    with pytest.raises(InputError, match="clip length must be >= 1"):
        FocusClipDataset(root, clip_len=0)


def test_sampler_order_depends_on_seed_and_epoch_only(root):
    ds = FocusClipDataset(root, "train", clip_len=2, stride=1)
    a, b = ClipSampler(ds, seed=4), ClipSampler(ds, seed=4)
    first = list(a)
    assert first == list(b)
    assert sorted(first) == list(range(len(ds)))
    assert list(a) != first  # the next epoch


def test_sampler_caps_clips_per_scene(root):
    ds = FocusClipDataset(root, "train", clip_len=2, stride=1)  # alpha 10 clips, beta 6
    sampler = ClipSampler(ds, seed=1, clips_per_scene=4)
    order = list(sampler)
    assert len(order) == len(sampler) == 8
    scenes = [ds.scene_of(i) for i in order]
    assert scenes.count("alpha") == 4 and scenes.count("beta") == 4


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_an_epoch_into_equal_parts_of_the_same_order(root, world):
    ds = FocusClipDataset(root, "train", clip_len=2, stride=1)  # 16 clips
    whole = ClipSampler(ds, seed=4).order(3).tolist()
    parts = [ClipSampler(ds, seed=4, rank=r, world_size=world).order(3).tolist()
             for r in range(world)]  # fmt: skip
    per_rank = -(-16 // world)
    assert [len(p) for p in parts] == [per_rank] * world
    assert len(ClipSampler(ds, rank=0, world_size=world)) == per_rank
    padded = (whole * 2)[: per_rank * world]  # the tail wraps around to the start
    for r in range(world):
        assert parts[r] == padded[r::world]
    assert sorted(set(i for p in parts for i in p)) == list(range(16))


@pytest.mark.parametrize(("rank", "world"), [(1, 1), (-1, 2), (0, 0)])
def test_clip_sampler_refuses_a_rank_outside_the_world(root, rank, world):
    ds = FocusClipDataset(root, "train", clip_len=2)
    with pytest.raises(InputError, match=r"rank must lie in 0\.\.world_size-1"):
        ClipSampler(ds, rank=rank, world_size=world)


def test_collate_stacks_clips(root):
    ds = FocusClipDataset(root, "train", clip_len=2)
    batch = collate_fn([ds[0], ds[1]])
    assert batch["frames"].shape == (2, 2, 3, 8, 12)
    assert batch["focus"].shape == (2, 2, 1, 8, 12)
    assert batch["roi"].shape == (2, 4)
    assert batch["f"].shape == (2,)
    assert batch["set"].tolist() == [0, 0] and batch["start"].tolist() == [0, 2]
    assert batch["scene_id"] == ["alpha", "alpha"]


def test_collate_refuses_clips_of_different_sizes(tmp_path):
    write_scene(tmp_path, "small", "train", h=8, w=12)
    write_scene(tmp_path, "large", "train", h=10, w=12)
    ds = FocusClipDataset(tmp_path, "train", clip_len=2, modalities=["frames"])
    with pytest.raises(InputError, match=r"clips of different sizes in one batch \(frames\)"):
        collate_fn([ds[0], ds[len(ds) - 1]])


def test_dataloader_with_workers_matches_direct_reads(root):
    ds = FocusClipDataset(root, "train", clip_len=2, modalities=["frames", "focus"])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_fn, num_workers=2)
    got = torch.cat([b["frames"] for b in loader])
    want = torch.stack([ds[i]["frames"] for i in range(len(ds))])
    assert torch.equal(got, want)


def test_scenes_come_from_the_scene_index(root):
    index = json.loads((root / "scene_index.json").read_text())
    del index["beta"]
    (root / "scene_index.json").write_text(json.dumps(index))
    ds = FocusClipDataset(root, "train", clip_len=2)
    assert {ds.scene_of(i) for i in range(len(ds))} == {"alpha"}


def test_missing_split_txt_names_the_scene(root):
    (root / "beta" / "split.txt").unlink()
    with pytest.raises(InputError, match=r"scene beta: no valid split.txt.*found no file"):
        FocusClipDataset(root, "train")


def test_depth_map_that_is_not_2d_names_file_key_and_shape(root):
    atomic_write_npz(
        root / "alpha" / "depth_maps" / "depth_0001.npz", {"depth": np.ones((2, 8, 12), np.float16)}
    )
    ds = FocusClipDataset(root, "train", clip_len=2, modalities=["depth"])
    with pytest.raises(
        InputError,
        match=r"alpha/depth_maps/depth_0001\.npz: key 'depth': scene alpha frame 1: depth map is "
        r"not a 2-D float array \(expected \(H, W\) float16, found \(2, 8, 12\) float16\)",
    ):
        ds[0]


def test_collate_of_no_clips_is_refused():
    with pytest.raises(InputError, match=r"cannot collate an empty batch \(expected >= 1 clip"):
        collate_fn([])


def test_clips_per_scene_below_one_is_refused(root):
    ds = FocusClipDataset(root, "train", clip_len=2)
    with pytest.raises(InputError, match=r"clips_per_scene must be >= 1 \(expected >= 1, found 0"):
        ClipSampler(ds, clips_per_scene=0)
