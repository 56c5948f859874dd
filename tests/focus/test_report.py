"""`trainset focus report`: a static HTML page of a focus data set, checked in headless Chromium."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from tests.focus.failed_sets import BROKEN_FILE, FAILED_SCENE, build_set_with_failed_scene
from trainset.cli import main
from trainset.focus.demo import focus_demo_summary
from trainset.focus.report import FocusReportOptions, build_focus_report, sample_scenes
from trainset.focus.report_scene import depth_colours, depth_lut, pick_frames
from trainset.store.report_page import THUMB_BOX


@pytest.fixture(scope="module")
def failed_set(tmp_path_factory) -> Path:
    return build_set_with_failed_scene(tmp_path_factory.mktemp("failed"))


@pytest.fixture(scope="module")
def failed_report(failed_set):
    return build_focus_report(failed_set, stream=io.StringIO())


def _image_sources(page: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page.read_text(encoding="utf-8"))


def test_pick_frames_spreads_k_frames_from_first_to_last():
    assert pick_frames(16, 2) == [0, 15]
    assert pick_frames(16, 4) == [0, 5, 10, 15]
    assert pick_frames(3, 5) == [0, 1, 2]
    assert pick_frames(16, 1) == [0]
    assert pick_frames(0, 2) == []


def test_sample_holds_every_flagged_scene_and_the_n_others_of_smallest_seeded_hash():
    ids = [f"s{i:02d}" for i in range(20)]

    def rank(s):  # sha256 of "seed:id", first 8 bytes, as derive_seed documents
        return int.from_bytes(hashlib.sha256(f"7:{s}".encode()).digest()[:8], "big") % 2**32

    others = sorted((s for s in ids if s not in ("s03", "s11")), key=lambda s: (rank(s), s))
    assert sample_scenes(ids, ["s11", "s03"], 4, seed=7) == ["s03", "s11", *sorted(others[:4])]


def test_depth_colours_are_log_scaled_with_near_at_the_red_end():
    lut = depth_lut()
    # x = log(100 / d) / log(100): 1 (near) at 1 m, 0.75 at 100**0.25 m, 0 (far) at 100 m
    depth = np.array([[1.0, 100**0.25, 100.0, 0.5, 500.0]], np.float32)
    colours = depth_colours(depth, 1.0, 100.0, lut)
    expected = [lut[255], lut[round(0.75 * 255)], lut[0], lut[255], lut[0]]
    assert colours.tolist() == [[c.tolist() for c in expected]]


def test_demo_ends_with_the_path_of_its_report(focus_demo):
    assert focus_demo_summary(focus_demo).splitlines()[-1].endswith(str(focus_demo.html_report))
    assert focus_demo.html_report == focus_demo.out_root / "report" / "index.html"


def test_demo_report_screenshot_in_chromium_is_not_blank(focus_demo, browser, tmp_path):
    png = browser.screenshot(focus_demo.html_report, tmp_path / "shot.png")
    with Image.open(png) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.shape == (1000, 1400)
    assert pixels.std() > 10  # text, tables and the verdict banner, not an empty page


def test_demo_report_has_no_broken_image_in_chromium(focus_demo, browser):
    seen = browser.inspect(focus_demo.html_report)
    assert len(seen["images"]) == len(_image_sources(focus_demo.html_report)) > 2 * 2 * (2 + 2 * 4)
    assert [i["src"] for i in seen["images"] if i["naturalWidth"] == 0] == []
    assert "PASS: all 2 scenes done and valid" in seen["text"]


def test_failed_scene_reason_is_in_the_page_text_in_chromium(failed_report, failed_set, browser):
    record = json.loads((failed_set / "logs" / "failures.jsonl").read_text().splitlines()[0])
    assert record["scene"] == FAILED_SCENE and BROKEN_FILE in record["error"]
    text = browser.inspect(failed_report.path)["text"]
    assert record["error"] in text
    assert "FAIL: 1 of 4 scenes failed or are blocked" in text
    assert f"trainset focus validate --out-root {failed_set} --requeue" in text


def test_failed_set_report_has_no_broken_image_in_chromium(failed_report, browser):
    seen = browser.inspect(failed_report.path)
    assert seen["images"] and [i for i in seen["images"] if i["naturalWidth"] == 0] == []


def test_the_browser_check_does_find_a_broken_image(failed_report, browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        failed_report.path.read_text().replace(_image_sources(failed_report.path)[0], "gone.png")
    )
    shutil.copytree(
        failed_report.path.parent / _image_sources(failed_report.path)[1].split("/")[0],
        tmp_path / _image_sources(failed_report.path)[1].split("/")[0],
    )
    broken = [i["src"] for i in browser.inspect(page)["images"] if i["naturalWidth"] == 0]
    assert broken == ["gone.png"]


def test_stage_table_counts_failed_and_blocked_stages(failed_report):
    text = re.sub(r"<[^>]+>", " ", failed_report.path.read_text())
    rows = {
        m[0]: m[1:]
        for m in re.findall(r"(deblur|depth|labels|renders)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", text)
    }
    assert rows == {
        "deblur": ("4", "0", "0", "0"),
        "depth": ("3", "1", "0", "0"),
        "labels": ("3", "0", "1", "0"),
        "renders": ("3", "0", "1", "0"),
    }


def test_failed_scenes_are_shown_even_when_no_sample_is_asked_for(failed_set, tmp_path):
    report = build_focus_report(
        failed_set, FocusReportOptions(scenes=0), output=tmp_path / "r.html", stream=io.StringIO()
    )
    assert report.scenes_shown == (FAILED_SCENE,)
    assert report.flagged == (FAILED_SCENE,)


def test_every_thumbnail_fits_the_box(failed_report):
    folder = failed_report.path.parent / _image_sources(failed_report.path)[0].split("/")[0]
    for path in folder.glob("s*_t*.jpg"):
        with Image.open(path) as img:
            assert img.size[0] <= THUMB_BOX[0] and img.size[1] <= THUMB_BOX[1]


def test_report_command_prints_the_page_and_exits_0(failed_set, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["focus", "report", "--out-root", str(failed_set), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"open: {out}" in printed and "(1 failed, blocked or invalid)" in printed
    assert out.is_file()


def test_report_without_a_scene_index_exits_2(tmp_path, capsys):
    assert main(["focus", "report", "--out-root", str(tmp_path)]) == 2
    assert "scene index not found" in capsys.readouterr().err


def test_a_killed_report_leaves_the_old_page_with_all_its_images(failed_set, tmp_path):
    page = tmp_path / "index.html"
    build_focus_report(failed_set, output=page, stream=io.StringIO())
    before = page.read_bytes()
    killed = run_cli(
        "focus", "report", "--out-root", str(failed_set), "--output", str(page),
        env={"TRAINSET_FAULT_KILL_AT": "1"},
    )  # fmt: skip
    assert killed.returncode == -9  # killed after its images were in place, before the page
    assert page.read_bytes() == before
    assert all((tmp_path / src).is_file() for src in _image_sources(page))
    build_focus_report(failed_set, output=page, stream=io.StringIO())
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1
