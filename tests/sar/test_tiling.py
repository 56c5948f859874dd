import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainset.errors import InputError
from trainset.sar.geotiff import iter_strips, open_raster, strip_rows
from trainset.sar.manifest import load_manifest
from trainset.sar.preprocessing import preprocess_sar_complete
from trainset.sar.tiling import (
    ClipAccumulator,
    ClipSpec,
    QualityFilter,
    StripNormalizer,
    TilingConfig,
    build_patches,
)
from trainset.store import NPY_ALIGN, sha256_file
from trainset.testing.sar_rasters import speckle_amplitude_dn, speckle_intensity, write_geotiff

KEEP_ALL = QualityFilter(0.0, 1.0, 0.0)


def small(**kw: Any) -> TilingConfig:
    base: dict[str, Any] = {"patch_size": 32, "stride": 16, "quality": KEEP_ALL}
    base.update(kw)
    if isinstance(base.get("clip"), str):
        base["clip"] = ClipSpec.parse(base["clip"])
    return TilingConfig(**base)


def build(sources, out, **kw):
    return build_patches(sources, out, small(**kw), show_progress=False)


def expected_patch(db, valid, vmin, vmax, row, col, size=32):
    """The plan's formula computed independently: clip((dB - vmin) / (vmax - vmin), 0, 1)."""
    win = db[row : row + size, col : col + size]
    out = np.clip((win - vmin) / (vmax - vmin), 0, 1)
    return np.where(valid[row : row + size, col : col + size], out, 0.0)


def test_clip_spec_parses_each_method_with_defaults():
    assert ClipSpec.parse("percentile").to_dict() == {
        "method": "percentile",
        "low_pct": 1.0,
        "high_pct": 99.0,
    }
    assert ClipSpec.parse("fixed:-25,5").params == (-25.0, 5.0)
    assert ClipSpec.parse("sigma:2.5").to_dict() == {"method": "sigma", "k": 2.5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("median:1", "unknown clip method"),
        ("percentile:99,1", "percentiles out of order"),
        ("fixed:5,-25", "degenerate"),
        ("sigma:1,2", "takes 1 number"),
        ("sigma:x", "must be numbers"),
    ],
)
def test_clip_spec_rejects_bad_text(text, message):
    with pytest.raises(InputError, match=message):
        ClipSpec.parse(text)


def test_streaming_percentiles_match_numpy_within_a_bin():
    rng = np.random.default_rng(3)
    chunks = [rng.normal(-12, 5, 4000) for _ in range(5)]
    acc = ClipAccumulator(ClipSpec("percentile", (1.0, 99.0)))
    for c in chunks:
        acc.add(c)
    expected = np.percentile(np.concatenate(chunks), [1, 99])
    np.testing.assert_allclose(acc.bounds(), expected, atol=1e-3)


def test_streaming_sigma_matches_mean_and_std():
    rng = np.random.default_rng(4)
    chunks = [rng.normal(-20, 3, 3000) for _ in range(4)]
    acc = ClipAccumulator(ClipSpec("sigma", (2.0,)))
    for c in chunks:
        acc.add(c)
    x = np.concatenate(chunks)
    np.testing.assert_allclose(acc.bounds(), (x.mean() - 2 * x.std(), x.mean() + 2 * x.std()))


def test_strips_start_on_block_rows_and_cover_the_raster(tmp_path):
    path = write_geotiff(tmp_path / "s.tif", speckle_intensity((150, 64), 0), block=32)
    with open_raster(path) as src:
        strips = [(r, d.shape) for r, d, _ in iter_strips(src, [1], min_rows=40)]
    assert strip_rows(32, 40) == 64
    assert strips == [(0, (1, 64, 64)), (64, (1, 64, 64)), (128, (1, 22, 64))]


def test_amplitude_patches_follow_the_plan_formula(amplitude_tif, tmp_path):
    manifest = load_manifest(build([amplitude_tif], tmp_path / "out", units="amplitude"))
    dn = speckle_amplitude_dn((160, 200), seed=1)
    dn[dn == 7] = 8
    dn[:20, :] = 7
    valid = dn != 7
    db = 10 * np.log10(dn.astype(np.float64) ** 2)
    assert manifest.vmin is not None and manifest.vmax is not None
    np.testing.assert_allclose(
        (manifest.vmin, manifest.vmax), np.percentile(db[valid], [1, 99]), atol=1e-3
    )
    shard = np.load(manifest.shard_paths()[0], allow_pickle=False)
    for i in (0, 7, len(shard) - 1):
        r, c = int(manifest.patches["row"][i]), int(manifest.patches["col"][i])
        exp = expected_patch(db, valid, manifest.vmin, manifest.vmax, r, c)
        np.testing.assert_allclose(shard[i], exp, atol=2e-6)


def test_grid_positions_are_every_stride_in_row_major_order(amplitude_tif, tmp_path):
    manifest = load_manifest(build([amplitude_tif], tmp_path / "out", units="amplitude"))
    rows = list(range(0, 160 - 32 + 1, 16))
    cols = list(range(0, 200 - 32 + 1, 16))
    assert manifest.patches["row"].tolist() == [r for r in rows for _ in cols]
    assert manifest.patches["col"].tolist() == cols * len(rows)
    assert manifest.num_patches == 9 * 11


def test_nodata_never_becomes_a_valid_pixel(amplitude_tif, tmp_path):
    manifest = load_manifest(build([amplitude_tif], tmp_path / "out", units="amplitude"))
    shard = np.load(manifest.shard_paths()[0], allow_pickle=False)
    first = (
        manifest.patches["row"].tolist().index(16)
    )  # patch rows 16..47 overlap nodata rows 16..19
    assert manifest.patches["valid_fraction"].tolist()[first] == pytest.approx(28 / 32)
    np.testing.assert_array_equal(shard[first][:4], 0.0)
    assert manifest.patches["valid_fraction"].tolist()[0] == pytest.approx(12 / 32)


def test_float32_intensity_with_nan_nodata(intensity_tif, tmp_path):
    manifest = load_manifest(build([intensity_tif], tmp_path / "out", clip="fixed:-25,5"))
    inten = speckle_intensity((128, 144), seed=2)
    inten[:10, :10] = np.nan
    valid = np.isfinite(inten)
    db = 10 * np.log10(np.where(valid, inten, 1.0).astype(np.float64))
    shard = np.load(manifest.shard_paths()[0], allow_pickle=False)
    np.testing.assert_allclose(shard[0], expected_patch(db, valid, -25.0, 5.0, 0, 0), atol=2e-6)
    assert manifest.patches["valid_fraction"].tolist()[0] == pytest.approx(1 - 100 / 1024)
    assert (manifest.vmin, manifest.vmax) == (-25.0, 5.0)
    assert manifest.sources[0]["nodata"] == "nan"


def test_quality_filter_keeps_patches_with_enough_good_pixels(amplitude_tif, tmp_path):
    q = QualityFilter(0.01, 0.99, 0.9)
    manifest = load_manifest(
        build_patches(
            [amplitude_tif],
            tmp_path / "o",
            small(units="amplitude", quality=q),
            show_progress=False,
        )
    )
    all_ = load_manifest(build([amplitude_tif], tmp_path / "all", units="amplitude"))
    shard = np.load(all_.shard_paths()[0], allow_pickle=False)
    good = ((shard > 0.01) & (shard < 0.99)).mean(axis=(1, 2)) >= 0.9
    kept = [
        (r, c)
        for r, c, g in zip(all_.patches["row"].tolist(), all_.patches["col"].tolist(), good)
        if g
    ]
    assert list(zip(manifest.patches["row"].tolist(), manifest.patches["col"].tolist())) == kept
    assert 0 < len(kept) < all_.num_patches


def test_shards_hold_at_most_shard_size_patches(amplitude_tif, tmp_path):
    manifest = load_manifest(
        build([amplitude_tif], tmp_path / "out", units="amplitude", shard_size=40)
    )
    assert manifest.counts() == [40, 40, 19]
    assert [s.path for s in manifest.shards] == [
        "shard_00000.npy",
        "shard_00001.npy",
        "shard_00002.npy",
    ]
    for entry, path in zip(manifest.shards, manifest.shard_paths()):
        assert entry.sha256 == sha256_file(path)


def test_shard_headers_are_page_aligned(amplitude_tif, tmp_path):
    manifest = load_manifest(build([amplitude_tif], tmp_path / "out", units="amplitude"))
    path = manifest.shard_paths()[0]
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    assert data.offset == NPY_ALIGN
    assert os.path.getsize(path) == NPY_ALIGN + 99 * 32 * 32 * 4


def test_float16_shards_hold_the_float32_patches_rounded(amplitude_tif, tmp_path):
    half = load_manifest(
        build([amplitude_tif], tmp_path / "half", units="amplitude", dtype="float16")
    )
    full = load_manifest(build([amplitude_tif], tmp_path / "full", units="amplitude"))
    data = np.load(half.shard_paths()[0], allow_pickle=False)
    want = np.load(full.shard_paths()[0], allow_pickle=False).astype(np.float16)
    assert data.dtype == np.float16 and half.dtype == "float16"
    assert data.tobytes() == want.tobytes()


def test_bands_as_separate_patches(tmp_path):
    two = np.stack([speckle_intensity((64, 64), 5), speckle_intensity((64, 64), 6)])
    path = write_geotiff(tmp_path / "vv_vh.tif", two)
    manifest = load_manifest(build([path], tmp_path / "out"))
    assert manifest.channels == 1 and manifest.num_patches == 18
    assert manifest.patches["band"].tolist()[:4] == [1, 2, 1, 2]


def test_bands_stacked_as_channels(tmp_path):
    two = np.stack([speckle_intensity((64, 64), 5), speckle_intensity((64, 64), 6)])
    path = write_geotiff(tmp_path / "vv_vh.tif", two)
    manifest = load_manifest(build([path], tmp_path / "out", band_mode="stack", clip="fixed:-25,5"))
    data = np.load(manifest.shard_paths()[0], allow_pickle=False)
    assert manifest.channels == 2 and data.shape == (18, 32, 32) and manifest.counts() == [18]
    db = 10 * np.log10(two.astype(np.float64))
    ones = np.ones((64, 64), bool)
    np.testing.assert_allclose(data[1], expected_patch(db[1], ones, -25.0, 5.0, 0, 0), atol=2e-6)
    assert manifest.bands == [1, 2]


def test_manifest_records_sources_with_relative_paths_and_crs(amplitude_tif, tmp_path):
    out = tmp_path / "out"
    path = build([amplitude_tif], out, units="amplitude")
    data = json.loads(Path(path).read_text())
    src = data["sources"][0]
    assert src["path"] == "../amp.tif" and src["crs"] == "EPSG:32633" and src["nodata"] == 7.0
    assert src["transform"] == [10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0]
    assert src["sha256"] == sha256_file(amplitude_tif)
    assert data["shards"][0]["path"] == "shard_00000.npy"
    assert data["provenance"]["trainset_version"]


def leftovers(out):
    """Names in ``out``; the per-patch table (named by its sha256) as ``patches-*.npy``."""
    if not Path(out).exists():
        return []
    names = (p.name for p in Path(out).iterdir())
    return sorted("patches-*.npy" if n.startswith("patches-") else n for n in names)


def test_not_a_raster_is_an_input_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "notes.tif"
    bad.write_text("hello")
    with pytest.raises(InputError, match="not a readable raster"):
        build([bad], tmp_path / "out")
    assert leftovers(tmp_path / "out") == []


def test_all_nodata_raster_is_an_input_error_and_writes_nothing(amplitude_tif, tmp_path):
    empty = write_geotiff(tmp_path / "empty.tif", np.full((64, 64), 7, np.uint16), nodata=7)
    for clip in ("percentile", "fixed:-25,5"):
        with pytest.raises(InputError, match="no valid pixel"):
            build([amplitude_tif, empty], tmp_path / "out", units="amplitude", clip=clip)
        assert leftovers(tmp_path / "out") == []


def test_raster_smaller_than_a_patch_is_an_input_error(tmp_path):
    tiny = write_geotiff(tmp_path / "tiny.tif", speckle_intensity((20, 40), 0), tiled=False)
    with pytest.raises(
        InputError, match=r"smaller than one patch \(expected >= 32 x 32 pixels, found 20 x 40\)"
    ):
        build([tiny], tmp_path / "out")


def test_band_outside_the_raster_is_an_input_error(amplitude_tif, tmp_path):
    with pytest.raises(InputError, match="band not in raster"):
        build([amplitude_tif], tmp_path / "out", bands=(2,))


def test_no_patch_passing_the_filter_is_an_input_error(amplitude_tif, tmp_path):
    with pytest.raises(InputError, match="no patch passed the quality filter"):
        build(
            [amplitude_tif],
            tmp_path / "out",
            units="amplitude",
            quality=QualityFilter(0.5, 0.51, 1.0),
        )
    assert leftovers(tmp_path / "out") == []


def test_failed_rebuild_leaves_the_existing_set_untouched(amplitude_tif, tmp_path):
    out = tmp_path / "out"
    build([amplitude_tif], out, units="amplitude")
    before = {p.name: sha256_file(p) for p in out.iterdir()}
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError):
        build([amplitude_tif, bad], out, units="amplitude")
    assert {p.name: sha256_file(p) for p in out.iterdir()} == before


def test_rebuild_replaces_old_shards(amplitude_tif, tmp_path):
    out = tmp_path / "out"
    build([amplitude_tif], out, units="amplitude", shard_size=10)
    build([amplitude_tif], out, units="amplitude")
    assert leftovers(out) == ["manifest.json", "patches-*.npy", "shard_00000.npy"]


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8])
def test_lookup_table_normalizer_matches_preprocess_sar_complete(dtype):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    data = rng.integers(info.min, info.max, (2, 16, 24), endpoint=True).astype(dtype)
    mask = rng.random((2, 16, 24)) > 0.2
    norm, valid = StripNormalizer(np.dtype(dtype), "amplitude", (10.0, 60.0))(data, mask)
    exp_norm, exp_valid = preprocess_sar_complete(data, 10.0, 60.0, "amplitude", mask=mask)
    np.testing.assert_array_equal(norm, exp_norm)
    np.testing.assert_array_equal(valid, exp_valid)


@pytest.mark.parametrize("spec", [ClipSpec("percentile", (2.0, 97.0)), ClipSpec("sigma", (3.0,))])
def test_weighted_accumulation_equals_repeated_values(spec):
    values = np.array([-20.0, -12.5, -3.0, 4.0])
    counts = np.array([5, 1, 7, 2])
    weighted, plain = ClipAccumulator(spec), ClipAccumulator(spec)
    weighted.add_weighted(values, counts)
    plain.add(np.repeat(values, counts))
    assert weighted.count == plain.count == 15
    np.testing.assert_allclose(weighted.bounds(), plain.bounds(), atol=1e-9)


def test_staging_and_old_folders_left_by_killed_runs_are_removed(amplitude_tif, tmp_path):
    out = tmp_path / "out"
    host = socket.gethostname()
    stale = tmp_path / f".out.staging-{host}-{os.getpid()}-abcd"
    stale.mkdir()
    (stale / ".shard_00000.npy.tmp-x").write_bytes(b"partial")
    old = tmp_path / ".out.old-otherhost-1-efgh"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    build([amplitude_tif], out, units="amplitude")
    assert leftovers(tmp_path) == ["amp.tif", "out"]
    assert leftovers(out) == ["manifest.json", "patches-*.npy", "shard_00000.npy"]


def test_out_given_as_its_manifest_json_publishes_into_its_folder(amplitude_tif, tmp_path):
    manifest = build([amplitude_tif], tmp_path / "out" / "manifest.json", units="amplitude")
    assert manifest == tmp_path / "out" / "manifest.json"
    assert leftovers(tmp_path / "out") == ["manifest.json", "patches-*.npy", "shard_00000.npy"]


def test_a_folder_holding_files_but_no_set_is_refused_untouched(amplitude_tif, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds files but no patch set.*found notes.txt"):
        build([amplitude_tif], out, units="amplitude")
    assert leftovers(out) == ["notes.txt"]
    assert leftovers(tmp_path) == ["amp.tif", "out"]


def test_the_current_folder_as_out_is_refused(amplitude_tif, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="current folder or holds it"):
        build([amplitude_tif], ".", units="amplitude")


def test_a_symlinked_out_replaces_its_target_and_keeps_the_link(amplitude_tif, tmp_path):
    real = tmp_path / "disk" / "patches"
    build([amplitude_tif], real, units="amplitude", shard_size=10)
    link = tmp_path / "out"
    link.symlink_to(real)
    build([amplitude_tif], link, units="amplitude")
    assert link.is_symlink()
    assert leftovers(real) == ["manifest.json", "patches-*.npy", "shard_00000.npy"]


def test_staging_folder_an_earlier_version_left_inside_out_is_replaced(amplitude_tif, tmp_path):
    out = tmp_path / "out"
    (out / ".staging-somehost-1-abcd").mkdir(parents=True)
    build([amplitude_tif], out, units="amplitude")
    assert leftovers(out) == ["manifest.json", "patches-*.npy", "shard_00000.npy"]


def test_normalizer_falls_back_for_another_dtype():
    data = np.array([[[0.5, -1.0]]], np.float32)
    norm, valid = StripNormalizer(np.dtype(np.uint16), "intensity", (-25.0, 5.0))(
        data, np.ones(data.shape, bool)
    )
    np.testing.assert_allclose(norm, [[[(10 * np.log10(0.5) + 25) / 30, 0.0]]], atol=1e-6)
    np.testing.assert_array_equal(valid, [[[True, False]]])


def test_reading_a_geotiff_without_rasterio_gives_the_install_hint(amplitude_tif, monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)  # `import rasterio` raises ImportError
    with pytest.raises(InputError, match=r"rasterio is required.*pip install 'trainset\[sar\]'"):
        open_raster(amplitude_tif)


def test_max_pixels_is_the_largest_raster_tiled(amplitude_tif, tmp_path):
    pixels = 160 * 200  # amplitude_tif, one band
    with pytest.raises(InputError, match=r"raise --max-pixels.*found 32,000"):
        build_patches(
            [amplitude_tif], tmp_path / "a", small(units="amplitude"), max_pixels=pixels - 1
        )
    build_patches([amplitude_tif], tmp_path / "b", small(units="amplitude"), max_pixels=pixels)
    assert load_manifest(tmp_path / "b").num_patches > 0


def test_bands_that_do_not_fit_one_read_window_are_refused_before_reading(tmp_path, monkeypatch):
    import trainset.sar.tiling as tiling

    src = write_geotiff(tmp_path / "two.tif", speckle_amplitude_dn((2, 64, 64), seed=3))
    # a window holds one band of 96 rows (patch 32 + a 64-row block) x 32 columns, not two
    monkeypatch.setattr(tiling, "WINDOW_PIXELS", 96 * 32)
    with pytest.raises(InputError, match=r"too many bands.*--bands.*found 2"):
        build([src], tmp_path / "out", units="amplitude")
    assert leftovers(tmp_path) == ["two.tif"]
