"""Occlusion between the layers of the ``layered`` renderer, and content hidden behind them.

Layers are ordered near to far at stack positions ``index`` (uniform steps in CoC radius).
With tent weights a pixel lies in two adjacent layers, and a smooth surface spreads over a run
of layers; neither may hide itself. So a layer is hidden only by layers at least
:data:`OCCLUDER_GAP_LAYERS` steps nearer (:func:`occluder_counts`), in the compositing as in the
extension below.

Hidden content (:func:`hidden_extension`): a single RGB-D frame does not show what lies behind a
foreground object, yet a blurred foreground edge lets some of it through. Each layer that
touches nearer content across a depth edge is continued behind it: colour from a pull-push fill
of the layer's own pixels (the surrounding background, smoothly extrapolated), alpha shared
among the layers continued there by their contact nearby. Multi-layer renderers with inpainted
hidden layers (MPIB, Dr.Bokeh) do the same with a network; this is the cheap classical form.
"""

from __future__ import annotations

import math

import torch

# A layer is hidden only by layers at least this many steps nearer: a pixel's two tent layers,
# and a smooth surface, must not occlude themselves.
OCCLUDER_GAP_LAYERS = 2
# Hidden content's colour and shares are smooth: computed on tiles of this many pixels.
TILE_PX = 4


def occluder_counts(index: torch.Tensor, gap: int = OCCLUDER_GAP_LAYERS) -> list[int]:
    """For layers at ascending stack positions ``index`` (L,) (near to far), how many of the
    first layers lie at least ``gap`` steps nearer than each: those are what can hide it."""
    return torch.searchsorted(index, index - gap, right=True).tolist()


def occluded_fraction(position: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(K, H, W): the part of each pixel lying in layers at least OCCLUDER_GAP_LAYERS steps
    nearer than the layers at stack positions ``index`` (K,), i.e. what hides them there.

    ``position`` (H, W) is each pixel's continuous stack position (the mean of the layer
    positions under its tent weights). The weight of layers <= M is then exactly
    ``clip(M + 1 - position, 0, 1)``."""
    limit = index.to(position.dtype) - (OCCLUDER_GAP_LAYERS - 1)
    return (limit[:, None, None] - position[None]).clamp_(0.0, 1.0)


def _block_mean(x: torch.Tensor, block: int) -> torch.Tensor:
    """Means over ``block`` x ``block`` tiles of (B, C, H, W), zero-padded to whole tiles
    (zero = no content): (B, C, ceil(H / block), ceil(W / block))."""
    pad_h, pad_w = -x.shape[-2] % block, -x.shape[-1] % block
    if pad_h or pad_w:
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h))
    return torch.nn.functional.avg_pool2d(x, block)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pull_push(
    tiles: torch.Tensor, levels: int, tile_px: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fill colour and contact shares of layers given as ``tile_px`` tile means (L, 5, h, w):
    premultiplied colour, alpha and contact coverage.

    Pull: ``levels`` halvings. Push, from the coarsest level down:

    - colour: a level's own mean colour where the layer covers a quarter of it or more, blended
      with the coarser fill where it covers less (weight ``min(1, 4 a)``);
    - shares: each layer's fraction of the contact at a level, where that level has enough of
      it (confidence ``min(1, 4 * contact * block_px)``: a straight edge across a block of B px
      covers 1/B of it), the coarser shares elsewhere; so the layer that touches the occluder
      right there gets the share, not every layer touching it further away.

    Returns the fill (L, 3, h, w) (zero where no content lies within reach), the shares
    (L, 1, h, w) (summing to 1 where any contact lies within reach) and the confidence
    (1, 1, h, w) (1 near contact, fading to 0 about 1.5 * 2**levels tiles away).
    """
    pyramid = [tiles]
    for _ in range(levels):
        pyramid.append(_block_mean(pyramid[-1], 2))
    fill = torch.zeros_like(pyramid[-1][:, :3])
    known = torch.zeros_like(pyramid[-1][:, 3:4])
    shares = torch.zeros_like(known)
    sure = torch.zeros_like(known[:1])
    for depth, level in reversed(list(enumerate(pyramid))):
        size = (level.shape[-2], level.shape[-1])
        up = _resize(torch.cat([fill * known, known, shares * sure], dim=1), size)
        up_sure = _resize(sure, size)
        alpha = level[:, 3:4]
        own = (4.0 * alpha).clamp_(max=1.0)
        reach = own + (1.0 - own) * up[:, 3:4]
        known = (reach > 1e-6).to(tiles.dtype)
        mean = level[:, :3] / alpha.clamp_min(1e-12)
        fill = (own * mean + (1.0 - own) * up[:, :3]) / reach.clamp_min(1e-6) * known
        contact = level[:, 4:5]
        total = contact.sum(dim=0, keepdim=True)
        here = (4.0 * total * (tile_px * 2**depth)).clamp_(max=1.0)
        sure = here + (1.0 - here) * up_sure
        shares = (
            here * contact / total.clamp_min(1e-12) + (1.0 - here) * up[:, 4:5]
        ) / sure.clamp_min(1e-12)
    return fill, shares, sure


def extend_hidden(rgba: torch.Tensor, radii: torch.Tensor, index: torch.Tensor) -> None:
    """Continue premultiplied layers (L, 4, H, W) behind nearer content, in place.

    The layers are near to far at signed radii (L,) px and stack positions ``index`` (L,). A
    layer's contact pixels are its pixels next to a pixel at least
    ``OCCLUDER_GAP_LAYERS - 0.5`` steps nearer (a depth edge); layers without any are left
    alone (a smooth surface spread over many layers has none). Where a touching layer is
    hidden (:func:`occluded_fraction` h) it gets the :func:`pull_push` fill of its own pixels
    and alpha ``h * share``; ``share`` splits what lies behind the occluder among the touching
    layers by their contact nearby (so that composited they show in proportion to it), fading
    out where little contact is near. Fill and shares are smooth: they are
    computed on TILE_PX tiles and resized; the pull-push reaches two to four times the largest
    blur radius (hidden content shows through a blurred edge up to its radius). The hidden
    fraction is exact per pixel.
    """
    weights = rgba[:, 3]
    position = torch.einsum("l,lhw->hw", index.to(weights.dtype), weights)
    nearest = -torch.nn.functional.max_pool2d(-position[None, None], 3, stride=1, padding=1)[0, 0]
    limit = index.to(weights.dtype) - (OCCLUDER_GAP_LAYERS - 0.5)
    contact = weights * (nearest[None] < limit[:, None, None])
    touching = torch.nonzero(contact.flatten(1).amax(dim=1) > 0)[:, 0]
    if touching.numel() == 0:
        return
    height, width = weights.shape[-2:]
    tiles = torch.cat(
        [_block_mean(rgba, TILE_PX)[touching], _block_mean(contact[:, None], TILE_PX)[touching]],
        dim=1,
    )
    tile_h, tile_w = tiles.shape[-2:]
    # Presence reaches at least half a block from a contact pixel: blocks of four blur radii
    # keep the share whole up to about one radius behind the edge, then let it fade.
    reach_tiles = 4.0 * (float(radii.abs().max()) + 1.0) / TILE_PX
    levels = min(math.ceil(math.log2(max(reach_tiles, 1.0))), int(math.log2(min(tile_h, tile_w))))
    fill, shares, sure = pull_push(tiles, levels, TILE_PX)
    # Stick-breaking as the compositing accumulates: layer k is dimmed by the continued layers
    # at least OCCLUDER_GAP_LAYERS steps nearer, so its share is taken of what the continued
    # layers from OCCLUDER_GAP_LAYERS - 1 steps nearer on hold.
    suffix = torch.flip(torch.cumsum(torch.flip(shares, (0,)), dim=0), (0,))
    positions = index[touching]
    behind = suffix[torch.searchsorted(positions, positions - (OCCLUDER_GAP_LAYERS - 1))]
    # Whole where the contact is sure to half or more, fading to 0 far from any contact.
    share = shares / behind.clamp_min(1e-12) * (2.0 * sure).clamp_(max=1.0)
    smooth = _resize(torch.cat([fill * share, share], dim=1), (tile_h * TILE_PX, tile_w * TILE_PX))
    hidden = occluded_fraction(position, index[touching])
    rgba.index_add_(0, touching, smooth[:, :, :height, :width].mul_(hidden[:, None]))
