"""Phase 4: calibrate ``max_coc`` from the CoC distribution of a sample of scenes.

Percentiles come from a streaming log-spaced histogram (:class:`LogHistogram`): memory is fixed
(about 14 k counters) whatever the number of scenes, where the plan's "collect all pixels into a
flat array" needs ~32 GB at 1,200 scenes. Bins are 0.2% wide, so a percentile read from the
histogram is within 0.1% of the exact one (plus interpolation between order statistics).
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.focus.layout import (
    depth_frame_count,
    depth_path,
    read_depth_stats,
    read_scene_index,
)
from trainset.focus.optics import (
    DEFAULT_FOCUS_RANGE,
    DEFAULT_N_SETS,
    check_coc_model,
    check_focus_range,
    compute_raw_coc,
    scene_coc_params,
)
from trainset.pipeline.progress import Progress
from trainset.store import atomic_write_bytes, atomic_write_json, read_json, read_npz_array

# Percentiles reported (plan, Phase 4); recommended_max_coc = p95.
PERCENTILES = (50, 90, 95, 99)
RECOMMENDED_PERCENTILE = 95
# Plausible range of max_coc in sensor metres: real CoC values are about 1e-5..2e-2 m
# (reference/models.md). The plan's 0.005..1.0 is in the wrong units and is not used.
MAX_COC_RANGE_M = (1e-6, 0.05)
STATS_FILE = Path("logs") / "coc_stats.json"
PLOT_FILE = Path("logs") / "coc_histogram.png"


@dataclass
class LogHistogram:
    """Counts of positive values in log-spaced bins ``[lo * r**i, lo * r**(i+1))``.

    Values below ``lo`` (including 0) are counted apart and read back as 0; values at or above
    ``hi`` are counted apart and read back as the exact maximum. The exact minimum and maximum
    are tracked. Memory is ``O(number of bins)``, independent of how many values are added.
    """

    lo: float = 1e-12
    hi: float = 1.0
    ratio: float = 1.002
    counts: np.ndarray = field(init=False)
    under: int = field(init=False, default=0)
    over: int = field(init=False, default=0)
    vmin: float = field(init=False, default=math.inf)
    vmax: float = field(init=False, default=-math.inf)

    def __post_init__(self) -> None:
        if not (0 < self.lo < self.hi and self.ratio > 1):
            raise InputError(
                "bad histogram range",
                expected="0 < lo < hi, ratio > 1",
                found=(self.lo, self.hi, self.ratio),
            )
        self._log_ratio = math.log(self.ratio)
        n_bins = math.ceil(math.log(self.hi / self.lo) / self._log_ratio)
        self.counts = np.zeros(n_bins, dtype=np.int64)

    @property
    def n(self) -> int:
        """Number of values added."""
        return int(self.counts.sum()) + self.under + self.over

    @property
    def max_relative_error(self) -> float:
        """Largest relative error of a bin's centre against any value in the bin."""
        return math.sqrt(self.ratio) - 1.0

    def add(self, values: np.ndarray) -> None:
        """Count every value of ``values`` (any shape, finite, >= 0)."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size == 0:
            return
        if not np.all(np.isfinite(flat)) or float(flat.min()) < 0:
            raise InputError(
                "histogram values must be finite and non-negative",
                expected="finite values >= 0",
                found=f"min {np.nanmin(flat)}, {int((~np.isfinite(flat)).sum())} non-finite",
            )
        self.vmin = min(self.vmin, float(flat.min()))
        self.vmax = max(self.vmax, float(flat.max()))
        low = flat < self.lo
        high = flat >= self.hi
        self.under += int(low.sum())
        self.over += int(high.sum())
        inside = flat[~(low | high)]
        idx = np.floor(np.log(inside / self.lo) / self._log_ratio).astype(np.int64)
        np.clip(idx, 0, self.counts.size - 1, out=idx)
        self.counts += np.bincount(idx, minlength=self.counts.size)

    def _order_statistic(self, k: int, cumulative: np.ndarray) -> float:
        """Approximate value of the ``k``-th smallest value (0-based)."""
        if k < self.under:
            return 0.0
        inside_rank = k - self.under
        if inside_rank >= int(cumulative[-1]):
            return self.vmax
        b = int(np.searchsorted(cumulative, inside_rank, side="right"))
        return self.lo * self.ratio ** (b + 0.5)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100), interpolated like ``np.percentile``'s default."""
        n = self.n
        if n == 0:
            raise InputError("no values in the histogram", expected="at least one value", found=0)
        rank = q / 100.0 * (n - 1)
        k = math.floor(rank)
        cumulative = np.cumsum(self.counts)
        low = self._order_statistic(k, cumulative)
        high = self._order_statistic(min(k + 1, n - 1), cumulative)
        value = low + (rank - k) * (high - low)
        return float(min(max(value, self.vmin), self.vmax))

    def edges(self) -> np.ndarray:
        """Bin edges (n_bins + 1,) in the values' unit."""
        return self.lo * self.ratio ** np.arange(self.counts.size + 1, dtype=np.float64)


def select_calibration_scenes(scene_ids: list[str], sample_fraction: float) -> list[str]:
    """The scenes a calibration reads: the ``ceil(fraction * n)`` (at least 1) with the smallest
    sha256 of their id, returned sorted. The same in every process and on every machine."""
    if not 0 < sample_fraction <= 1:
        raise InputError(
            "sample fraction out of range",
            key="sample_fraction",
            expected="0 < fraction <= 1",
            found=sample_fraction,
        )
    if not scene_ids:
        return []
    count = max(1, math.ceil(sample_fraction * len(scene_ids)))
    ranked = sorted(scene_ids, key=lambda s: hashlib.sha256(s.encode("utf-8")).hexdigest())
    return sorted(ranked[:count])


def check_max_coc(value: float) -> float:
    """Return ``value`` (sensor metres) if it is in :data:`MAX_COC_RANGE_M`, else InputError."""
    lo, hi = MAX_COC_RANGE_M
    if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
        raise InputError(
            "max_coc is outside the physical range of sensor CoC (metres on the sensor, "
            "e.g. 0.0005 = 0.5 mm)",
            key="max_coc",
            expected=f"{lo:g}..{hi:g} m ({lo * 1e3:g}..{hi * 1e3:g} mm)",
            found=f"{value} m",
        )
    return float(value)


def resolve_max_coc(value: str, out_root: Path) -> float:
    """``--max-coc`` as sensor metres: a number, or ``from-stats`` (``logs/coc_stats.json``'s
    ``recommended_max_coc``); checked with :func:`check_max_coc`."""
    if value == "from-stats":
        path = out_root / STATS_FILE
        if not path.exists():
            raise InputError(
                "no calibration statistics; run `trainset focus calibrate` first", file=path
            )
        stats = read_json(path)
        found = stats.get("recommended_max_coc") if isinstance(stats, dict) else None
        if not isinstance(found, (int, float)):
            raise InputError(
                "no number under recommended_max_coc",
                file=path,
                key="recommended_max_coc",
                expected="a number (metres)",
                found=found,
            )
        return check_max_coc(float(found))
    try:
        number = float(value)
    except ValueError as exc:
        raise InputError(
            "bad --max-coc",
            key="max_coc",
            expected="a number in metres or 'from-stats'",
            found=value,
        ) from exc
    return check_max_coc(number)


def calibrate(
    out_root: Path,
    *,
    sample_fraction: float = 0.2,
    n_sets: int = DEFAULT_N_SETS,
    coc_model: str = "plan",
    focus_range: str = DEFAULT_FOCUS_RANGE,
    stats_path: Path | None = None,
    plot_path: Path | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run Phase 4 on ``out_root`` and write the statistics JSON and the histogram plot.

    The sample is drawn among the scenes whose depth stage is done (a failed scene is never
    the sample; :func:`select_calibration_scenes`), so it is the same for both executors. Reads
    their ``depth_maps``, computes the CoC (sensor metres) of every pixel for each of the scene's
    ``n_sets`` parameter sets (the ones the render stage uses, ``focus_range`` included) and
    returns ``{p50, p90, p95, p99, max, recommended_max_coc, units, counts, coc_model, ...}``.
    No scene with depth is an InputError.
    """
    out_root = Path(out_root)
    check_coc_model(coc_model)
    check_focus_range(focus_range)
    from trainset.focus.stages import DEPTH  # here: the stage registry imports this module

    index = read_scene_index(out_root)
    with_depth = [s for s in sorted(index) if DEPTH.done(out_root, s)]
    without_depth = sorted(set(index) - set(with_depth))
    if not with_depth:
        raise InputError(
            "no scene has depth maps; run `trainset focus depth` first",
            file=out_root,
            expected="at least one scene whose depth stage is done",
            found=f"none of {len(index)}",
        )
    chosen = select_calibration_scenes(with_depth, sample_fraction)
    hist = LogHistogram()
    frames = 0
    with Progress(len(chosen), "calibrate", stream=None if show_progress else io.StringIO()) as bar:
        for scene_id in chosen:
            stats = read_depth_stats(out_root, scene_id)
            param_sets = scene_coc_params(scene_id, stats, n_sets, focus_range=focus_range)
            for t in range(depth_frame_count(out_root, scene_id)):
                depth = read_npz_array(depth_path(out_root, scene_id, t), "depth").astype(
                    np.float32
                )
                for params in param_sets:
                    hist.add(compute_raw_coc(depth, coc_model=coc_model, **params))
                frames += 1
            bar.update(1, scene_id)
    result = _stats_record(hist, coc_model, sample_fraction, n_sets, focus_range)
    result["counts"] = {
        "scenes_total": len(index),
        "scenes_with_depth": len(with_depth),
        "scenes_sampled": len(chosen),
        "scenes_used": len(chosen),
        "frames": frames,
        "values": hist.n,
    }
    result["scenes_without_depth"] = without_depth
    result["sampled_scenes"] = chosen
    atomic_write_json(stats_path or out_root / STATS_FILE, result)
    write_histogram_plot(hist, result, plot_path or out_root / PLOT_FILE)
    return result


def _stats_record(
    hist: LogHistogram, coc_model: str, sample_fraction: float, n_sets: int, focus_range: str
) -> dict[str, Any]:
    record: dict[str, Any] = {f"p{q}": hist.percentile(q) for q in PERCENTILES}
    record["max"] = hist.vmax
    record["recommended_max_coc"] = record[f"p{RECOMMENDED_PERCENTILE}"]
    record["recommended_max_coc_mm"] = record["recommended_max_coc"] * 1e3
    record["units"] = "m (CoC diameter on the sensor)"
    record["coc_model"] = coc_model
    record["sample_fraction"] = sample_fraction
    record["n_sets"] = n_sets
    record["focus_range"] = focus_range
    record["histogram"] = {
        "lo_m": hist.lo,
        "hi_m": hist.hi,
        "bin_ratio": hist.ratio,
        "bins": int(hist.counts.size),
        "max_relative_error": hist.max_relative_error,
    }
    return record


def write_histogram_plot(hist: LogHistogram, stats: dict[str, Any], path: Path) -> Path:
    """Plot the CoC histogram (log x axis, in mm) with p50/p95/p99 marked, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    group = 25  # merge 25 fine bins (5% wide) per drawn bar
    nonzero = np.flatnonzero(hist.counts)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if nonzero.size:
        first = int(nonzero[0]) // group * group
        last = min(hist.counts.size, (int(nonzero[-1]) // group + 1) * group)
        counts = hist.counts[first:last].reshape(-1, group).sum(axis=1)
        edges_mm = hist.edges()[first : last + 1 : group] * 1e3
        ax.stairs(counts, edges_mm, fill=True, color="0.6")
    for q, colour in ((50, "tab:blue"), (95, "tab:red"), (99, "tab:purple")):
        value_mm = stats[f"p{q}"] * 1e3
        if value_mm > 0:
            ax.axvline(value_mm, color=colour, linestyle="--", label=f"p{q} = {value_mm:.4g} mm")
    ax.set_xscale("log")
    ax.set_xlabel(f"CoC diameter on the sensor (mm), model '{stats['coc_model']}'")
    ax.set_ylabel("pixels")
    ax.set_title(f"CoC distribution: {hist.n} values, recommended max_coc = p95")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
