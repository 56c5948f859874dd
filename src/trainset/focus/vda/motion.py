"""Temporal (motion) modules: attention across the frames of a window at every pixel.

Names follow the official checkpoints: ``temporal_transformer.{norm, proj_in,
transformer_blocks.0.{attention_blocks.{0,1}.{to_q,to_k,to_v,to_out.0,pos_encoder.pe},
norms.{0,1}, ff.net.{0.proj,2}, ff_norm}, proj_out}``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GROUP_NORM_GROUPS = 32  # groups of the input GroupNorm
GROUP_NORM_EPS = 1e-6
TEMPORAL_HEADS = 8  # attention heads of every temporal module
ATTENTION_BLOCKS = 2  # attention blocks per transformer block
MAX_FRAMES = 32  # length of the absolute positional encoding (frames per window)


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """Absolute sinusoidal positional encoding (1, length, dim): sin on even, cos on odd channels.

    Computed on the CPU whatever the default device (a meta-device build keeps real values).
    """
    cpu = torch.device("cpu")
    position = torch.arange(length, dtype=torch.float32, device=cpu).unsqueeze(1)
    freq = torch.arange(0, dim, 2, dtype=torch.float32, device=cpu)
    freq = torch.exp(freq * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim, device=cpu)
    pe[0, :, 0::2] = torch.sin(position * freq)
    pe[0, :, 1::2] = torch.cos(position * freq)
    return pe


class PositionalEncoding(nn.Module):
    """Adds the (persistent buffer) encoding ``pe`` for the first T positions: (N, T, C)."""

    def __init__(self, dim: int, length: int = MAX_FRAMES) -> None:
        super().__init__()
        self.pe: torch.Tensor
        self.register_buffer("pe", sinusoidal_encoding(length, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Self-attention over frames: (N, T, C) -> (N, T, C), N = batch * pixels."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.pos_encoder = PositionalEncoding(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_encoder(x)
        n, frames, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, frames, self.heads, dim // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        )
        return self.to_out[0](out.transpose(1, 2).reshape(n, frames, dim))


class GEGLU(nn.Module):
    """Linear to 2 * hidden, then value * GELU(gate)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, hidden width 4 * dim (``net.0`` GEGLU, ``net.2`` output linear)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class TemporalBlock(nn.Module):
    """Two pre-norm temporal attention blocks then a pre-norm GEGLU feed-forward, all residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            TemporalAttention(dim, heads) for _ in range(ATTENTION_BLOCKS)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(ATTENTION_BLOCKS))
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """GroupNorm -> proj_in -> temporal block -> proj_out, residual around the whole."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(GROUP_NORM_GROUPS, channels, eps=GROUP_NORM_EPS)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(channels, heads)])
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)  # zero-initialised: a fresh module is the identity
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x: (B*T, C, H, W) with frames T consecutive per clip -> same shape."""
        bt, channels, height, width = x.shape
        batch = bt // frames
        h = self.norm(x).permute(0, 2, 3, 1).reshape(bt, height * width, channels)
        h = self.proj_in(h)
        # attend over frames at each pixel: (B*T, P, C) -> (B*P, T, C)
        h = h.reshape(batch, frames, height * width, channels).transpose(1, 2)
        h = h.reshape(batch * height * width, frames, channels)
        for block in self.transformer_blocks:
            h = block(h)
        h = h.reshape(batch, height * width, frames, channels).transpose(1, 2)
        h = self.proj_out(h.reshape(bt, height, width, channels))
        return h.permute(0, 3, 1, 2) + x


class TemporalModule(nn.Module):
    """One motion module of the DPT head (8 heads, 1 block, 2 attention blocks, APE)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, TEMPORAL_HEADS)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x: (B*T, C, H, W) -> (B*T, C, H, W)."""
        return self.temporal_transformer(x, frames)
