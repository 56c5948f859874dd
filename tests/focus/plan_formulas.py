"""The focus plan's formulas, transcribed verbatim (focus-pipeline-plan.md, Phases 4 and 5),
plus the sha256 scene seed of DESIGN.md: the independent reference the optics, calibration and
label tests compare trainset against."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.stats import beta as beta_dist


def plan_compute_raw_coc(depth, f, N, S_focus):
    depth_safe = np.maximum(depth.astype(np.float32), 1e-6)
    return (f**2 / (N * S_focus)) * np.abs(depth_safe - S_focus) / depth_safe


def plan_sample_coc_params(depth_stats, N_sets=4, seed=None):
    rng = np.random.default_rng(seed)
    d_min, d_max = depth_stats["d_min"], depth_stats["d_max"]
    params = []
    for _ in range(N_sets):
        f = rng.uniform(24e-3, 85e-3)
        log_N = rng.uniform(np.log(1.4), np.log(8.0))
        N = np.exp(log_N)
        u = beta_dist.rvs(2, 2, random_state=int(rng.integers(int(1e9))))
        S_focus = d_min + u * (d_max - d_min)
        params.append({"f": float(f), "N": float(N), "S_focus": float(S_focus)})
    return params


def plan_compute_focus_map(depth_map, f, N, S_focus, max_coc):
    depth_safe = np.maximum(depth_map, 1e-6)
    coc = (f**2 / (N * S_focus)) * np.abs(depth_safe - S_focus) / depth_safe
    coc_norm = np.clip(coc / max_coc, 0.0, 1.0)
    focus_map = (1.0 - coc_norm).astype(np.float16)
    return focus_map


def sha256_scene_seed(scene_id):
    """DESIGN.md's seed in place of the plan's ``hash(scene_id)``: first 8 bytes of sha256,
    big-endian, mod 2**32."""
    return int.from_bytes(hashlib.sha256(scene_id.encode()).digest()[:8], "big") % 2**32
