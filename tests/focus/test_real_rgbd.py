"""The focus pipeline on a real Kinect RGB-D clip (Microsoft 7-Scenes "redkitchen").

What only real data shows: the sensor writes 0 (about 9-12 % of a frame) and 65535 (38 pixels of
frame-000163) where it measured nothing; read as millimetres 65535 is a 65.5 m surface in a
kitchen 0.9-3.0 m deep, which would drag d_max, and with it every S_focus the plan draws, behind
the wall. The clip is laid out as the plan's raw layout (16 frames, 150-165, at half resolution:
colour box-filtered, depth subsampled so its codes stay codes) and run through `focus run`.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image

from trainset.cli import main
from trainset.store import read_json
from trainset.store.codecs import read_npz_array, read_png

FRAMES = range(150, 166)  # includes frame-000163 and its 38 pixels of 65535


@pytest.fixture(scope="module")
def kitchen(shared_data, tmp_path_factory):
    source = shared_data("rgbd", "7scenes-redkitchen")
    base = tmp_path_factory.mktemp("kitchen")
    raw, out = base / "raw", base / "out"
    scene = raw / "redkitchen"
    (scene / "depth").mkdir(parents=True)
    for t, n in enumerate(FRAMES):
        with Image.open(source / f"frame-{n:06d}.color.png") as img:
            img.convert("RGB").resize((320, 240), Image.Resampling.BOX).save(
                scene / f"frame_{t:04d}.png"
            )
        depth = np.asarray(Image.open(source / f"frame-{n:06d}.depth.png"))[::2, ::2]
        Image.fromarray(np.ascontiguousarray(depth)).save(scene / "depth" / f"depth_{t:04d}.png")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main(
            [
                *("focus", "run", "--raw-root", str(raw), "--out-root", str(out)),
                *("--depth-scale", "1000", "--max-coc", "from-stats", "--sample-fraction", "1"),
            ]
        )
    return out / "redkitchen", code, stdout.getvalue()


pytestmark = pytest.mark.slow


def test_the_run_finishes_and_validates(kitchen):
    _, code, text = kitchen
    assert code == 0, text
    assert "1/1 scenes pass" in text


def test_sensor_codes_do_not_become_depth(kitchen):
    scene, _, _ = kitchen
    stats = read_json(scene / "depth_maps" / "stats.json")
    assert stats["d_min"] > 0.9 and stats["d_max"] < 4.0
    assert 0.85 < stats["valid_fraction"] < 0.95
    stored = np.stack(
        [read_npz_array(scene / "depth_maps" / f"depth_{t:04d}.npz", "depth") for t in range(16)]
    )
    assert float(stored.max()) < 4.0


def test_every_focus_distance_lies_inside_the_kitchen(kitchen):
    scene, _, _ = kitchen
    stats = read_json(scene / "depth_maps" / "stats.json")
    sets = read_json(scene / "metadata.json")["sets"]
    assert len(sets) == 4
    for lens in sets:
        assert stats["d_min"] <= lens["S_focus"] <= stats["d_max"]
        assert 0.9 <= lens["S_focus"] <= 3.1


def _focus(scene, s, t):
    return read_npz_array(scene / "focus_maps" / f"set_{s:02d}" / f"focus_{t:04d}.npz", "focus_map")


def test_some_set_puts_a_real_part_of_the_frame_in_focus(kitchen):
    scene, _, _ = kitchen
    in_focus = [
        np.mean([(_focus(scene, s, t).astype(np.float32) > 0.9).mean() for t in range(16)])
        for s in range(4)
    ]
    assert max(in_focus) > 0.05


def test_renders_keep_the_mean_brightness_within_3_percent(kitchen):
    scene, _, _ = kitchen
    for t in (0, 13):
        sharp = read_png(scene / "frames_sharp" / f"frame_{t:04d}.png").astype(np.float64)
        for s in range(4):
            render = read_png(scene / "bokeh_renders" / f"set_{s:02d}" / f"bokeh_{t:04d}.png")
            assert abs(render.mean() - sharp.mean()) / sharp.mean() < 0.03


def test_in_focus_regions_stay_closer_to_the_sharp_frame_than_blurred_ones(kitchen):
    scene, _, _ = kitchen
    compared = 0
    for s in range(4):
        t = 13
        focus = _focus(scene, s, t).astype(np.float32)
        sharp = read_png(scene / "frames_sharp" / f"frame_{t:04d}.png").astype(np.float32)
        render = read_png(scene / "bokeh_renders" / f"set_{s:02d}" / f"bokeh_{t:04d}.png")
        error = np.abs(render.astype(np.float32) - sharp).mean(axis=2)
        sharp_part, blurred_part = focus > 0.9, focus < 0.3
        if sharp_part.mean() < 0.02 or blurred_part.mean() < 0.02:
            continue
        assert error[sharp_part].mean() < error[blurred_part].mean()
        compared += 1
    assert compared >= 1
