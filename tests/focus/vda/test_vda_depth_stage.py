"""``trainset focus depth --backend vda`` writes depth through the shared depth writer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from trainset.cli import main
from trainset.errors import InputError
from trainset.focus.depth_backends import make_depth_backend
from trainset.focus.vda import VDADepthBackend
from trainset.focus.vda.model import VideoDepthAnything


@pytest.fixture(scope="module")
def vits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(11)
    model = VideoDepthAnything("vits")
    with torch.no_grad():
        model.get_parameter("head.scratch.output_conv2.2.bias").fill_(3.0)  # about 3 m everywhere
    path = tmp_path_factory.mktemp("ckpt") / "metric_video_depth_anything_vits.pth"
    torch.save(model.state_dict(), path)
    return path


def test_registry_builds_vda_from_string_options(vits_checkpoint: Path) -> None:
    backend = make_depth_backend(
        "vda", checkpoint=str(vits_checkpoint), input_size="28", device="cpu", encoder="auto"
    )
    assert isinstance(backend, VDADepthBackend)
    assert (backend.params()["encoder"], backend.input_size) == ("auto", 28)


def test_non_integer_input_size_option_is_refused(vits_checkpoint: Path) -> None:
    with pytest.raises(InputError, match=r"key 'input_size': not an integer .*found big"):
        make_depth_backend("vda", checkpoint=str(vits_checkpoint), input_size="big")


def test_focus_depth_cli_writes_float16_depth_maps_with_vda(
    indexed_small: Path, vits_checkpoint: Path
) -> None:
    out = indexed_small
    assert main(["focus", "deblur", "--out-root", str(out), "--scene", "scene_001"]) == 0
    argv = ["focus", "depth", "--out-root", str(out), "--scene", "scene_001", "--backend", "vda"]
    argv += ["--checkpoint", str(vits_checkpoint), "--input-size", "28", "--device", "cpu"]
    assert main(argv) == 0
    depth_dir = out / "scene_001" / "depth_maps"
    names = sorted(p.name for p in depth_dir.iterdir())
    assert names == [".done"] + [f"depth_{t:04d}.npz" for t in range(6)] + ["stats.json"]
    stored = np.load(depth_dir / "depth_0000.npz", allow_pickle=False)["depth"]
    assert stored.dtype == np.float16
    assert stored.shape == (32, 48)
    assert np.all(stored > 0)


def test_focus_depth_cli_reports_a_bad_checkpoint(
    indexed_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = indexed_small
    bad = tmp_path / "bad.pth"
    torch.save({"pretrained.pos_embed": torch.zeros(1, 1370, 384)}, bad)
    argv = ["focus", "depth", "--out-root", str(out), "--backend", "vda", "--checkpoint", str(bad)]
    assert main(argv) == 2
    assert re.search(r"bad\.pth.*350 missing key\(s\)", capsys.readouterr().err)
