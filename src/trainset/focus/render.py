"""Renderer ``layered``: physically based defocus from an RGB frame and its CoC map (torch).

Algorithm (DESIGN.md, reference/models.md, docs/focus-render.md):

1. sRGB uint8 -> linear light (float32); with ``highlight_gain`` G > 1 an inverse tone curve
   then expands near-white values (clipped highlights) up to G (off by default).
2. The signed CoC radius map (pixels; + behind the focus plane, - in front) is split into layers
   uniform in radius (= uniform in disparity, since CoC is linear in 1/d) with tent weights:
   each pixel goes to its two nearest layers, weights summing to 1.
3. Layer l holds premultiplied colour ``rgb * w_l`` and alpha ``w_l``, reflect-padded for the
   blur. With ``hidden="extend"`` (default) layers are continued behind nearer content across
   depth edges (:mod:`trainset.focus.occlusion`), so a blurred foreground edge reveals the
   surrounding background instead of its own colour.
4. Every layer is blurred with an anti-aliased disc of its radius, all layers in one batched
   FFT (cost independent of the radius). Layers of radius <= 0.5 px are not blurred.
5. Near to far, each layer adds its colour times what the layers that can hide it (at least
   two steps nearer) left visible: "over" between separated layers, a sum within a pixel's
   tent pair; the colour is divided by the accumulated alpha. (``hidden="none"``: version 1,
   "over" between all layers, far to near.)
6. The tone curve of step 1 is undone (values above G saturate); linear -> sRGB uint8.

Runs on CUDA when available, else on the CPU. Borders are reflect-padded by the largest radius.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from trainset.errors import InputError
from trainset.focus.backend_registry import BackendRegistry
from trainset.focus.occlusion import extend_hidden, occluder_counts

# Largest radius step between adjacent layers, pixels.
DEFAULT_LAYER_STEP_PX = 1.0
# Cap on the number of layers (cost grows linearly with it).
DEFAULT_MAX_LAYERS = 24
# A disc of radius <= 0.5 px covers only its centre pixel: the identity.
IDENTITY_RADIUS_PX = 0.5
# What a layer holds behind nearer content: "extend" (continue its colour there), "none" (v1).
HIDDEN_MODES = ("extend", "none")
# Inverse tone curve: pixels whose largest channel exceeds the threshold (linear light; 0.95 is
# sRGB code 250, what a camera leaves of a clipped highlight) are expanded so that white becomes
# the gain (1 = off, the default: keeps mean linear brightness).
DEFAULT_HIGHLIGHT_GAIN = 1.0
DEFAULT_HIGHLIGHT_THRESHOLD = 0.95


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _srgb_decode_table(device: torch.device) -> torch.Tensor:
    """(256,) float32: linear value of each sRGB code."""
    c = np.arange(256, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return torch.as_tensor(lin.astype(np.float32), device=device)


def srgb_encode_uint8(linear: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB codes, uint8, same shape."""
    x = linear.clamp(0.0, 1.0)
    srgb = torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(1e-12).pow(1 / 2.4) - 0.055)
    return (srgb * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def disc_kernels(radii: torch.Tensor) -> torch.Tensor:
    """Anti-aliased discs (L, K, K), K = 2 * ceil(max radius) + 1, each summing to 1.

    Pixel weight = clip(radius + 0.5 - distance from centre, 0, 1): the disc's edge is a one-pixel
    ramp; radius <= 0.5 gives the single centre pixel (the identity).
    """
    half = max(math.ceil(float(radii.max())), 0) if radii.numel() else 0
    coords = torch.arange(-half, half + 1, device=radii.device, dtype=torch.float32)
    rho = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    cover = (radii[:, None, None] + 0.5 - rho[None]).clamp_(0.0, 1.0)
    return cover / cover.sum(dim=(1, 2), keepdim=True)


def _fast_size(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def blur_layers(stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Blur each layer of a padded stack (L, C, H, W) with a disc of its radius (L,) in pixels.

    One batched real FFT for all layers and channels; the result is circular, so the caller pads
    by at least the largest radius. This is the irreducible core of the renderer.
    """
    n_layers, _, height, width = stack.shape
    kernels = disc_kernels(radii)
    half = kernels.shape[-1] // 2
    # Kernel centre at (0, 0), wrapped around: the four quadrants go to the four corners.
    full = torch.zeros((n_layers, height, width), dtype=stack.dtype, device=stack.device)
    full[:, : half + 1, : half + 1] = kernels[:, half:, half:]
    if half:
        full[:, : half + 1, -half:] = kernels[:, half:, :half]
        full[:, -half:, : half + 1] = kernels[:, :half, half:]
        full[:, -half:, -half:] = kernels[:, :half, :half]
    spectrum = torch.fft.rfft2(stack) * torch.fft.rfft2(full)[:, None]
    return torch.fft.irfft2(spectrum, s=(height, width))


@dataclass(frozen=True)
class LayerStack:
    """Layers of one frame: signed radii (L,) px ascending (near to far) and tent weights (L, H, W)."""

    radii: torch.Tensor
    weights: torch.Tensor


def assign_layers(
    radius_px: torch.Tensor,
    *,
    layer_step_px: float = DEFAULT_LAYER_STEP_PX,
    max_layers: int = DEFAULT_MAX_LAYERS,
) -> LayerStack:
    """Split a signed radius map (H, W) into layers uniform in radius with tent weights.

    Layer radii run from the map's minimum to its maximum in steps of at most ``layer_step_px``
    (at most ``max_layers`` layers); a constant map gives exactly one layer of that radius.
    """
    r_min = float(radius_px.min())
    r_max = float(radius_px.max())
    span = r_max - r_min
    n_layers = 1 if span <= 1e-6 else min(max_layers, math.ceil(span / layer_step_px) + 1)
    n_layers = max(n_layers, 2) if span > 1e-6 else 1
    if n_layers == 1:
        radii = torch.tensor([r_min], dtype=torch.float32, device=radius_px.device)
        return LayerStack(radii, torch.ones((1, *radius_px.shape), device=radius_px.device))
    radii = torch.linspace(r_min, r_max, n_layers, device=radius_px.device, dtype=torch.float64)
    pos = (radius_px.to(torch.float64) - r_min) * ((n_layers - 1) / span)
    lower = pos.floor().clamp_(0, n_layers - 2)
    frac = (pos - lower).clamp_(0.0, 1.0).to(torch.float32)
    index = lower.to(torch.int64)[None]
    weights = torch.zeros((n_layers, *radius_px.shape), device=radius_px.device)
    weights.scatter_(0, index, (1.0 - frac)[None])
    weights.scatter_add_(0, index + 1, frac[None])
    return LayerStack(radii.to(torch.float32), weights)


@dataclass(frozen=True)
class HighlightCurve:
    """Inverse tone curve for clipped highlights, in linear light.

    ``expand(x) = x`` up to ``threshold`` t, then ``x + (gain - 1) * u**2`` with
    ``u = (x - t) / (1 - t)``: continuous with slope 1 at t, white (1) becomes ``gain``.
    ``compress`` is its exact inverse on [0, gain] and saturates at 1 above; with gain 1 both
    are the identity. On colours the curve applies to the largest channel and scales the pixel
    (:meth:`expand_rgb`, :meth:`compress_rgb`).
    """

    gain: float = DEFAULT_HIGHLIGHT_GAIN
    threshold: float = DEFAULT_HIGHLIGHT_THRESHOLD

    def __post_init__(self) -> None:
        if not (self.gain >= 1.0 and 0.0 < self.threshold < 1.0):
            raise InputError(
                "bad highlight curve",
                key="highlight_gain/highlight_threshold",
                expected="gain >= 1 and 0 < threshold < 1 (linear light)",
                found=(self.gain, self.threshold),
            )

    @property
    def active(self) -> bool:
        return self.gain > 1.0

    def expand(self, linear: torch.Tensor) -> torch.Tensor:
        """Linear light in [0, 1] -> expanded values in [0, gain]."""
        if not self.active:
            return linear
        t = self.threshold
        u = ((linear - t) / (1.0 - t)).clamp_min(0.0)
        return linear + (self.gain - 1.0) * u * u

    def compress(self, expanded: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`expand` on [0, gain]; values above gain give 1."""
        if not self.active:
            return expanded
        t, a = self.threshold, self.gain - 1.0
        y = expanded.clamp(max=self.gain)
        u = (torch.sqrt((1.0 - t) ** 2 + 4.0 * a * (y - t).clamp_min(0.0)) - (1.0 - t)) / (2 * a)
        return torch.where(y > t, t + (1.0 - t) * u, y)

    def expand_rgb(self, linear: torch.Tensor) -> torch.Tensor:
        """Linear RGB (3, H, W): each pixel scaled by ``expand(m) / m``, m its largest channel
        (hue kept: a per-channel curve would turn bright warm edges orange)."""
        if not self.active:
            return linear
        peak = linear.amax(dim=0, keepdim=True)
        return linear * torch.where(peak > self.threshold, self.expand(peak) / peak, 1.0)

    def compress_rgb(self, expanded: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`expand_rgb` (3, H, W), by the largest channel; saturates at 1."""
        if not self.active:
            return expanded
        peak = expanded.amax(dim=0, keepdim=True)
        scale = self.compress(peak) / peak.clamp_min(1e-12)
        return (expanded * torch.where(peak > self.threshold, scale, 1.0)).clamp_(max=1.0)


def pad_sides(height: int, width: int, max_radius: float) -> tuple[tuple[int, int, int, int], str]:
    """Padding (left, right, top, bottom) and mode for blurring an (H, W) frame with discs up to
    ``max_radius`` px: the radius + 1 on the top/left, up to fast FFT sizes on the bottom/right;
    reflect, or replicate when the padding exceeds the frame. No padding for radius <= 0.5."""
    if max_radius <= IDENTITY_RADIUS_PX:
        return (0, 0, 0, 0), "constant"
    pad = math.ceil(max_radius) + 1
    pad_h = _fast_size(height + 2 * pad) - height - pad
    pad_w = _fast_size(width + 2 * pad) - width - pad
    mode = "reflect" if max(pad_h, pad_w) < min(height, width) else "replicate"
    return (pad, pad_w, pad, pad_h), mode


@dataclass(frozen=True)
class LayerPlan:
    """The non-empty layers of a frame, near to far, ready to blur and composite: padded
    premultiplied RGBA ``rgba`` (L, 4, H', W') (hidden content included), signed ``radii``
    (L,) px, ``counts`` (how many of the first layers can hide each, :func:`occluder_counts`)
    and the ``pad`` on the top/left side."""

    rgba: torch.Tensor
    radii: torch.Tensor
    counts: list[int]
    pad: int

    def runs(self) -> list[tuple[int, int]]:
        """The layers to blur (radius > 0.5 px) as [start, stop) runs: the unblurred ones
        (around the focus plane) are contiguous, so there are at most two."""
        flags = (self.radii.abs() > IDENTITY_RADIUS_PX).tolist()
        runs: list[tuple[int, int]] = []
        for i, flag in enumerate(flags):
            if flag and runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], i + 1)
            elif flag:
                runs.append((i, i + 1))
        return runs

    def blur(self) -> dict[int, torch.Tensor]:
        """The blurred layers, layer -> (4, H', W') (the FFT core of the renderer)."""
        out: dict[int, torch.Tensor] = {}
        for start, stop in self.runs():
            blurred = blur_layers(self.rgba[start:stop], self.radii[start:stop].abs())
            out.update({start + i: blurred[i] for i in range(stop - start)})
        return out


class LayeredRenderer:
    """Defocus renderer ``layered``: ``render(image_uint8 (H,W,3), coc_px_signed (H,W))``.

    Options (all recorded by :meth:`params`): ``layer_step_px``, ``max_layers``, ``hidden``
    (``extend``, or ``none``: version 1's behaviour), ``highlight_gain`` and
    ``highlight_threshold`` (:class:`HighlightCurve`; gain 1 = off). Options may be given as
    strings (``--renderer-option KEY=VALUE``).
    """

    name = "layered"
    # 1: layers blurred as they are; 2: hidden content extended, optional highlight curve.
    version = 2

    def __init__(
        self,
        *,
        device: str | torch.device | None = None,
        layer_step_px: float | str = DEFAULT_LAYER_STEP_PX,
        max_layers: int | str = DEFAULT_MAX_LAYERS,
        hidden: str = "extend",
        highlight_gain: float | str = DEFAULT_HIGHLIGHT_GAIN,
        highlight_threshold: float | str = DEFAULT_HIGHLIGHT_THRESHOLD,
    ) -> None:
        layer_step_px, max_layers = float(layer_step_px), int(max_layers)
        if layer_step_px <= 0 or max_layers < 2:
            raise InputError(
                "bad layer settings",
                expected="layer_step_px > 0, max_layers >= 2",
                found=(layer_step_px, max_layers),
            )
        if hidden not in HIDDEN_MODES:
            raise InputError(
                "unknown hidden-content mode",
                key="hidden",
                expected=" or ".join(HIDDEN_MODES),
                found=hidden,
            )
        self.device = torch.device(device) if device is not None else default_device()
        self.layer_step_px = layer_step_px
        self.max_layers = max_layers
        self.hidden = hidden
        self.highlights = HighlightCurve(float(highlight_gain), float(highlight_threshold))
        # Made on first use: building a renderer (e.g. to resolve its options) touches no GPU.
        self._decode: torch.Tensor | None = None

    def params(self) -> dict[str, Any]:
        """Every option that shapes the output, resolved, JSON-ready."""
        return {
            "renderer": self.name,
            "layer_step_px": self.layer_step_px,
            "max_layers": self.max_layers,
            "hidden": self.hidden,
            "highlight_gain": self.highlights.gain,
            "highlight_threshold": self.highlights.threshold,
        }

    def prepare(
        self, image: np.ndarray, coc_px_signed: np.ndarray
    ) -> tuple[torch.Tensor, LayerStack]:
        """Check inputs; return linear RGB (3, H, W) on the device (highlights expanded) and
        the layer stack."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                "renderer input image",
                expected="(H, W, 3) uint8",
                found=f"{image.shape} {image.dtype}",
            )
        if coc_px_signed.shape != image.shape[:2]:
            raise InputError(
                "CoC map and image differ in size",
                expected=f"(H, W) = {image.shape[:2]}",
                found=coc_px_signed.shape,
            )
        if not np.all(np.isfinite(coc_px_signed)):
            raise InputError("CoC map has NaN or Inf", expected="finite pixels", found="non-finite")
        if self._decode is None:
            self._decode = _srgb_decode_table(self.device)
        codes = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(self.device)
        linear = self.highlights.expand_rgb(self._decode[codes.long()].permute(2, 0, 1))
        radius = (
            torch.from_numpy(np.ascontiguousarray(coc_px_signed, dtype=np.float32)).to(self.device)
            * 0.5
        )
        layers = assign_layers(radius, layer_step_px=self.layer_step_px, max_layers=self.max_layers)
        return linear, layers

    def plan(self, linear: torch.Tensor, layers: LayerStack) -> LayerPlan:
        """Drop empty layers, pad the others for their blur, premultiply them and extend them
        behind nearer content (unless ``hidden="none"``)."""
        used = layers.weights.flatten(1).amax(dim=1) > 0
        radii = layers.radii[used]
        index = torch.nonzero(used)[:, 0]
        height, width = linear.shape[-2:]
        sides, mode = pad_sides(height, width, float(radii.abs().max()))
        linear_p = torch.nn.functional.pad(linear[None], sides, mode=mode)
        weights_p = torch.nn.functional.pad(layers.weights[used][:, None], sides, mode=mode)
        rgba = torch.empty(
            (weights_p.shape[0], 4, *weights_p.shape[-2:]), dtype=linear.dtype, device=linear.device
        )
        torch.mul(linear_p, weights_p, out=rgba[:, :3])
        rgba[:, 3:] = weights_p
        if self.hidden == "extend":
            extend_hidden(rgba, radii, index)
        return LayerPlan(rgba, radii, occluder_counts(index), sides[0])

    def render_linear(self, linear: torch.Tensor, layers: LayerStack) -> torch.Tensor:
        """Blur and composite: linear RGB (3, H, W) + layers -> linear RGB (3, H, W)."""
        _, height, width = linear.shape
        plan = self.plan(linear, layers)
        blurred = plan.blur()
        top = plan.pad

        def layer_rgba(layer: int) -> torch.Tensor:
            return blurred.get(layer, plan.rgba[layer])[:, top : top + height, top : top + width]

        out = torch.zeros((4, height, width), dtype=linear.dtype, device=linear.device)
        if self.hidden == "none":
            # Version 1: "over" from far (last layer) to near (first).
            for layer in reversed(range(len(plan.counts))):
                rgba = layer_rgba(layer)
                # FFT round-off can put alpha a hair outside [0, 1]: clamp the transmittance.
                out = torch.addcmul(rgba, out, (1.0 - rgba[3:]).clamp_(0.0, 1.0))
            return out[:3] / out[3:].clamp_min(1e-6)
        # Near to far: each layer shows through what the layers that can hide it left visible.
        visible = [torch.zeros((1, height, width), dtype=linear.dtype, device=linear.device)]
        for layer, count in enumerate(plan.counts):
            rgba = layer_rgba(layer)
            clear = (1.0 - visible[count]).clamp_(0.0, 1.0)
            out = torch.addcmul(out, rgba, clear)
            visible.append(visible[-1] + rgba[3:] * clear)
        return out[:3] / out[3:].clamp_min(1e-6)

    def render(self, image: np.ndarray, coc_px_signed: np.ndarray) -> np.ndarray:
        """Render defocus: image (H, W, 3) uint8 sRGB, signed CoC diameter (H, W) in pixels
        (+ behind the focus plane) -> (H, W, 3) uint8 sRGB."""
        linear, layers = self.prepare(image, coc_px_signed)
        out = self.highlights.compress_rgb(self.render_linear(linear, layers))
        return srgb_encode_uint8(out).permute(1, 2, 0).cpu().numpy()


class DefocusRenderer(Protocol):
    """What the renders stage needs from a renderer: a ``name``, a ``version`` (bumped when
    its output changes), ``params()`` (every option that shapes its output, resolved, JSON)
    and ``render``: image (H, W, 3) uint8 sRGB + signed CoC diameter (H, W) px -> (H, W, 3)
    uint8."""

    name: str
    version: int

    def params(self) -> dict[str, Any]: ...

    def render(self, image: np.ndarray, coc_px_signed: np.ndarray) -> np.ndarray: ...


def renderer_record(renderer: DefocusRenderer) -> dict[str, Any]:
    """How frames were rendered, for ``metadata.json`` and the stage parameters: ``renderer``
    (name), ``renderer_version`` and ``renderer_params``."""
    return {
        "renderer": renderer.name,
        "renderer_version": renderer.version,
        "renderer_params": renderer.params(),
    }


def _genfocus(**options: object) -> DefocusRenderer:
    """``genfocus`` (GenFocus BokehNet, optional extra), imported only when asked for."""
    try:
        from trainset.focus.genfocus.backends import GenFocusRenderer
    except ImportError as exc:
        raise InputError(
            f"renderer 'genfocus' cannot be imported: {exc}",
            key="--renderer",
            expected="the genfocus extra: pip install 'trainset[genfocus]'",
            found=str(exc),
        ) from exc
    return GenFocusRenderer(**options)


_RENDERERS: BackendRegistry[DefocusRenderer] = BackendRegistry(
    "renderer", {"layered": LayeredRenderer, "genfocus": _genfocus}, flag="--renderer"
)


def renderer_names() -> list[str]:
    """Names of the known renderers."""
    return _RENDERERS.names()


def make_renderer(name: str, **options: object) -> DefocusRenderer:
    """The renderer called ``name`` with its options (values may be strings, as
    ``--renderer-option KEY=VALUE`` gives them); InputError for an unknown name or option,
    with an install hint when ``genfocus`` cannot be imported."""
    return _RENDERERS.make(name, **options)
