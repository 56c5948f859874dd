"""Building blocks: temporal modules, position embedding, preprocessing."""

from __future__ import annotations

import pytest
import torch

from trainset.focus.vda.dinov2 import DinoV2
from trainset.focus.vda.inference import IMAGENET_MEAN, IMAGENET_STD, preprocess_frame
from trainset.focus.vda.motion import TemporalModule


def test_fresh_temporal_module_is_the_identity() -> None:
    torch.manual_seed(0)
    module = TemporalModule(64)
    x = torch.randn(8, 64, 3, 4)
    torch.testing.assert_close(module(x, frames=4), x)


def test_temporal_module_mixes_frames_of_one_clip_only() -> None:
    torch.manual_seed(0)
    module = TemporalModule(64)
    torch.nn.init.normal_(module.temporal_transformer.proj_out.weight, std=0.1)
    x = torch.randn(8, 64, 3, 4)  # two clips of 4 frames
    y = x.clone()
    y[3] += 1.0  # last frame of the first clip
    with torch.no_grad():
        a, b = module(x, frames=4), module(y, frames=4)
    assert not torch.allclose(a[0], b[0])  # frame 0 of clip 1 attends to frame 3
    torch.testing.assert_close(a[4:], b[4:])  # clip 2 untouched


def test_position_embedding_is_stored_grid_at_pretraining_size() -> None:
    model = DinoV2(dim=32, depth=1, heads=2)
    assert model.position_embedding(37, 37) is model.pos_embed


def test_position_embedding_resize_keeps_a_constant_grid() -> None:
    model = DinoV2(dim=32, depth=1, heads=2)
    with torch.no_grad():
        model.pos_embed[:, 0] = -3.0
        model.pos_embed[:, 1:] = 0.25
    pos = model.position_embedding(4, 5)
    assert pos.shape == (1, 21, 32)
    assert torch.all(pos[0, 0] == -3.0)
    torch.testing.assert_close(pos[0, 1:], torch.full((20, 32), 0.25))


def test_backbone_returns_normalised_tokens_of_requested_blocks() -> None:
    torch.manual_seed(0)
    model = DinoV2(dim=32, depth=3, heads=2).eval()
    with torch.no_grad():
        out = model.intermediate_layers(torch.randn(2, 3, 28, 42), [0, 2])
    assert [o.shape for o in out] == [(2, 6, 32), (2, 6, 32)]
    torch.testing.assert_close(out[1].mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)


@pytest.mark.parametrize("value", [0, 37, 255])
def test_preprocess_normalises_with_imagenet_statistics(value: int) -> None:
    frame = torch.full((30, 40, 3), value, dtype=torch.uint8).numpy()
    x = preprocess_frame(frame, (42, 56), torch.device("cpu"))
    assert x.shape == (3, 42, 56)
    for c in range(3):
        expected = (value / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(x[c], torch.full((42, 56), expected), rtol=1e-5, atol=1e-5)


def _explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head, written out: (N, T, C) -> (N, T, C)."""
    c = q.shape[-1]
    d = c // heads
    out = torch.empty_like(q)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        scores = q[:, :, sl] @ k[:, :, sl].transpose(1, 2) / d**0.5
        out[:, :, sl] = torch.softmax(scores, dim=-1) @ v[:, :, sl]
    return out


def test_temporal_attention_equals_explicit_softmax_attention_with_position_code() -> None:
    from trainset.focus.vda.motion import TemporalAttention, sinusoidal_encoding

    torch.manual_seed(0)
    attention = TemporalAttention(16, heads=8)
    x = torch.randn(5, 7, 16)
    xp = x + sinusoidal_encoding(32, 16)[:, :7]
    expected = attention.to_out[0](
        _explicit_attention(attention.to_q(xp), attention.to_k(xp), attention.to_v(xp), 8)
    )
    with torch.no_grad():
        torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)


def test_backbone_attention_equals_explicit_softmax_attention() -> None:
    from trainset.focus.vda.dinov2 import SelfAttention

    torch.manual_seed(0)
    attention = SelfAttention(24, heads=6)
    x = torch.randn(2, 9, 24)
    q, k, v = attention.qkv(x).split(24, dim=-1)
    expected = attention.proj(_explicit_attention(q, k, v, 6))
    with torch.no_grad():
        torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)


def test_geglu_feed_forward_is_value_times_gelu_of_gate() -> None:
    from trainset.focus.vda.motion import GEGLU, FeedForward

    torch.manual_seed(0)
    ff = FeedForward(8)
    geglu, out = ff.net[0], ff.net[2]
    assert isinstance(geglu, GEGLU) and isinstance(out, torch.nn.Linear)
    x = torch.randn(3, 8)
    hidden = geglu.proj(x)
    expected = out(hidden[:, :32] * torch.nn.functional.gelu(hidden[:, 32:]))
    with torch.no_grad():
        torch.testing.assert_close(ff(x), expected)
