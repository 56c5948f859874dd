"""Image quality against a reference: PSNR, SSIM, and the depth-edge band they are read over.

Images are (H, W, 3) uint8 (or float on the 0..255 scale). SSIM is Wang et al. (2004): Gaussian
window sigma 1.5 px truncated at 5 px (11 x 11), K1 0.01, K2 0.03, dynamic range 255, borders
mirrored; the map is the mean of the three channels' maps, and a score is the map's mean over a
region (the whole frame by default). Our own implementation (scipy), checked in the tests against
the closed form for a constant offset and against torchmetrics' SSIM.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from trainset.errors import InputError

# SSIM constants (Wang et al. 2004): window sigma (px), truncation radius (px), K1, K2, range.
SSIM_SIGMA_PX = 1.5
SSIM_RADIUS_PX = 5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DYNAMIC_RANGE = 255.0


def _pair(test: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if test.shape != reference.shape or test.ndim != 3 or test.shape[2] != 3:
        raise InputError(
            "images to compare",
            expected=f"two (H, W, 3) images of one shape, reference {reference.shape}",
            found=test.shape,
        )
    return test.astype(np.float64), reference.astype(np.float64)


def _region(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape[:2], dtype=bool)
    if mask.shape != shape[:2] or not mask.any():
        raise InputError(
            "region to score", expected=f"a non-empty (H, W) = {shape[:2]} mask", found=mask.shape
        )
    return mask


def psnr(test: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB (peak 255) over ``mask`` (H, W) bool, default all;
    ``inf`` for identical images."""
    a, b = _pair(test, reference)
    mse = float(((a - b) ** 2)[_region(mask, a.shape)].mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(DYNAMIC_RANGE**2 / mse)


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(-SSIM_RADIUS_PX, SSIM_RADIUS_PX + 1, dtype=np.float64)
    g = np.exp(-0.5 * (offsets / SSIM_SIGMA_PX) ** 2)
    g /= g.sum()
    return np.outer(g, g)


def ssim_map(test: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (H, W) float64, the mean of the three channels' SSIM maps."""
    a, b = _pair(test, reference)
    window = _gaussian_window()
    c1 = (SSIM_K1 * DYNAMIC_RANGE) ** 2
    c2 = (SSIM_K2 * DYNAMIC_RANGE) ** 2
    maps = []
    for c in range(3):
        x, y = a[..., c], b[..., c]

        def local(img: np.ndarray) -> np.ndarray:
            return ndimage.correlate(img, window, mode="mirror")

        mu_x, mu_y = local(x), local(y)
        var_x = np.maximum(local(x * x) - mu_x**2, 0.0)
        var_y = np.maximum(local(y * y) - mu_y**2, 0.0)
        cov = local(x * y) - mu_x * mu_y
        maps.append(
            (2 * mu_x * mu_y + c1)
            * (2 * cov + c2)
            / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        )
    return np.mean(maps, axis=0)


def ssim(test: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM over ``mask`` (H, W) bool, default the whole frame."""
    full = ssim_map(test, reference)
    return float(full[_region(mask, full.shape)].mean())


def depth_edge_band(
    coc_radius_px: np.ndarray, *, radii: float = 2.0, jump_px: float = 1.0
) -> np.ndarray:
    """Pixels within ``radii`` CoC radii of a depth edge, (H, W) bool.

    An edge pixel differs from one of its 4-neighbours by more than ``jump_px`` in signed CoC
    radius (a blur discontinuity: smooth slopes are no edges). Each edge pixel claims the disc
    of radius ``radii * max(|r|)`` over its 3 x 3 neighbourhood (both sides of the edge), at
    least 1 px.
    """
    r = np.asarray(coc_radius_px, dtype=np.float64)
    edge = np.zeros(r.shape, dtype=bool)
    dy = np.abs(np.diff(r, axis=0)) > jump_px
    dx = np.abs(np.diff(r, axis=1)) > jump_px
    edge[:-1] |= dy
    edge[1:] |= dy
    edge[:, :-1] |= dx
    edge[:, 1:] |= dx
    reach = np.maximum(np.ceil(radii * ndimage.maximum_filter(np.abs(r), size=3)), 1.0)
    band = np.zeros(r.shape, dtype=bool)
    for value in np.unique(reach[edge]):
        seeds = edge & (reach == value)
        band |= ndimage.distance_transform_edt(~seeds) <= value
    return band
