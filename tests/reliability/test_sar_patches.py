"""`trainset sar patches` under failure, kills, a full disk, a concurrent run and hostile headers
(issue 18, items 1, 6 and 10): the set in --out is at every moment a complete, verifiable set."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rasterio")

import trainset.sar.tiling as tiling
import trainset.store.atomic as atomic
from trainset.errors import InputError
from trainset.sar.datasets import LazyPatchDataset
from trainset.sar.manifest import load_manifest
from trainset.sar.tiling import QualityFilter, TilingConfig, build_patches
from trainset.sar.verify import verify_patch_files
from trainset.store import sha256_file
from trainset.testing.sar_rasters import speckle_amplitude_dn, write_geotiff

# 32-pixel patches every 16 pixels, all kept, 20 patches per shard: a 64 x 64 raster gives 9
# patches in one shard, a 96 x 96 raster 25 patches in two.
CONFIG = TilingConfig(
    patch_size=32,
    stride=16,
    units="amplitude",
    quality=QualityFilter(0.0, 1.0, 0.0),
    shard_size=20,
)
CLI_FLAGS: tuple[str, ...] = ("--patch-size", "32", "--stride", "16", "--units", "amplitude")
CLI_FLAGS += ("--quality", "0,1,0", "--shard-size", "20")
WAIT_S = 60  # safety net for the hand-offs between threads; never reached when the code is right


def make_raster(path: Path, side: int, seed: int) -> Path:
    return write_geotiff(path, speckle_amplitude_dn((side, side), seed=seed))


def build(src: Path, out: Path, **kw) -> Path:
    return build_patches([src], out, CONFIG, show_progress=False, **kw)


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def hidden(folder: Path) -> list[str]:
    """Staging, old and lock entries beside a set (all hidden): none may outlive a run."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def loaded_patches(out: Path) -> np.ndarray:
    """Every patch of the set in shard order, as the lazy dataset serves it."""
    ds = LazyPatchDataset(out, augment=False, shuffle_seed=None)
    return np.stack([ds[i].numpy() for i in range(len(ds))])


def source_names(out: Path) -> list[str]:
    return [Path(s["path"]).name for s in load_manifest(out).sources]


@pytest.fixture
def old_and_new(tmp_path):
    """An existing set built from old.tif in tmp/set, and a different raster new.tif."""
    old = make_raster(tmp_path / "old.tif", 64, seed=1)
    new = make_raster(tmp_path / "new.tif", 96, seed=2)
    out = tmp_path / "set"
    build(old, out)
    return old, new, out


def fail_at_rename(monkeypatch, k: int, error: OSError) -> None:
    """Make the k-th atomic rename (0-based) raise ``error``."""
    real, seen = atomic._replace, []

    def replace(src, dst):
        seen.append(dst)
        if len(seen) == k + 1:
            raise error
        return real(src, dst)

    monkeypatch.setattr(atomic, "_replace", replace)


def count_renames(monkeypatch, run) -> int:
    """The number of atomic renames ``run()`` makes."""
    real, seen = atomic._replace, []

    def replace(src, dst):
        seen.append(dst)
        return real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(atomic, "_replace", replace)
        run()
    return len(seen)


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# 18.1: a failed re-run never touches the old set.


def test_a_write_failing_at_any_point_of_a_rerun_leaves_the_old_set(
    old_and_new, tmp_path, monkeypatch
):
    _, new, out = old_and_new
    before = snapshot(out)
    renames = count_renames(monkeypatch, lambda: build(new, tmp_path / "probe"))
    assert renames >= 3  # two shards and the manifest of new.tif's set, at least
    shutil.rmtree(tmp_path / "probe")
    for k in range(renames):
        with monkeypatch.context() as m:
            fail_at_rename(m, k, enospc())
            with pytest.raises(OSError):
                build(new, out)
        assert snapshot(out) == before, f"rename {k} failed"
        assert verify_patch_files(out, deep=True) == []
        assert hidden(tmp_path) == []


def test_a_disk_full_error_names_the_file_and_says_the_set_is_unchanged(old_and_new, monkeypatch):
    _, new, out = old_and_new
    fail_at_rename(monkeypatch, 0, enospc())
    with pytest.raises(OSError) as info:
        build(new, out)
    assert info.value.errno == errno.ENOSPC
    assert Path(info.value.filename).name == "shard_00000.npy"
    assert f"the set in {out} is unchanged" in str(info.value)


PAGE = 4096  # tmpfs allocates whole pages


def pages(folder: Path, names: list[str]) -> int:
    return sum(-(-(folder / n).stat().st_size // PAGE) for n in names)


def test_a_rerun_into_a_disk_with_room_for_the_shards_but_not_the_manifest_keeps_the_old_set(
    tmp_path, small_disk, fill_disk, cli
):
    # 8-pixel patches every 2 pixels: the manifest and per-patch table of the new set (24649
    # patches) take dozens of pages; the disk keeps room for its shards and half of them.
    flags = ("--patch-size", "8", "--stride", "2", "--units", "amplitude", "--quality", "0,1,0")
    config = TilingConfig(8, 2, "amplitude", quality=QualityFilter(0.0, 1.0, 0.0))
    old = make_raster(tmp_path / "old.tif", 64, seed=1)
    new = make_raster(tmp_path / "new.tif", 320, seed=2)
    probe = tmp_path / "probe"
    build_patches([new], probe, config, show_progress=False)
    shard_pages = pages(probe, [s.path for s in load_manifest(probe).shards])
    table = load_manifest(probe).patches_file
    assert table is not None
    manifest_pages = pages(probe, ["manifest.json", table])
    out = small_disk / "set"
    build_patches([old], out, config, show_progress=False)
    patches = loaded_patches(out)
    assert manifest_pages > 20
    # Room for the new shards and half the new manifest and table: the old set is intact.
    fill_disk(small_disk, shard_pages + manifest_pages // 2)

    rerun = cli("sar", "patches", str(new), "--out", str(out), *flags)

    assert rerun.returncode == 2
    assert cli("sar", "verify", str(out), "--deep").returncode == 0
    np.testing.assert_array_equal(loaded_patches(out), patches)
    assert hidden(small_disk) == []
    assert "No space left on device" in rerun.stderr
    assert f"{small_disk}/.set.staging-" in rerun.stderr
    assert f"the set in {out} is unchanged" in rerun.stderr


# The seeded kill test: SIGKILL before every rename of a re-run in turn (fault points are
# counted, not sampled, so every point is covered), then a plain re-run.


def test_a_rerun_killed_at_any_rename_leaves_a_valid_set_and_the_next_run_cleans_up(
    old_and_new, tmp_path, cli
):
    old, new, out = old_and_new
    outcomes: list[int] = []
    for kill_at in range(1, 50):
        build(old, out)
        env = {atomic.FAULT_ENV: str(kill_at)}
        run = cli("sar", "patches", str(new), "--out", str(out), *CLI_FLAGS, env=env)
        outcomes.append(run.returncode)
        assert verify_patch_files(out, deep=True) == [], f"killed before rename {kill_at}"
        assert source_names(out) in (["old.tif"], ["new.tif"])
        if run.returncode == 0:
            break
        assert run.returncode == -signal.SIGKILL, run.stderr
        build(new, out)
        assert verify_patch_files(out, deep=True) == []
        assert source_names(out) == ["new.tif"]
        assert hidden(tmp_path) == []
    # at least two shards, the manifest and the swap were fault points before a run completed
    assert outcomes[-1] == 0
    assert outcomes[:-1] == [-signal.SIGKILL] * (len(outcomes) - 1)
    assert len(outcomes) >= 5


# 18.6: two runs into one --out.


class PauseAtManifest:
    """Hold the run of one thread just before it renames its manifest into place."""

    def __init__(self, monkeypatch) -> None:
        self.thread: threading.Thread | None = None
        self.paused = threading.Event()
        self.resume = threading.Event()
        real = atomic._replace

        def replace(src, dst):
            if threading.current_thread() is self.thread and Path(dst).name == "manifest.json":
                self.paused.set()
                assert self.resume.wait(WAIT_S)
            return real(src, dst)

        monkeypatch.setattr(atomic, "_replace", replace)

    def run(self, target) -> list[BaseException]:
        errors: list[BaseException] = []

        def guarded() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        self.thread = threading.Thread(target=guarded)
        self.thread.start()
        assert self.paused.wait(WAIT_S)
        return errors

    def finish(self) -> None:
        self.resume.set()
        assert self.thread is not None
        self.thread.join(WAIT_S)


def race(old_and_new, monkeypatch) -> tuple[list[BaseException], BaseException | None]:
    """Run A (old.tif) up to its manifest, run B (new.tif) into the same --out, let A finish."""
    old, new, out = old_and_new
    pause = PauseAtManifest(monkeypatch)
    errors_a = pause.run(lambda: build(old, out))
    try:
        build(new, out)
        error_b = None
    except InputError as exc:
        error_b = exc
    finally:
        pause.finish()
    return errors_a, error_b


def test_two_runs_into_one_out_never_publish_a_mixed_set(old_and_new, monkeypatch):
    errors_a, _ = race(old_and_new, monkeypatch)
    out = old_and_new[2]
    assert errors_a == []
    assert verify_patch_files(out, deep=True) == []
    assert source_names(out) == ["old.tif"]


def test_a_second_run_into_a_folder_being_written_is_refused_naming_the_first(
    old_and_new, monkeypatch
):
    _, error_b = race(old_and_new, monkeypatch)
    assert isinstance(error_b, InputError)
    assert "another process is writing this folder" in str(error_b)
    assert f"pid {os.getpid()}" in str(error_b)


# 18.10: nothing is allocated by the size a header claims; every pass shows progress.


def tiny_tiff(path: Path, width: int, height: int, compression: int = 1) -> Path:
    """A classic TIFF of 142 bytes claiming ``width x height`` uint16 pixels in one strip
    (``compression`` 1: none, 8: deflate)."""
    data = b"\x01\x00" * 4
    tags = [(256, 4, width), (257, 4, height), (258, 3, 16), (259, 3, compression), (262, 3, 1)]
    tags += [(273, 4, 8), (277, 3, 1), (278, 4, height), (279, 4, len(data)), (339, 3, 1)]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        fmt = "<HHIHH" if kind == 3 else "<HHII"
        ifd += struct.pack(fmt, tag, kind, 1, value, *((0,) if kind == 3 else ()))
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(data)) + data + ifd + b"\0" * 4)
    return path


def test_a_header_claiming_1e8_by_1e8_pixels_is_refused_before_any_read(tmp_path):
    huge = tiny_tiff(tmp_path / "huge.tif", 10**8, 10**8)
    with pytest.raises(InputError, match=r"raster too large.*raise --max-pixels") as info:
        build(huge, tmp_path / "set")
    assert str(huge) in str(info.value)
    assert "found 10,000,000,000,000,000" in str(info.value)
    assert not (tmp_path / "set").exists()


def test_a_sparse_200000_square_geotiff_is_refused_at_the_default_limit(tmp_path):
    import rasterio

    sparse = tmp_path / "sparse.tif"
    profile = {"driver": "GTiff", "width": 200_000, "height": 200_000, "count": 1}
    profile |= {"dtype": "uint16", "tiled": True, "blockxsize": 512, "blockysize": 512}
    with rasterio.open(sparse, "w", **profile, SPARSE_OK=True, BIGTIFF="YES", nodata=0):
        pass
    with pytest.raises(InputError, match="raise --max-pixels"):
        build(sparse, tmp_path / "set")


def test_a_block_gdal_would_read_whole_into_gigabytes_is_refused(tmp_path):
    # 1e7 x 300 pixels in one deflate strip: GDAL would decode it (6 GB) in one allocation.
    wide = tiny_tiff(tmp_path / "wide.tif", 10**7, 300, compression=8)
    with pytest.raises(InputError, match=r"blocks of 300 x 10000000 pixels.*re-tile the file"):
        build(wide, tmp_path / "set", max_pixels=10**10)


def test_a_wide_uncompressed_strip_is_read_in_bounded_windows(tmp_path):
    # 1e7 x 300 pixels uncompressed: GDAL reads it row by row, the windows are bounded, and the
    # missing data is a read error of the first window, not a 6 GB allocation.
    wide = tiny_tiff(tmp_path / "wide.tif", 10**7, 300)
    with pytest.raises(InputError, match=r"cannot read rows 0\.\.16, columns 0\.\.2097152"):
        build(wide, tmp_path / "set", max_pixels=10**10)


class ReadSpy:
    """A rasterio dataset that records the pixels (all bands) of every window read."""

    def __init__(self, src, pixels: list[int]) -> None:
        self._src, self._pixels = src, pixels

    def __getattr__(self, name):
        return getattr(self._src, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._src.close()

    def read(self, indexes, window):
        self._pixels.append(len(indexes) * int(window.width) * int(window.height))
        return self._src.read(indexes, window=window)


def patches_by_position(out: Path) -> dict[tuple[int, int, int], bytes]:
    m = load_manifest(out)
    data = np.concatenate([np.load(p) for p in m.shard_paths()])
    keys = zip(m.patches["band"], m.patches["row"], m.patches["col"])
    return {key: data[i].tobytes() for i, key in enumerate(keys)}


def test_a_raster_wider_than_a_window_is_read_in_bounded_windows_with_the_same_patches(
    tmp_path, monkeypatch
):
    src = write_geotiff(tmp_path / "wide.tif", speckle_amplitude_dn((2, 64, 400), seed=3))
    build(src, tmp_path / "whole")
    pixels: list[int] = []
    real_open = tiling.open_raster
    monkeypatch.setattr(tiling, "open_raster", lambda p: ReadSpy(real_open(p), pixels))
    monkeypatch.setattr(tiling, "WINDOW_PIXELS", 2 * 96 * 100)  # 2 bands x 96 rows x 100 cols

    build(src, tmp_path / "windows")

    assert max(pixels) <= 2 * 96 * 100
    assert patches_by_position(tmp_path / "windows") == patches_by_position(tmp_path / "whole")
    whole, windows = load_manifest(tmp_path / "whole"), load_manifest(tmp_path / "windows")
    assert (windows.vmin, windows.vmax) == (whole.vmin, whole.vmax)
    counts = ("candidates", "patches", "valid_pixels")
    assert [windows.sources[0][k] for k in counts] == [whole.sources[0][k] for k in counts]


def test_every_pass_shows_progress(tmp_path, capsys):
    src = make_raster(tmp_path / "a.tif", 96, seed=4)
    build_patches([src], tmp_path / "set", CONFIG, show_progress=True)
    err = capsys.readouterr().err
    # 96 rows in 64-row blocks: 2 strips in pass 1; 5 patch rows in pass 2
    assert "sar patches 1/2 clip bounds: 2/2" in err
    assert "sar patches 2/2 tiling: 5/5" in err
    assert err.index("1/2 clip bounds") < err.index("2/2 tiling")
