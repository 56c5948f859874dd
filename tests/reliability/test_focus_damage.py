"""Issue 18, focus items: hostile input and damaged files are findings of one scene, never a
crash, a silent wrong result, or a write outside the output root."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainset.cli import main
from trainset.focus.synthetic import generate_scenes
from trainset.store import read_json
from trainset.store.codecs import read_npz_array

SCENES = ("scene_000", "scene_001", "scene_002")


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def finished_master(tmp_path_factory):
    """3 scenes x 4 frames x 16x24, one parameter set, run to the end."""
    base = tmp_path_factory.mktemp("damage")
    raw, out = base / "raw", base / "out"
    generate_scenes(raw, n_scenes=3, n_frames=4, size=(16, 24), seed=11)
    code, text, _ = _cli(
        *("focus", "run", "--raw-root", str(raw), "--out-root", str(out), "--min-frames", "4"),
        *("--max-coc", "from-stats", "--sets", "1"),
    )
    assert code == 0, text
    return raw, out


@pytest.fixture
def finished(finished_master, tmp_path):
    raw, out = finished_master
    copy_raw, copy_out = tmp_path / "raw", tmp_path / "out"
    shutil.copytree(raw, copy_raw)
    shutil.copytree(out, copy_out)
    return copy_raw, copy_out


def _bit_rot(path: Path) -> None:
    """Flip bytes in the middle of a compressed NPZ member (its zip structure stays valid)."""
    data = bytearray(path.read_bytes())
    start = 80
    for i in range(start, start + 24):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _huge_header_npz(path: Path, key: str) -> None:
    """An NPZ whose member header claims a (1000000, 1000000) float16 array (1.82 TiB)."""
    header = "{'descr': '<f2', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header = header + " " * (63 - len(header) % 64) + "\n"
    member = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{key}.npy", member)


def _focus(out: Path, scene: str, t: int = 1) -> Path:
    return out / scene / "focus_maps" / "set_00" / f"focus_{t:04d}.npz"


@pytest.mark.parametrize("damage", ["bit_rot", "huge_header", "split_not_utf8"])
def test_one_damaged_file_is_a_finding_of_its_scene_in_validate(finished, damage):
    _, out = finished
    if damage == "bit_rot":
        _bit_rot(_focus(out, "scene_001"))
    elif damage == "huge_header":
        _huge_header_npz(_focus(out, "scene_001"), "focus_map")
    else:
        (out / "scene_001" / "split.txt").write_bytes(b"tr\xffin")
    code, _, err = _cli("focus", "validate", "--out-root", str(out))
    assert code == 1, err
    report = read_json(out / "logs" / "validation_report.json")
    assert report["failed_scenes"] == ["scene_001"]
    assert report["passing_scenes"] == 2
    assert "Traceback" not in err


@pytest.mark.parametrize("damage", ["bit_rot", "huge_header", "split_not_utf8"])
def test_validate_requeue_repairs_a_damaged_file(finished, damage):
    _, out = finished
    if damage == "bit_rot":
        _bit_rot(_focus(out, "scene_001"))
    elif damage == "huge_header":
        _huge_header_npz(_focus(out, "scene_001"), "focus_map")
    else:
        (out / "scene_001" / "split.txt").write_bytes(b"tr\xffin")
    code, text, err = _cli("focus", "validate", "--out-root", str(out), "--requeue")
    assert code == 0, text + err
    assert read_json(out / "logs" / "validation_report.json")["failed_scenes"] == []
    if damage != "split_not_utf8":
        assert read_npz_array(_focus(out, "scene_001"), "focus_map").shape == (16, 24)


@pytest.mark.parametrize("damage", ["bit_rot", "huge_header"])
def test_pack_packs_the_other_scenes_and_names_the_damaged_one(finished, damage):
    _, out = finished
    if damage == "bit_rot":
        _bit_rot(_focus(out, "scene_002"))
    else:
        _huge_header_npz(_focus(out, "scene_002"), "focus_map")
    code, text, err = _cli("focus", "pack", "--out-root", str(out))
    assert code == 1
    assert "packed 2 scene(s)" in text
    assert "failed scene_002:" in text and "focus_0001.npz" in text
    assert (out / "scene_000" / "packed" / "pack.json").is_file()
    assert not (out / "scene_002" / "packed" / "pack.json").exists()
    assert "Traceback" not in err


def test_pack_isolates_a_truncated_png(finished):
    _, out = finished
    frame = out / "scene_000" / "frames_sharp" / "frame_0002.png"
    frame.write_bytes(frame.read_bytes()[:60])
    code, text, _ = _cli("focus", "pack", "--out-root", str(out))
    assert code == 1
    assert "packed 2 scene(s)" in text and "failed scene_000:" in text


def test_pack_refuses_a_decompression_bomb_as_a_finding(finished):
    _, out = finished
    bomb = out / "scene_001" / "bokeh_renders" / "set_00" / "bokeh_0000.png"
    Image.new("L", (20000, 20000)).save(bomb)  # 400 Mpixel of zeros: a few hundred KB
    code, text, err = _cli("focus", "pack", "--out-root", str(out))
    assert code == 1
    assert "failed scene_001:" in text and "bokeh_0000.png" in text
    assert "DecompressionBomb" not in err and "Traceback" not in err


def test_a_killed_pack_leaves_temps_that_the_next_pack_removes(finished):
    _, out = finished
    packed = out / "scene_000" / "packed"
    packed.mkdir(parents=True, exist_ok=True)
    stale = packed / ".frames.npy.tmp-abcd1234"
    stale.write_bytes(b"\0" * 4096)
    assert _cli("focus", "pack", "--out-root", str(out))[0] == 0
    assert not stale.exists()


@pytest.mark.parametrize("scene_id", ["../neighbour", "a/b", "bad\nid", "logs"])
def test_an_unsafe_scene_id_in_the_index_is_refused_and_nothing_outside_is_touched(
    finished, scene_id
):
    _, out = finished
    neighbour = out.parent / "neighbour"
    neighbour.mkdir()
    victim = neighbour / ".results.csv.tmp-abcdefgh"
    victim.write_text("another program's file in flight")
    index = json.loads((out / "scene_index.json").read_text())
    index[scene_id] = index["scene_000"]
    (out / "scene_index.json").write_text(json.dumps(index))
    code, _, err = _cli("focus", "deblur", "--out-root", str(out), "--force")
    assert code == 2
    assert "unsafe scene id in the scene index" in err
    assert "\n" not in err.strip()
    assert victim.exists() and sorted(p.name for p in neighbour.iterdir()) == [victim.name]


def test_symlinked_frames_keep_their_own_scenes_depth(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=2, n_frames=4, size=(16, 24), seed=3)
    # scene_001 borrows scene_000's frames by symlink but ships its own depth (5 m).
    for frame in (raw / "scene_001").glob("frame_*.png"):
        frame.unlink()
        os.symlink(raw / "scene_000" / frame.name, frame)
    for path in (raw / "scene_001" / "depth").glob("*.npy"):
        np.save(path, np.full((16, 24), 5.0, np.float32))
    root = ("--out-root", str(out))
    assert _cli("focus", "index", "--raw-root", str(raw), *root, "--min-frames", "4")[0] == 0
    assert _cli("focus", "deblur", *root)[0] == 0
    assert _cli("focus", "depth", *root)[0] == 0
    depth = read_npz_array(out / "scene_001" / "depth_maps" / "depth_0000.npz", "depth")
    assert np.all(depth == np.float16(5.0))


def test_a_killed_forced_upstream_rerun_makes_downstream_stale_not_current(finished):
    """deblur --force killed half-way through a scene: its sentinel is gone, so depth, labels
    and renders of that scene are not done, render does not say "already done", and status
    does not count them."""
    _, out = finished
    (out / "scene_001" / "frames_sharp" / ".done").unlink()
    (out / "scene_001" / "frames_sharp" / "frame_0000.png").unlink()  # half old, half new
    _, text, _ = _cli("focus", "status", "--out-root", str(out))
    rows = {w[0]: w[1:] for line in text.splitlines() if (w := line.split()) and len(w) == 5}
    assert rows["deblur"][:2] == ["2", "1"]
    assert rows["depth"][:2] == ["2", "1"] and rows["renders"][:2] == ["2", "1"]
    _, text, _ = _cli(
        "focus", "render", "--out-root", str(out), "--max-coc", "from-stats", "--sets", "1"
    )
    assert "renders: 0 done, 2 already done, 0 failed, 1 blocked" in text


def test_a_redone_upstream_makes_the_downstream_stale(finished):
    _, out = finished
    root = ("--out-root", str(out))
    assert _cli("focus", "deblur", *root, "--scene", "scene_002", "--force")[0] == 0
    _, text, _ = _cli("focus", "depth", *root)
    assert "depth: 1 done, 2 already done" in text


def test_out_root_that_is_a_file_and_raw_root_that_is_a_file_say_so(tmp_path):
    (tmp_path / "f").write_text("x")
    generate_scenes(tmp_path / "raw", n_scenes=1, n_frames=4, size=(16, 24), seed=1)
    code, _, err = _cli(
        "focus", "index", "--raw-root", str(tmp_path / "raw"), "--out-root", str(tmp_path / "f"),
        "--min-frames", "4",
    )  # fmt: skip
    assert code == 2 and "output root is not a folder" in err and "found a file" in err
    code, _, err = _cli("focus", "deblur", "--out-root", str(tmp_path / "f"))
    assert code == 2 and "output root is not a folder" in err and "found a file" in err
    code, _, err = _cli(
        "focus", "index", "--raw-root", str(tmp_path / "f"), "--out-root", str(tmp_path / "o")
    )
    assert code == 2 and "raw root is not a folder" in err and "found a file" in err


def test_a_rejected_scene_id_with_a_newline_is_printed_escaped(tmp_path):
    raw = tmp_path / "raw"
    generate_scenes(raw, n_scenes=2, n_frames=4, size=(16, 24), seed=1)
    (raw / "scene_001").rename(raw / "bad\nname")
    code, text, _ = _cli(
        "focus", "index", "--raw-root", str(raw), "--out-root", str(tmp_path / "o"),
        "--min-frames", "4",
    )  # fmt: skip
    assert code == 0
    assert "  rejected bad\\nname: scene id holds a control character" in text.splitlines()
