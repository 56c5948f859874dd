"""Optics of the focus pipeline: circle of confusion (CoC), focus maps, CoC parameter sampling.

Units: focal length ``f``, focus distance ``S_focus`` and depth are metres; ``N`` is the f-number.
``compute_raw_coc`` gives the blur-circle diameter on the sensor in metres; :func:`coc_px` turns
sensor metres into pixels for a sensor width (default full frame, 36 mm).

Two CoC models (``coc_model``):

- ``plan``: the plan's ``f**2 / (N * S_focus) * |d - S_focus| / d`` (what the FocusMamba
  dataloader recomputes; the default).
- ``thin_lens``: the exact thin-lens ``f**2 / (N * (S_focus - f)) * |d - S_focus| / d``.

Both are linear in disparity: ``c = K * |1/S_focus - 1/d|`` with ``K = f**2 / N`` (plan) or
``K = f**2 * S_focus / (N * (S_focus - f))`` (thin lens).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.pipeline.seeds import name_seed

COC_MODELS = ("plan", "thin_lens")
# Full-frame sensor width in metres (36 mm): the default for CoC in pixels.
DEFAULT_SENSOR_WIDTH_M = 0.036
# Number of (f, N, S_focus) parameter sets per scene (plan, Phase 5: N_sets=4).
DEFAULT_N_SETS = 4
# Depth floor in metres before dividing (plan: np.maximum(depth, 1e-6)).
DEPTH_FLOOR_M = 1e-6
# Where S_focus is drawn (--focus-range): the plan's d_min..d_max (default), or d_p5..d_p95 of
# depth_maps/stats.json, which a few stray far or near pixels cannot drag behind a wall.
FOCUS_RANGES: dict[str, tuple[str, str]] = {
    "minmax": ("d_min", "d_max"),
    "p5-p95": ("d_p5", "d_p95"),
}
DEFAULT_FOCUS_RANGE = "minmax"


def check_coc_model(coc_model: str) -> str:
    """Return ``coc_model`` if it is one of :data:`COC_MODELS`, else raise InputError."""
    if coc_model not in COC_MODELS:
        raise InputError(
            "unknown CoC model", key="coc_model", expected=" or ".join(COC_MODELS), found=coc_model
        )
    return coc_model


def check_focus_range(focus_range: str) -> str:
    """Return ``focus_range`` if it is one of :data:`FOCUS_RANGES`, else raise InputError."""
    if focus_range not in FOCUS_RANGES:
        raise InputError(
            "unknown focus range",
            key="focus_range",
            expected=" or ".join(FOCUS_RANGES),
            found=focus_range,
        )
    return focus_range


def _coc_scale(f: float, N: float, S_focus: float, coc_model: str) -> float:
    """The factor in front of ``|d - S| / d``: ``f^2/(N*S)`` (plan) or ``f^2/(N*(S-f))``."""
    check_coc_model(coc_model)
    if coc_model == "plan":
        return f**2 / (N * S_focus)
    if S_focus <= f:
        raise InputError(
            "thin-lens CoC needs the focus distance beyond the focal length",
            key="S_focus",
            expected=f"> f = {f} m",
            found=S_focus,
        )
    return f**2 / (N * (S_focus - f))


def compute_raw_coc(
    depth: np.ndarray, f: float, N: float, S_focus: float, *, coc_model: str = "plan"
) -> np.ndarray:
    """CoC diameter on the sensor in metres, (H, W) float32, for depth (H, W) in metres.

    With ``coc_model='plan'`` this is the plan's formula exactly.
    """
    depth_safe = np.maximum(depth.astype(np.float32), DEPTH_FLOOR_M)
    return _coc_scale(f, N, S_focus, coc_model) * np.abs(depth_safe - S_focus) / depth_safe


def compute_focus_map(
    depth_map: np.ndarray,
    f: float,
    N: float,
    S_focus: float,
    max_coc: float,
    *,
    coc_model: str = "plan",
) -> np.ndarray:
    """Ground-truth soft focus map (H, W) float16 in [0, 1]: ``1 - clip(coc / max_coc, 0, 1)``.

    ``depth_map`` is (H, W) float32 metres, ``max_coc`` sensor metres. With the default
    ``coc_model='plan'`` the result is bit-identical to the plan's ``compute_focus_map``.
    """
    depth_safe = np.maximum(depth_map, DEPTH_FLOOR_M)
    coc = _coc_scale(f, N, S_focus, coc_model) * np.abs(depth_safe - S_focus) / depth_safe
    coc_norm = np.clip(coc / max_coc, 0.0, 1.0)
    return (1.0 - coc_norm).astype(np.float16)


def scene_seed(scene_id: str) -> int:
    """Seed of a scene's CoC parameter sets: sha256 of the id, in [0, 2**32) (plan: hash % 2**32)."""
    return name_seed(scene_id, bits=32)


def sample_coc_params(
    depth_stats: Mapping[str, Any], N_sets: int = DEFAULT_N_SETS, seed: int | None = None
) -> list[dict[str, float]]:
    """Draw ``N_sets`` lens settings ``{f, N, S_focus}`` (metres, f-number), the plan's way.

    f ~ U(24 mm, 85 mm); N log-uniform in [1.4, 8]; S_focus = d_min + u (d_max - d_min) with
    u ~ Beta(2, 2) drawn through scipy from a seed taken from the generator, as in the plan.
    """
    from scipy.stats import beta as beta_dist  # here: scipy.stats costs ~1 s to import

    rng = np.random.default_rng(seed)
    d_min, d_max = depth_stats["d_min"], depth_stats["d_max"]
    params = []
    for _ in range(N_sets):
        f = rng.uniform(24e-3, 85e-3)  # focal length, metres (plan)
        log_N = rng.uniform(np.log(1.4), np.log(8.0))
        N = np.exp(log_N)  # f-number, log-uniform (plan)
        u = beta_dist.rvs(2, 2, random_state=int(rng.integers(10**9)))  # plan: 1e9
        S_focus = d_min + u * (d_max - d_min)  # focus distance, Beta(2,2) (plan)
        params.append({"f": float(f), "N": float(N), "S_focus": float(S_focus)})
    return params


def scene_coc_params(
    scene_id: str,
    depth_stats: Mapping[str, Any],
    n_sets: int = DEFAULT_N_SETS,
    *,
    focus_range: str = DEFAULT_FOCUS_RANGE,
) -> list[dict[str, float]]:
    """The parameter sets of one scene: :func:`sample_coc_params` seeded by :func:`scene_seed`,
    with ``S_focus`` drawn in the ``focus_range`` of the scene's depth statistics
    (:data:`FOCUS_RANGES`: ``minmax`` is the plan's ``d_min..d_max``).

    Calibration and the render stage both call this, so they use the same sets.
    """
    low_key, high_key = FOCUS_RANGES[check_focus_range(focus_range)]
    for key in (low_key, high_key):
        value = depth_stats.get(key)
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise InputError(
                "depth statistic missing or not a positive number",
                file=f"{scene_id}/depth_maps/stats.json",
                key=key,
                expected="positive metres",
                found=value,
            )
    bounds = {"d_min": float(depth_stats[low_key]), "d_max": float(depth_stats[high_key])}
    return sample_coc_params(bounds, N_sets=n_sets, seed=scene_seed(scene_id))


def coc_px(
    coc_m: np.ndarray | float, width_px: int, sensor_width_m: float = DEFAULT_SENSOR_WIDTH_M
) -> np.ndarray | float:
    """CoC in pixels from CoC in sensor metres: ``c_px = c_m * width_px / sensor_width_m``."""
    return coc_m * (width_px / sensor_width_m)


def coc_px_per_disparity(
    f: float,
    N: float,
    S_focus: float,
    width_px: int,
    *,
    sensor_width_m: float = DEFAULT_SENSOR_WIDTH_M,
    coc_model: str = "plan",
) -> float:
    """``K_diam``: CoC diameter in pixels per unit of ``|1/S_focus - 1/d|`` (1/m), so that
    ``|signed_coc_px| = K_diam * |1/S_focus - 1/d|``."""
    return _coc_scale(f, N, S_focus, coc_model) * S_focus * width_px / sensor_width_m


def signed_coc_px(
    depth_m: np.ndarray,
    f: float,
    N: float,
    S_focus: float,
    width_px: int,
    *,
    sensor_width_m: float = DEFAULT_SENSOR_WIDTH_M,
    coc_model: str = "plan",
) -> np.ndarray:
    """Signed CoC diameter in pixels (H, W) float32: positive behind the focus plane.

    ``|signed_coc_px| == coc_px(compute_raw_coc(...))``; the sign (+ far, - near) orders the
    layers of the renderer. Value: ``S * scale * (1/S - 1/d) * width_px / sensor_width_m``.
    """
    depth_safe = np.maximum(depth_m.astype(np.float32), DEPTH_FLOOR_M)
    k_px = coc_px_per_disparity(
        f, N, S_focus, width_px, sensor_width_m=sensor_width_m, coc_model=coc_model
    )
    return (k_px * (1.0 / S_focus - 1.0 / depth_safe.astype(np.float64))).astype(np.float32)
