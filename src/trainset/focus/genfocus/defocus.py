"""BokehNet's defocus map, and our CoC converted into it.

GenFocus (Inference_bokehNet.py): ``disp = 1 / depth`` (depth <= 0 counts as infinitely far),
focus disparity from a mask (median), a point or the image centre, then
``map = clip(|K * (disp - disp_focus)| / 100, 0, 1)``: 1 means 100 px of blur at the working
resolution. ``K * |disp - disp_focus|`` is a blur *radius* in pixels: GenFocus takes ``K`` and
the defocus map ``K * (disp - disp_focus)`` from BokehMe (the "blur parameter"; BokehMe's scatter
renderer draws a disc of radius ``|K * (disp - disp_focus)|``). Our CoC is a diameter, so
``K = K_diam / 2`` at the working width.
"""

from __future__ import annotations

import numpy as np

from trainset.errors import InputError

# Pixels of blur radius that map to 1 (Inference_bokehNet.py: MAX_COC = 100).
MAX_BLUR_PX = 100.0
# K * |1/d - 1/S| is a radius; our CoC is a diameter.
RADIUS_PER_DIAMETER = 0.5


def defocus_map(
    depth_m: np.ndarray,
    K: float,
    *,
    mask: np.ndarray | None = None,
    point: tuple[int, int] | None = None,
) -> np.ndarray:
    """GenFocus's defocus map (H, W) float32 in [0, 1] from depth (H, W) in metres.

    Focus disparity: the median disparity inside ``mask`` (H, W; nonzero = in focus; an empty
    mask falls back to the whole image), else the disparity at ``point`` = (x, y) pixels of
    this map (clamped to it), else at the centre (W // 2, H // 2). ``K``: radius in pixels per
    unit of disparity (1/m) at this map's resolution.
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.ndim != 2 or depth.size == 0:
        raise InputError(
            "depth must be (H, W)", key="depth_m", expected="(H, W)", found=depth.shape
        )
    if np.isnan(depth).any():
        raise InputError("depth has NaN", key="depth_m", expected="numbers", found="NaN")
    safe = np.where(depth > 0.0, depth, np.finfo(np.float32).max)
    disp = (1.0 / safe).astype(np.float32)
    height, width = disp.shape
    if mask is not None:
        mask_arr = np.asarray(mask)
        if mask_arr.shape != disp.shape:
            raise InputError("mask size", key="mask", expected=disp.shape, found=mask_arr.shape)
        inside = disp[mask_arr > 0]
        focus = float(np.median(inside if inside.size else disp))
    elif point is not None:
        x = min(max(int(point[0]), 0), width - 1)
        y = min(max(int(point[1]), 0), height - 1)
        focus = float(disp[y, x])
    else:
        focus = float(disp[height // 2, width // 2])
    blur = np.abs(np.float32(K) * (disp - np.float32(focus)))
    return np.clip(blur / np.float32(MAX_BLUR_PX), 0.0, 1.0).astype(np.float32)


def defocus_from_coc(coc_px: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Defocus map (H, W) float32 from CoC *diameters* in pixels (sign ignored) at a resolution
    ``scale`` times the working one: ``clip(|c| / 2 * scale / 100, 0, 1)``."""
    radius = np.abs(np.asarray(coc_px, dtype=np.float32)) * np.float32(RADIUS_PER_DIAMETER * scale)
    return np.clip(radius / np.float32(MAX_BLUR_PX), 0.0, 1.0).astype(np.float32)


def genfocus_k(k_diam_px: float, scale: float = 1.0) -> float:
    """GenFocus's K (radius px per 1/m at the working resolution) from our CoC-diameter slope
    ``K_diam`` (px per 1/m at a resolution ``1 / scale`` times the working one)."""
    return float(k_diam_px) * RADIUS_PER_DIAMETER * float(scale)
