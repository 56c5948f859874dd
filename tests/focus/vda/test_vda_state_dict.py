"""Our model's state dict against the official lists (names, shapes, dtypes, param/buffer).

``data/vda_metric_{vits,vitl}_state_dict_keys.json`` are copies of the lists in
``../shared/reference/`` (taken from the official model, DepthAnything/Video-Depth-Anything @ 4f5ae23).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from trainset.focus.vda.model import VideoDepthAnything

REFERENCE = Path(__file__).parent / "data"
LISTS = {e: REFERENCE / f"vda_metric_{e}_state_dict_keys.json" for e in ("vits", "vitl")}


def _official(encoder: str) -> dict:
    return json.loads(LISTS[encoder].read_text())


def _ours(encoder: str) -> list[list]:
    with torch.device("meta"):
        model = VideoDepthAnything(encoder)
    params = {name for name, _ in model.named_parameters()}
    return [
        [
            name,
            list(t.shape),
            str(t.dtype).removeprefix("torch."),
            "param" if name in params else "buffer",
        ]
        for name, t in model.state_dict().items()
    ]


@pytest.mark.parametrize("encoder", ["vits", "vitl"])
def test_state_dict_entries_equal_official_list(encoder: str) -> None:
    assert _ours(encoder) == _official(encoder)["entries"]


@pytest.mark.parametrize("encoder", ["vits", "vitl"])
def test_parameter_count_equals_official(encoder: str) -> None:
    with torch.device("meta"):
        model = VideoDepthAnything(encoder)
    assert sum(p.numel() for p in model.parameters()) == _official(encoder)["n_params"]


def test_vitb_has_the_documented_widths() -> None:
    with torch.device("meta"):
        state = VideoDepthAnything("vitb").state_dict()
    assert state["pretrained.pos_embed"].shape == (1, 1370, 768)
    assert state["pretrained.blocks.11.attn.qkv.weight"].shape == (2304, 768)
    assert "pretrained.blocks.12.norm1.weight" not in state
    assert [state[f"head.projects.{i}.weight"].shape[0] for i in range(4)] == [96, 192, 384, 768]
    assert state["head.scratch.layer1_rn.weight"].shape == (128, 96, 3, 3)
    pe = "head.motion_modules.{}.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
    assert [state[pe.format(i)].shape[-1] for i in range(4)] == [384, 768, 128, 128]


def test_unknown_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown encoder 'vitg'"):
        VideoDepthAnything("vitg")


def test_positional_encoding_buffer_is_the_sinusoid() -> None:
    model = VideoDepthAnything("vits")
    pe = model.state_dict()[
        "head.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    ]
    dim = 64
    for t, i in [(0, 0), (5, 3), (31, 31)]:
        angle = t / 10000 ** (2 * i / dim)
        assert pe[0, t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert pe[0, t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
