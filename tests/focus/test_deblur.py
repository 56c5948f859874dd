import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from trainset.errors import InputError
from trainset.focus.deblur import (
    SceneFailed,
    TorchVideoDeblur,
    laplacian_variance,
    make_deblur_backend,
    psnr_db,
    run_temporal_batches,
    temporal_windows,
    with_oom_retry,
)
from trainset.focus.index import build_index
from trainset.focus.layout import scene_ids
from trainset.focus.stages import DEBLUR
from trainset.pipeline.runner import run_stage
from trainset.store.codecs import read_png

PASSTHROUGH = {
    "backend": "passthrough",
    "options": {},
    "backend_params": {},
    "sharpness_ratio": 0.25,
}


def _indexed(raw, tmp_path):
    out = tmp_path / "out"
    build_index(raw, out, min_frames=4)
    return out


def test_passthrough_writes_raw_frames_as_rgb_png(small_raw, tmp_path):
    out = _indexed(small_raw, tmp_path)
    summary = run_stage(DEBLUR, out, scene_ids(out), PASSTHROUGH)
    assert summary.exit_code == 0
    names = sorted(p.name for p in (out / "scene_001" / "frames_sharp").iterdir())
    assert names == [".done"] + [f"frame_{t:04d}.png" for t in range(6)]
    for t in (0, 5):
        written = Image.open(out / "scene_001" / "frames_sharp" / f"frame_{t:04d}.png")
        assert written.format == "PNG" and written.mode == "RGB"
        raw = np.asarray(Image.open(small_raw / "scene_001" / f"frame_{t:04d}.png").convert("RGB"))
        assert np.array_equal(np.asarray(written), raw)


def test_passthrough_reencodes_jpeg_frames_to_png_with_the_decoded_pixels(tmp_path):
    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    for t in range(2):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(buf, "JPEG")
        (raw / "s").mkdir(parents=True, exist_ok=True)
        (raw / "s" / f"frame_{t:04d}.jpg").write_bytes(buf.getvalue())
    out = tmp_path / "out"
    build_index(raw, out, min_frames=2)
    run_stage(DEBLUR, out, ["s"], PASSTHROUGH)
    png = out / "s" / "frames_sharp" / "frame_0001.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    expected = np.asarray(Image.open(raw / "s" / "frame_0001.jpg").convert("RGB"))
    assert np.array_equal(read_png(png), expected)
    rows = list(csv.reader((out / "logs" / "deblur_psnr.csv").open()))
    assert rows == [["scene_id", "frames", "psnr_db"], ["s", "2", "inf"]]


def test_laplacian_variance_matches_scipy_laplace_on_the_luma():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    expected = ndimage.laplace(luma)[1:-1, 1:-1].var()
    assert laplacian_variance(rgb) == pytest.approx(expected, rel=1e-12)


def test_laplacian_variance_of_a_flat_frame_is_zero():
    assert laplacian_variance(np.full((8, 8, 3), 77, np.uint8)) == 0.0


def test_blurred_frame_is_logged_and_flagged(small_raw, tmp_path):
    frame = small_raw / "scene_000" / "frame_0005.png"
    blurred = ndimage.uniform_filter(np.asarray(Image.open(frame)), size=(7, 7, 1))
    Image.fromarray(blurred).save(frame)
    out = _indexed(small_raw, tmp_path)
    run_stage(DEBLUR, out, scene_ids(out), PASSTHROUGH)
    rows = list(csv.reader((out / "logs" / "sharpness.csv").open()))
    assert rows[0] == ["scene_id", "frame", "sharpness"]
    assert len(rows) == 1 + 3 * 6
    expected = laplacian_variance(blurred)
    row = next(r for r in rows if r[:2] == ["scene_000", "frame_0005.png"])
    assert float(row[2]) == pytest.approx(expected, rel=1e-5)
    warnings = (out / "logs" / "sharpness_warnings.txt").read_text().splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith("scene_000 frame_0005.png: sharpness ")


def test_psnr_of_known_error_is_the_closed_form():
    a = [np.zeros((4, 4, 3), np.uint8)]
    b = [np.full((4, 4, 3), 5, np.uint8)]
    assert psnr_db(a, b) == pytest.approx(10 * np.log10(255**2 / 25))


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (5, [(0, 5)]),
        (16, [(0, 16)]),
        (24, [(0, 16), (8, 24)]),
        (30, [(0, 16), (8, 24), (14, 30)]),
        (0, []),
    ],
)
def test_temporal_windows_cover_every_frame_with_overlap(n, expected):
    assert temporal_windows(n, 16, 8) == expected


def test_temporal_windows_reject_zero_stride():
    with pytest.raises(InputError, match="batch size and stride must be positive"):
        temporal_windows(10, 4, 0)


class _CountingModel(torch.nn.Module):
    """Returns the number of the call (1, 2, ...) everywhere: shows how overlaps average."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.sizes = []

    def forward(self, x):
        self.calls += 1
        self.sizes.append(x.shape[0])
        return torch.full_like(x, float(self.calls))


def test_overlapping_predictions_are_averaged():
    model = _CountingModel()
    frames = torch.zeros((30, 1, 2, 2))
    out = run_temporal_batches(frames, model, batch_size=16, stride=8)
    per_frame = out[:, 0, 0, 0].tolist()
    # Windows [0,16) -> 1, [8,24) -> 2, [14,30) -> 3.
    expected = [1.0] * 8 + [1.5] * 6 + [2.0] * 2 + [2.5] * 8 + [3.0] * 6
    assert per_frame == expected


def test_identity_model_returns_the_frames():
    frames = torch.rand((20, 3, 4, 5))
    out = run_temporal_batches(frames, torch.nn.Identity(), batch_size=16, stride=8)
    assert torch.allclose(out, frames)


class _OomAbove(torch.nn.Module):
    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.sizes = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return x


def test_out_of_memory_halves_the_batch_and_retries_once():
    model = _OomAbove(limit=8)
    backend = TorchVideoDeblur("t", model, batch_size=16, stride=8)
    frames = [np.full((4, 4, 3), t, np.uint8) for t in range(20)]
    out = list(backend.sharpen(frames))
    assert [int(f[0, 0, 0]) for f in out] == list(range(20))
    assert model.sizes[0] == 16 and set(model.sizes[1:]) == {8}


def test_second_out_of_memory_fails_the_scene():
    backend = TorchVideoDeblur("t", _OomAbove(limit=4), batch_size=16, stride=8)
    frames = [np.zeros((4, 4, 3), np.uint8)] * 20
    with pytest.raises(
        SceneFailed, match=r"CUDA out of memory with batch 16 .* again with batch 8"
    ):
        list(backend.sharpen(frames))


def test_errors_other_than_out_of_memory_are_not_retried():
    calls = []

    def run(batch):
        calls.append(batch)
        raise ValueError("broken model")

    with pytest.raises(ValueError, match="broken model"):
        with_oom_retry(run, 16)
    assert calls == [16]


def test_unsharp_backend_keeps_a_flat_frame_flat():
    backend = make_deblur_backend("unsharp", amount="1.0", sigma="1.0")
    frames = [np.full((12, 12, 3), 90, np.uint8)] * 3
    assert all(np.array_equal(f, frames[0]) for f in backend.sharpen(frames))
    assert backend.params() == {"batch_size": 16, "stride": 8, "amount": 1.0, "sigma": 1.0}


def test_unsharp_backend_increases_edge_contrast():
    frame = np.zeros((12, 12, 3), np.uint8)
    frame[:, 6:] = 200
    (out,) = make_deblur_backend("unsharp", amount=1.0).sharpen([frame])
    assert int(out[6, 6, 0]) > 200 and int(out[6, 5, 0]) == 0


def test_unknown_deblur_backend_is_an_input_error():
    with pytest.raises(InputError, match="unknown deblur backend"):
        make_deblur_backend("genfocus-missing")


def test_unknown_backend_option_is_an_input_error():
    with pytest.raises(InputError, match="rejected its options"):
        make_deblur_backend("passthrough", strength="2")


def test_model_backend_runs_as_a_stage_and_logs_a_finite_psnr(small_raw, tmp_path):
    out = _indexed(small_raw, tmp_path)
    params = {
        "backend": "unsharp",
        "options": {"amount": "0.5"},
        "backend_params": {},
        "sharpness_ratio": 0.25,
    }
    assert run_stage(DEBLUR, out, ["scene_000"], params).exit_code == 0
    raw = read_png(small_raw / "scene_000" / "frame_0002.png")
    sharp = read_png(out / "scene_000" / "frames_sharp" / "frame_0002.png")
    assert sharp.shape == raw.shape and not np.array_equal(sharp, raw)
    rows = list(csv.reader((out / "logs" / "deblur_psnr.csv").open()))
    assert rows[1][:2] == ["scene_000", "6"]
    assert 20.0 < float(rows[1][2]) < 60.0
