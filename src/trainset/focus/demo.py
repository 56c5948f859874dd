"""The focus demo: synthetic scenes with known depth through the whole pipeline.

``run_focus_demo(out)`` writes synthetic raw scenes to ``{out}/raw``, runs
`trainset focus run --max-coc from-stats` into ``{out}/dataset`` (index, deblur, depth,
calibrate, render, validate) and writes the HTML report (`trainset focus report`);
:func:`focus_demo_summary` says what came out and where to look, the report's path last.
Re-running reuses what is current.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainset.store import read_json

# Default size: 6 scenes (so the 80/10/10 split has a val and a test scene) x 16 frames (the
# plan's minimum) x 128x192 px, 4 parameter sets each: about a minute on 2 cores.
DEMO_SCENES = 6
DEMO_FRAMES = 16
DEMO_SIZE = (128, 192)


@dataclass(frozen=True)
class FocusDemoResult:
    """Outcome of the demo: exit code of the run, paths and the validation report."""

    exit_code: int
    raw_root: Path
    out_root: Path
    stats: dict[str, Any]
    report: dict[str, Any]
    html_report: Path


def run_focus_demo(
    out: Path,
    *,
    n_scenes: int = DEMO_SCENES,
    n_frames: int = DEMO_FRAMES,
    size: tuple[int, int] = DEMO_SIZE,
    workers: int = 1,
) -> FocusDemoResult:
    """Generate ``n_scenes`` synthetic scenes of ``n_frames`` frames of ``size`` (H, W) px and run
    the full focus pipeline on them with ``max_coc`` taken from the calibration."""
    from trainset.focus.config import IndexConfig, RunConfig
    from trainset.focus.report import build_focus_report
    from trainset.focus.steps import run
    from trainset.focus.synthetic import generate_scenes

    raw, dataset = Path(out) / "raw", Path(out) / "dataset"
    generate_scenes(raw, n_scenes=n_scenes, n_frames=n_frames, size=size, seed=0)
    config = RunConfig(
        raw, dataset, max_coc="from-stats", workers=workers, index=IndexConfig(min_frames=n_frames)
    )
    command = ["trainset", "demo", "--out", str(Path(out).parent)]
    code = run(config, command=command)
    stats_path = dataset / "logs" / "coc_stats.json"
    report_path = dataset / "logs" / "validation_report.json"
    stats = read_json(stats_path) if stats_path.exists() else {}
    report = read_json(report_path) if report_path.exists() else {}
    html_report = build_focus_report(dataset).path
    return FocusDemoResult(code, raw, dataset, stats, report, html_report)


def focus_demo_summary(result: FocusDemoResult) -> str:
    """A few lines: scenes, frames, max_coc in m and mm, validation result, where to look; the
    last line is the path of the HTML report."""
    report, stats, root = result.report, result.stats, result.out_root
    lines = ["focus demo (synthetic scenes with known depth -> full FocusMamba pipeline)"]
    if report:
        verdict = "PASS" if not report["failed_scenes"] else f"FAIL {report['failed_scenes']}"
        lines.append(
            f"  scenes {report['total_scenes']}, frames {report['total_frames']}, "
            f"splits {report['split_counts']}, {report['n_sets']} parameter sets per scene"
        )
    if stats:
        m = stats["recommended_max_coc"]
        lines.append(
            f"  max_coc (p95 of the calibration) = {m:.6g} m = {m * 1e3:.4g} mm on the sensor"
        )
    if report:
        lines.append(
            f"  validation: {report['passing_scenes']}/{report['total_scenes']} scenes, {verdict}"
        )
    else:
        lines.append(
            f"  the run stopped early (exit code {result.exit_code}): see the output above"
        )
    lines += [
        f"  dataset:    {root}",
        f"  renders:    {root}/scene_000/bokeh_renders/set_00/  (focus maps: focus_maps/set_00/)",
        f"  histogram:  {root}/logs/coc_histogram.png",
        f"  checks:     {root}/logs/validation_report.json",
        f"  HTML report (open it in a browser): {result.html_report}",
    ]
    return "\n".join(lines)
