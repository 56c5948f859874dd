"""DINOv2 vision transformer backbone (patch 14, no register tokens, layer scale).

Parameter names follow the official Video-Depth-Anything checkpoints (prefix ``pretrained.``):
``cls_token``, ``pos_embed``, ``mask_token``, ``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,
attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``, ``norm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZE = 14  # DINOv2 patch side in pixels
PRETRAIN_IMAGE_SIZE = 518  # pos_embed covers a 37x37 grid of patches (518 / 14)
LAYER_NORM_EPS = 1e-6  # DINOv2 LayerNorm epsilon
POS_EMBED_OFFSET = 0.1  # DINOv2's offset added to the target grid when resizing pos_embed


class PatchEmbed(nn.Module):
    """Non-overlapping 14x14 patches -> tokens: (B, 3, H, W) -> (B, H/14 * W/14, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class LayerScale(nn.Module):
    """Per-channel learned scale ``gamma`` on a residual branch."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2, hidden width 4 * dim."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale on both residual branches."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = SelfAttention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2(nn.Module):
    """DINOv2 ViT returning normalised patch tokens of selected blocks.

    ``dim``/``depth``/``heads``: 384/12/6 (vits), 768/12/12 (vitb), 1024/24/16 (vitl).
    """

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        grid = PRETRAIN_IMAGE_SIZE // PATCH_SIZE
        self.embed_dim = dim
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference, in checkpoints
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        if not self.pos_embed.is_meta:  # meta tensors (shape-only builds) have no values to set
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)

    def position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        """Position embedding for a ``rows x cols`` patch grid: (1, 1 + rows*cols, D).

        The pretrained 37x37 grid is resized bicubically with DINOv2's scale factors
        ``(n + 0.1) / 37`` so the official checkpoints see the embedding they were trained with.
        """
        pos = self.pos_embed.float()
        grid = int(math.sqrt(pos.shape[1] - 1))
        if rows == grid and cols == grid:
            return self.pos_embed
        patch_pos = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        scale = ((rows + POS_EMBED_OFFSET) / grid, (cols + POS_EMBED_OFFSET) / grid)
        patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", antialias=False)
        if patch_pos.shape[-2:] != (rows, cols):
            raise ValueError(f"position grid {tuple(patch_pos.shape[-2:])} != {(rows, cols)}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(self.pos_embed.dtype)

    def intermediate_layers(
        self, images: torch.Tensor, layers: Sequence[int]
    ) -> list[torch.Tensor]:
        """Normalised patch tokens after each block in ``layers``.

        images: (B, 3, H, W) with H, W multiples of 14. Returns one (B, H/14 * W/14, D) per layer.
        """
        rows, cols = images.shape[-2] // PATCH_SIZE, images.shape[-1] // PATCH_SIZE
        tokens = self.patch_embed(images)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.position_embedding(rows, cols).to(tokens.dtype)
        wanted = set(layers)
        outputs = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in wanted:
                outputs.append(self.norm(tokens)[:, 1:])
            if len(outputs) == len(wanted):
                break
        return outputs
