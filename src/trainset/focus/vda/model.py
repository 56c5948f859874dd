"""Video-Depth-Anything (metric): DINOv2 backbone + temporal DPT head, official parameter names."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainset.focus.vda.dinov2 import PATCH_SIZE, DinoV2
from trainset.focus.vda.dpt import DPTHeadTemporal


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of one model size (official constructor arguments)."""

    name: str
    embed_dim: int
    depth: int
    heads: int
    features: int
    out_channels: tuple[int, int, int, int]
    layers: tuple[int, int, int, int]  # backbone blocks whose tokens feed the head


# Official configurations (Video-Depth-Anything README / models.md).
ENCODERS: dict[str, EncoderConfig] = {
    "vits": EncoderConfig("vits", 384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11)),
    "vitb": EncoderConfig("vitb", 768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11)),
    "vitl": EncoderConfig("vitl", 1024, 24, 16, 256, (256, 512, 1024, 1024), (4, 11, 17, 23)),
}


class VideoDepthAnything(nn.Module):
    """Metric video depth: (B, T, 3, H, W) ImageNet-normalised frames -> (B, T, H, W) metres.

    H and W must be multiples of 14 and T <= 32. ``backbone_chunk`` runs the per-frame backbone
    on at most that many frames at a time (the temporal head always sees all T frames).
    """

    def __init__(self, encoder: str = "vitl") -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; expected one of {sorted(ENCODERS)}")
        self.config = ENCODERS[encoder]
        cfg = self.config
        self.pretrained = DinoV2(cfg.embed_dim, cfg.depth, cfg.heads)
        self.head = DPTHeadTemporal(cfg.embed_dim, cfg.features, cfg.out_channels)

    def forward(self, x: torch.Tensor, backbone_chunk: int | None = None) -> torch.Tensor:
        batch, frames, _, height, width = x.shape
        rows, cols = height // PATCH_SIZE, width // PATCH_SIZE
        images = x.flatten(0, 1)
        chunk = backbone_chunk or images.shape[0]
        parts = [
            self.pretrained.intermediate_layers(images[i : i + chunk], self.config.layers)
            for i in range(0, images.shape[0], chunk)
        ]
        tokens = [torch.cat([p[level] for p in parts]) for level in range(4)]
        depth = self.head(tokens, rows, cols, frames)
        depth = F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=True)
        return F.relu(depth).squeeze(1).unflatten(0, (batch, frames))
