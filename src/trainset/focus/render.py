"""Renderer ``layered``: physically based defocus from an RGB frame and its CoC map (torch).

Algorithm (DESIGN.md, reference/models.md):

1. sRGB uint8 -> linear light (float32).
2. The signed CoC radius map (pixels; + behind the focus plane, - in front) is split into layers
   uniform in radius (= uniform in disparity, since CoC is linear in 1/d) with tent weights:
   each pixel goes to its two nearest layers, weights summing to 1.
3. Layer l holds premultiplied colour ``rgb * w_l`` and alpha ``w_l``; every layer is blurred
   with an anti-aliased disc of its radius, all layers in one batched FFT (cost independent of
   the radius). Layers of radius <= 0.5 px have a one-pixel kernel and are not blurred at all.
4. Layers are composited far to near with "over" and the colour divided by the accumulated alpha.
5. Linear -> sRGB uint8.

Runs on CUDA when available, else on the CPU. Borders are reflect-padded by the largest radius.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainset.errors import InputError

if TYPE_CHECKING:
    from trainset.focus.genfocus.backends import GenFocusRenderer

# ``genfocus`` (GenFocus BokehNet, optional extra) is imported only when asked for.
RENDERERS = ("layered", "genfocus")
# Largest radius step between adjacent layers, pixels.
DEFAULT_LAYER_STEP_PX = 1.0
# Cap on the number of layers (cost grows linearly with it).
DEFAULT_MAX_LAYERS = 24
# A disc of radius <= 0.5 px covers only its centre pixel: the identity.
IDENTITY_RADIUS_PX = 0.5


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_renderer(name: str) -> str:
    """Return ``name`` if it is a known renderer, else raise InputError."""
    if name not in RENDERERS:
        raise InputError(
            "unknown renderer", key="renderer", expected=" or ".join(RENDERERS), found=name
        )
    return name


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


class LayeredRenderer:
    """Defocus renderer ``layered``: ``render(image_uint8 (H,W,3), coc_px_signed (H,W))``."""

    name = "layered"

    def __init__(
        self,
        *,
        device: str | torch.device | None = None,
        layer_step_px: float = DEFAULT_LAYER_STEP_PX,
        max_layers: int = DEFAULT_MAX_LAYERS,
    ) -> None:
        if layer_step_px <= 0 or max_layers < 2:
            raise InputError(
                "bad layer settings",
                expected="layer_step_px > 0, max_layers >= 2",
                found=(layer_step_px, max_layers),
            )
        self.device = torch.device(device) if device is not None else default_device()
        self.layer_step_px = float(layer_step_px)
        self.max_layers = int(max_layers)
        self._decode = _srgb_decode_table(self.device)

    def params(self) -> dict[str, object]:
        """Everything that shapes the output (goes into the sentinel hash)."""
        return {
            "renderer": self.name,
            "layer_step_px": self.layer_step_px,
            "max_layers": self.max_layers,
        }

    def prepare(
        self, image: np.ndarray, coc_px_signed: np.ndarray
    ) -> tuple[torch.Tensor, LayerStack]:
        """Check inputs; return linear RGB (3, H, W) on the device and the layer stack."""
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
        codes = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(self.device)
        linear = self._decode[codes.long()].permute(2, 0, 1)
        radius = (
            torch.from_numpy(np.ascontiguousarray(coc_px_signed, dtype=np.float32)).to(self.device)
            * 0.5
        )
        layers = assign_layers(radius, layer_step_px=self.layer_step_px, max_layers=self.max_layers)
        return linear, layers

    def padded_stack(
        self, linear: torch.Tensor, weights: torch.Tensor, radii: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """Premultiplied RGBA layers (L, 4, H', W') reflect-padded by the largest radius (and up
        to fast FFT sizes), and the padding on the top/left side in pixels."""
        _, height, width = linear.shape
        pad = math.ceil(float(radii.max())) + 1
        pad_h = _fast_size(height + 2 * pad) - height - pad
        pad_w = _fast_size(width + 2 * pad) - width - pad
        mode = "reflect" if max(pad_h, pad_w) < min(height, width) else "replicate"
        sides = (pad, pad_w, pad, pad_h)
        linear_p = torch.nn.functional.pad(linear[None], sides, mode=mode)
        weights_p = torch.nn.functional.pad(weights[:, None], sides, mode=mode)
        stack = torch.empty(
            (weights.shape[0], 4, *linear_p.shape[-2:]), dtype=linear.dtype, device=linear.device
        )
        torch.mul(linear_p, weights_p, out=stack[:, :3])
        stack[:, 3:] = weights_p
        return stack, pad

    def blur_input(
        self, linear: torch.Tensor, layers: LayerStack
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
        """What :meth:`render_linear` blurs: the non-empty layers' weights (L, H, W), which of
        them need blurring (L,) bool, and for those the padded RGBA stack (B, 4, H', W') (None
        when no layer needs blurring), their radii (B,) px and the padding."""
        used = layers.weights.flatten(1).amax(dim=1) > 0
        radii = layers.radii[used]
        weights = layers.weights[used]
        to_blur = radii.abs() > IDENTITY_RADIUS_PX
        blur_radii = radii[to_blur].abs()
        if not bool(to_blur.any()):
            return weights, to_blur, None, blur_radii, 0
        stack, pad = self.padded_stack(linear, weights[to_blur], blur_radii)
        return weights, to_blur, stack, blur_radii, pad

    def render_linear(self, linear: torch.Tensor, layers: LayerStack) -> torch.Tensor:
        """Blur and composite: linear RGB (3, H, W) + layers -> linear RGB (3, H, W)."""
        _, height, width = linear.shape
        weights, to_blur, stack, blur_radii, pad = self.blur_input(linear, layers)
        blurred = None
        if stack is not None:
            blurred = blur_layers(stack, blur_radii)[:, :, pad : pad + height, pad : pad + width]
        flags = to_blur.tolist()
        index_in_blurred = [sum(flags[:i]) for i in range(len(flags))]
        # "Over" from far (last layer) to near (first): out = layer + (1 - alpha_layer) * out.
        out = torch.zeros((4, height, width), dtype=linear.dtype, device=linear.device)
        for layer in reversed(range(len(flags))):
            if flags[layer] and blurred is not None:
                rgba = blurred[index_in_blurred[layer]]
            else:
                alpha = weights[layer][None]
                rgba = torch.cat([linear * alpha, alpha], dim=0)
            # FFT round-off can put alpha a hair outside [0, 1]: clamp the transmittance.
            clear = (1.0 - rgba[3:]).clamp_(0.0, 1.0)
            out = torch.addcmul(rgba, out, clear)
        return out[:3] / out[3:].clamp_min(1e-6)

    def render(self, image: np.ndarray, coc_px_signed: np.ndarray) -> np.ndarray:
        """Render defocus: image (H, W, 3) uint8 sRGB, signed CoC diameter (H, W) in pixels
        (+ behind the focus plane) -> (H, W, 3) uint8 sRGB."""
        linear, layers = self.prepare(image, coc_px_signed)
        out = self.render_linear(linear, layers)
        return srgb_encode_uint8(out).permute(1, 2, 0).cpu().numpy()


def make_renderer(name: str, **options: object) -> LayeredRenderer | GenFocusRenderer:
    """The renderer called ``name`` with its options; InputError with an install hint when
    ``genfocus`` cannot be imported."""
    check_renderer(name)
    if name == "genfocus":
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
    return LayeredRenderer(**options)  # type: ignore[arg-type]
