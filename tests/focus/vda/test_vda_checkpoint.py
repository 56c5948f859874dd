"""Strict checkpoint loading and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainset.errors import InputError
from trainset.focus.vda.checkpoint import load_vda_model
from trainset.focus.vda.model import VideoDepthAnything


@pytest.fixture(scope="module")
def vits_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return VideoDepthAnything("vits").state_dict()


def _save(path: Path, state: dict) -> Path:
    torch.save(state, path)
    return path


def test_load_is_exact_and_infers_the_encoder(tmp_path: Path, vits_state: dict) -> None:
    model = load_vda_model(_save(tmp_path / "m.pth", vits_state))
    assert model.config.name == "vits"
    assert not model.training
    loaded = model.state_dict()
    assert list(loaded) == list(vits_state)
    assert all(torch.equal(loaded[k], vits_state[k]) for k in vits_state)


def test_missing_key_is_named(tmp_path: Path, vits_state: dict) -> None:
    state = dict(vits_state)
    del state["head.scratch.output_conv2.2.bias"]
    path = _save(tmp_path / "missing.pth", state)
    with pytest.raises(
        InputError, match=r"missing\.pth.*1 missing key\(s\): head\.scratch\.output_conv2\.2\.bias"
    ):
        load_vda_model(path)


def test_extra_key_is_named(tmp_path: Path, vits_state: dict) -> None:
    state = {**vits_state, "head.extra.weight": torch.zeros(3)}
    path = _save(tmp_path / "extra.pth", state)
    with pytest.raises(InputError, match=r"extra\.pth.*1 unexpected key\(s\): head\.extra\.weight"):
        load_vda_model(path)


def test_wrong_shape_is_named_with_both_shapes(tmp_path: Path, vits_state: dict) -> None:
    state = {**vits_state, "head.projects.1.bias": torch.zeros(97)}
    path = _save(tmp_path / "shape.pth", state)
    with pytest.raises(
        InputError, match=r"shape\.pth.*head\.projects\.1\.bias expected \[96\] found \[97\]"
    ):
        load_vda_model(path)


def test_many_missing_keys_are_counted(tmp_path: Path, vits_state: dict) -> None:
    state = {k: v for k, v in vits_state.items() if not k.startswith("head.motion_modules")}
    path = _save(tmp_path / "nomotion.pth", state)
    with pytest.raises(
        InputError, match=r"112 missing key\(s\): head\.motion_modules\.0\..* and 109 more"
    ):
        load_vda_model(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"absent\.pth: checkpoint not found"):
        load_vda_model(tmp_path / "absent.pth")


def test_non_checkpoint_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "text.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(InputError, match=r"text\.pth: cannot read checkpoint"):
        load_vda_model(path)


def test_wrapped_state_dict_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "wrapped.pth", {"model": {"a": torch.zeros(1)}})
    with pytest.raises(InputError, match=r"wrapped\.pth: checkpoint is not a flat state dict"):
        load_vda_model(path)


def test_encoder_mismatch_is_reported(tmp_path: Path, vits_state: dict) -> None:
    path = _save(tmp_path / "small.pth", vits_state)
    with pytest.raises(InputError, match=r"different encoder \(expected vitl, found vits\)"):
        load_vda_model(path, encoder="vitl")


def test_unknown_backbone_width_is_reported(tmp_path: Path) -> None:
    path = _save(tmp_path / "odd.pth", {"pretrained.pos_embed": torch.zeros(1, 1370, 100)})
    with pytest.raises(
        InputError, match=r"unknown backbone width \(expected \[384, 768, 1024\], found 100\)"
    ):
        load_vda_model(path)
