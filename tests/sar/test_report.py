"""`trainset sar report`: a static HTML page of a SAR patch set, checked in headless Chromium."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from trainset.cli import main
from trainset.errors import InputError
from trainset.sar.manifest import load_manifest
from trainset.sar.report import SarReportOptions, build_sar_report, read_patches
from trainset.sar.splits import split_patches
from trainset.testing.sar_rasters import speckle_intensity, write_geotiff


def _patches(tifs: list[Path], out: Path, *extra: str) -> Path:
    argv = ["sar", "patches", *map(str, tifs), "--out", str(out), *extra]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def patch_set(tmp_path_factory) -> Path:
    """Two 96 x 96 intensity rasters cut into 3 x 3 patches of 32 px each (all kept)."""
    root = tmp_path_factory.mktemp("sar")
    tifs = [
        write_geotiff(root / f"{name}.tif", speckle_intensity((96, 96), seed=i), block=32)
        for i, name in enumerate(("alpha", "beta"))
    ]
    return _patches(
        tifs, root / "set", "--patch-size", "32", "--stride", "32", "--quality", "0,1,0"
    )


@pytest.fixture(scope="module")
def report(patch_set):
    return build_sar_report(patch_set, stream=io.StringIO())


def _text(page: Path) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page.read_text()).split())


def test_counts_per_source_and_split_match_the_manifest(report, patch_set):
    manifest = load_manifest(patch_set)
    _, val = split_patches(manifest.source_of_patches(), 0.1, 42, "by_source")
    val_source = int(manifest.source_of_patches()[val[0]])
    text = _text(report.path)
    for i, name in enumerate(("alpha.tif", "beta.tif")):
        train, in_val = (0, 9) if i == val_source else (9, 0)
        assert f"{name} 96 x 96 - 9 9 {train} {in_val}" in text


def test_read_patches_gives_the_shard_records(patch_set):
    manifest = load_manifest(patch_set)
    shard = np.load(manifest.shard_paths()[0], allow_pickle=False)
    wanted = np.array([0, 4, 17])
    got = dict(read_patches(manifest, wanted))
    assert sorted(got) == [0, 4, 17]
    for p in wanted:
        np.testing.assert_array_equal(got[int(p)], shard[p : p + 1])


def test_mosaic_shows_the_seeded_number_of_patches_per_source(patch_set, tmp_path):
    options = SarReportOptions(mosaic=3, max_patches=5)
    first = build_sar_report(patch_set, options, output=tmp_path / "a.html", stream=io.StringIO())
    second = build_sar_report(patch_set, options, output=tmp_path / "b.html", stream=io.StringIO())
    names = [re.findall(r'src="[^/"]+/(src[^"]+)"', p.path.read_text()) for p in (first, second)]
    assert names[0] == names[1] and len(names[0]) == 2 * 3
    assert first.images == 1 + 2 * 3


def test_sar_report_has_no_broken_image_in_chromium(report, browser):
    seen = browser.inspect(report.path)
    assert len(seen["images"]) == report.images == 1 + 2 * 8
    assert [i["src"] for i in seen["images"] if i["naturalWidth"] == 0] == []
    assert "18 from 2 source(s)" in seen["text"]


def test_a_missing_shard_is_named(patch_set, tmp_path):
    copy = tmp_path / "set"
    copy.mkdir()
    for table in patch_set.glob("patches-*.npy"):  # the manifest and its per-patch table
        (copy / table.name).write_bytes(table.read_bytes())
    (copy / "manifest.json").write_bytes((patch_set / "manifest.json").read_bytes())
    with pytest.raises(InputError, match=r"shard_00000\.npy"):
        build_sar_report(copy, stream=io.StringIO())


def test_report_of_no_manifest_exits_2(tmp_path, capsys):
    assert main(["sar", "report", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_real_sentinel1_scenes_report_in_chromium(shared_data, tmp_path, browser, capsys):
    folder = shared_data("sar", "sentinel1-vv-db")
    tifs = sorted(folder.glob("*.tif"))
    out = _patches(tifs, tmp_path / "s1", "--units", "db", "--patch-size", "64", "--stride", "32")
    assert main(["sar", "report", str(out)]) == 0
    page = out / "report" / "index.html"
    assert f"open: {page}" in capsys.readouterr().out
    seen = browser.inspect(page)
    assert seen["images"] and [i for i in seen["images"] if i["naturalWidth"] == 0] == []
    for tif in tifs:  # the raster's own nodata fraction, read independently
        with rasterio.open(tif) as src:
            band = src.read(1)
            invalid = float(np.mean((band == src.nodata) | ~np.isfinite(band)))
        assert tif.name in seen["text"] and f"{invalid:.2%}" in seen["text"]
    with Image.open(browser.screenshot(page, tmp_path / "shot.png")) as img:
        assert np.asarray(img.convert("L"), dtype=np.float32).std() > 10
