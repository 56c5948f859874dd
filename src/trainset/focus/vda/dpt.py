"""DPT depth head with temporal modules (names follow the official ``head.`` entries)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainset.focus.vda.dinov2 import PATCH_SIZE
from trainset.focus.vda.motion import TemporalModule

HEAD_HIDDEN = 32  # channels before the last 1x1 convolution of the head


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))) with 3x3 convolutions."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Refine (optionally add a skip through ``resConfUnit1``), upsample, 1x1 ``out_conv``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Upsample to ``size`` (or by 2 when None), bilinear with aligned corners."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    """Channel reduction to ``features`` per level, four fusion blocks, output convolutions."""

    def __init__(self, out_channels: Sequence[int], features: int) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(out_channels[0], features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(out_channels[1], features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(out_channels[2], features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(out_channels[3], features, 3, padding=1, bias=False)
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features)
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, HEAD_HIDDEN, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(HEAD_HIDDEN, 1, 1),
            nn.ReLU(),
        )


class DPTHeadTemporal(nn.Module):
    """Tokens of four backbone layers -> one depth map per frame, with temporal attention.

    Temporal modules act on reassembled layer 3 and 4 and on fusion outputs path 4 and path 3.
    """

    def __init__(self, embed_dim: int, features: int, out_channels: Sequence[int]) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(embed_dim, c, 1) for c in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
            ]
        )
        self.scratch = Scratch(out_channels, features)
        self.motion_modules = nn.ModuleList(
            [
                TemporalModule(out_channels[2]),
                TemporalModule(out_channels[3]),
                TemporalModule(features),
                TemporalModule(features),
            ]
        )

    def forward(
        self, tokens: Sequence[torch.Tensor], rows: int, cols: int, frames: int
    ) -> torch.Tensor:
        """tokens: four (B*T, rows*cols, D) -> (B*T, 1, 14*rows, 14*cols), non-negative."""
        levels = []
        for index, level in enumerate(tokens):
            grid = level.transpose(1, 2).reshape(level.shape[0], level.shape[-1], rows, cols)
            levels.append(self.resize_layers[index](self.projects[index](grid)))
        layer_1, layer_2, layer_3, layer_4 = levels
        layer_3 = self.motion_modules[0](layer_3, frames)
        layer_4 = self.motion_modules[1](layer_4, frames)
        s = self.scratch
        layer_1_rn = s.layer1_rn(layer_1)
        layer_2_rn = s.layer2_rn(layer_2)
        layer_3_rn = s.layer3_rn(layer_3)
        layer_4_rn = s.layer4_rn(layer_4)
        path_4 = s.refinenet4(layer_4_rn, size=layer_3_rn.shape[2:])
        path_4 = self.motion_modules[2](path_4, frames)
        path_3 = s.refinenet3(path_4, layer_3_rn, size=layer_2_rn.shape[2:])
        path_3 = self.motion_modules[3](path_3, frames)
        path_2 = s.refinenet2(path_3, layer_2_rn, size=layer_1_rn.shape[2:])
        path_1 = s.refinenet1(path_2, layer_1_rn)
        out = s.output_conv1(path_1)
        out = F.interpolate(
            out, (rows * PATCH_SIZE, cols * PATCH_SIZE), mode="bilinear", align_corners=True
        )
        return s.output_conv2(out)
