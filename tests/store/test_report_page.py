"""A static HTML page and its image folder, published together."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from trainset.errors import InputError
from trainset.store.report_page import THUMB_BOX, ReportPage, tag, thumbnail_jpeg


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 6), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _write(path, value: int) -> ReportPage:
    with ReportPage(path, "t") as page:
        page.add(page.image("a.png", _png(value), alt="a"))
        page.publish()
    return page


def _sources(path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', path.read_text())


def test_published_page_links_only_to_its_own_complete_folder(tmp_path):
    page = _write(tmp_path / "index.html", 10)
    assert _sources(page.path) == [f"{page.folder.name}/a.png"]
    assert (tmp_path / _sources(page.path)[0]).read_bytes() == _png(10)
    assert page.folder.name.startswith("index_files-")


def test_a_new_report_removes_the_image_folder_of_the_old_one(tmp_path):
    old = _write(tmp_path / "index.html", 10)
    new = _write(tmp_path / "index.html", 20)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [new.folder.name]
    assert not old.folder.exists()


def test_an_error_while_building_leaves_the_previous_report_as_it_was(tmp_path):
    old = _write(tmp_path / "index.html", 10)
    before = old.path.read_bytes()
    with pytest.raises(RuntimeError), ReportPage(tmp_path / "index.html", "t") as page:
        page.image("a.png", _png(20), alt="a")
        raise RuntimeError("killed half-way")
    assert old.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".index.lock",
        "index.html",
        old.folder.name,
    ]


def test_a_staging_folder_left_by_a_killed_writer_is_removed(tmp_path):
    stale = tmp_path / ".index_files.tmp-dead1234"
    stale.mkdir()
    (stale / "a.png").write_bytes(_png(1))
    _write(tmp_path / "index.html", 10)
    assert not stale.exists()


def test_image_names_must_be_plain_file_names(tmp_path):
    with ReportPage(tmp_path / "index.html", "t") as page:
        for bad in ("../a.png", "sub/a.png", ".a.png", ""):
            with pytest.raises(InputError, match="plain file name"):
                page.image(bad, _png(1), alt="a")


def test_text_is_escaped_and_html_fragments_are_kept(tmp_path):
    cell = tag("td", "<script>alert(1)</script> & co")
    assert cell == "<td>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</td>"
    assert tag("tr", cell) == f"<tr>{cell}</tr>"


def test_thumbnails_fit_the_box_and_keep_the_aspect_ratio():
    data = thumbnail_jpeg(np.zeros((1080, 1920, 3), np.uint8))
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG"
        assert img.size == (THUMB_BOX[0], round(THUMB_BOX[0] * 1080 / 1920))
