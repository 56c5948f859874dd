"""The ``vda`` backend end to end on CPU with a random-weight vits checkpoint (input size 56)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainset.errors import InputError
from trainset.focus.conformance import DepthBackendContract
from trainset.focus.deblur import SceneFailed
from trainset.focus.depth_backends import DepthScene
from trainset.focus.vda.backend import VDADepthBackend, make_vda_backend
from trainset.focus.vda.inference import ModelWindowPredictor, preprocess_frame
from trainset.focus.vda.model import VideoDepthAnything

FRAMES, HEIGHT, WIDTH, SIZE = 40, 48, 64, 56


def _random_vits() -> VideoDepthAnything:
    torch.manual_seed(7)
    model = VideoDepthAnything("vits")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("proj_out.weight"):
                param.normal_(0, 0.05)  # let the temporal modules act (zero in a fresh model)
        # depth around 2 m, not clipped to 0
        model.get_parameter("head.scratch.output_conv2.2.bias").fill_(2.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> VideoDepthAnything:
    return _random_vits()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, model: VideoDepthAnything) -> Path:
    path = tmp_path_factory.mktemp("vda") / "metric_video_depth_anything_vits.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def backend(checkpoint: Path) -> VDADepthBackend:
    return VDADepthBackend(checkpoint, input_size=SIZE, device="cpu")


@dataclass(frozen=True)
class Clip(DepthScene):
    """A scene whose frames are made in memory (no frame files)."""

    scene_id: str = "clip"
    frame_paths: tuple[Path, ...] = ()
    raw_dir: Path = Path()

    def iter_frames(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(3)
        base = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        for f in range(FRAMES):
            yield np.roll(base, 2 * f, axis=1)


def test_backend_depth_equals_transcribed_windows_of_the_model(
    backend: VDADepthBackend, model: VideoDepthAnything, windows_rule, outputs_rule
) -> None:
    depth = list(backend.predict(Clip()))
    frames = list(Clip().iter_frames())
    cpu = torch.device("cpu")
    shape = (56, 70)
    outputs = []
    with torch.no_grad():
        for window in windows_rule(FRAMES):
            x = torch.stack([preprocess_frame(frames[f], shape, cpu) for f in window])
            d = model(x.unsqueeze(0))[0]
            outputs.append(
                F.interpolate(d.unsqueeze(1), (HEIGHT, WIDTH), mode="bilinear", align_corners=True)[
                    :, 0
                ]
            )
    assert len(depth) == FRAMES
    for frame, terms in enumerate(outputs_rule(FRAMES)):
        expected = sum(w * outputs[k][s] for (k, s), w in terms.items())
        assert depth[frame].shape == (HEIGHT, WIDTH)
        assert depth[frame].dtype == np.float32
        np.testing.assert_allclose(depth[frame], expected.numpy(), rtol=1e-4, atol=1e-5)
    assert min(d.min() for d in depth) > 0


def test_backend_reports_what_shapes_its_output(backend: VDADepthBackend, checkpoint: Path) -> None:
    params = backend.params()
    info = checkpoint.stat()
    assert backend.name == "vda"
    assert params["input_size"] == SIZE
    assert params["checkpoint"] == {
        "path": str(checkpoint.resolve()),
        "bytes": info.st_size,
        "mtime_ns": info.st_mtime_ns,
    }
    assert (params["window"], params["stride"], params["crossfade"]) == (32, 22, 8)


def test_building_the_backend_and_its_params_never_reads_the_checkpoint(tmp_path: Path) -> None:
    """A FIFO blocks whoever reads it: building the backend and hashing its parameters (what a
    SLURM --dry-run does on the submit host) must not, so this returns at once."""
    fifo = tmp_path / "metric_video_depth_anything_vitl.pth"
    os.mkfifo(fifo)
    backend = make_vda_backend(checkpoint=str(fifo), encoder="vitl", device="cpu")
    assert backend.params()["encoder"] == "vitl"
    assert backend.params()["device"] == "cpu"


def test_backbone_in_chunks_equals_one_pass(model: VideoDepthAnything) -> None:
    x = torch.randn(1, 3, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x, backbone_chunk=2), model(x), rtol=1e-5, atol=1e-5)


def test_input_size_must_be_a_multiple_of_14(checkpoint: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"key 'input_size': input size must be a positive multiple of 14 .*found 500",
    ):
        VDADepthBackend(checkpoint, input_size=500, device="cpu")


def test_batch_out_of_range_is_refused(checkpoint: Path) -> None:
    with pytest.raises(
        InputError, match=r"key 'batch': batch out of range \(expected 1..32, found 0\)"
    ):
        VDADepthBackend(checkpoint, input_size=SIZE, device="cpu", batch=0)


def test_factory_needs_a_checkpoint() -> None:
    with pytest.raises(InputError, match=r"backend vda needs --checkpoint PATH"):
        make_vda_backend(None)


def test_bad_device_is_refused(checkpoint: Path) -> None:
    with pytest.raises(InputError, match=r"key 'device': bad device"):
        VDADepthBackend(checkpoint, input_size=SIZE, device="toaster")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_refused_when_the_model_loads(checkpoint: Path) -> None:
    backend = VDADepthBackend(checkpoint, input_size=SIZE, device="cuda")  # plans anywhere
    with pytest.raises(InputError, match=r"key 'device': CUDA is not available"):
        backend.prepare()


class OutOfMemoryAbove(torch.nn.Module):
    """Raises CUDA out-of-memory when the backbone batch exceeds ``limit`` frames."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor, backbone_chunk: int | None = None) -> torch.Tensor:
        self.batches.append(int(backbone_chunk or 0))
        if backbone_chunk is None or backbone_chunk > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.ones(x.shape[0], x.shape[1], x.shape[-2], x.shape[-1])


def test_out_of_memory_halves_the_batch_and_retries_once() -> None:
    model = OutOfMemoryAbove(limit=16)
    predictor = ModelWindowPredictor(model, torch.device("cpu"), batch=32)  # type: ignore[arg-type]
    depth = predictor(torch.zeros(1, 32, 3, 14, 14))
    assert depth.shape == (32, 14, 14)
    assert model.batches == [32, 16]
    assert predictor.batch == 16


def test_out_of_memory_twice_is_raised() -> None:
    model = OutOfMemoryAbove(limit=8)
    predictor = ModelWindowPredictor(model, torch.device("cpu"), batch=32)  # type: ignore[arg-type]
    with pytest.raises(
        SceneFailed, match=r"CUDA out of memory with batch 32 .* again with batch 16"
    ):
        predictor(torch.zeros(1, 32, 3, 14, 14))
    assert model.batches == [32, 16]


class TestVDAConformance(DepthBackendContract):
    """The shared depth-backend checks, run on a random-weight vits checkpoint at input size 28."""

    @pytest.fixture(autouse=True)
    def _checkpoint(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint

    def make_backend(self) -> VDADepthBackend:
        return VDADepthBackend(self.checkpoint, input_size=28, device="cpu")
