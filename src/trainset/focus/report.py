"""`trainset focus report`: one static HTML page to judge a focus data set by looking at it.

The page (default ``{out_root}/report/index.html``, images in a folder beside it, written as
:mod:`trainset.store.report_page` describes) shows, in this order:

1. summary: a verdict; scenes by status (done / failed / blocked / pending, derived from the
   files by :mod:`trainset.pipeline.scene_state`), scenes rejected by the index, frames,
   splits, disk, max_coc (m and mm), coc_model, renderer, the validation result and the
   command that repairs failures; a stages x statuses table; every failed, blocked or invalid
   scene with its reason;
2. the calibration's CoC histogram with p50/p95/p99, and the distribution of f, N and S_focus
   over every parameter set of every scene (from the ``metadata.json`` files);
3. per scene (a seeded sample, plus every failed, blocked or invalid scene): for K frames the
   strip sharp frame | depth | focus map and render of each set (captioned with its f, N,
   S_focus), the depth statistics, the scene's warnings and its failure reasons.

Only one scene's arrays are in memory at a time; every thumbnail fits in
:data:`trainset.store.report_page.THUMB_BOX`.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from trainset.errors import InputError
from trainset.focus.calibration import PLOT_FILE, STATS_FILE
from trainset.focus.index import REJECTED_LOG
from trainset.focus.layout import metadata_path, read_scene_index, report_path
from trainset.focus.report_scene import (
    SceneView,
    badge,
    parameter_sets,
    read_optional_json,
    scene_section,
    validation_details,
)
from trainset.focus.validate import REPORT_FILE, disk_bytes
from trainset.pipeline.dataset_files import LOGS_DIR, read_config
from trainset.pipeline.progress import Progress
from trainset.pipeline.scene_state import STATUSES, StageState, scene_status, stage_states
from trainset.pipeline.seeds import derive_seed
from trainset.store.report_page import Html, ReportPage, figure_png, join, key_values, table, tag


@dataclass(frozen=True)
class FocusReportOptions:
    """What the report shows (the CLI takes its defaults from here)."""

    scenes: int = 12  # scenes shown in detail: a seeded sample; failed ones come in addition
    frames: int = 2  # frames per shown scene, evenly spaced (first and last included)
    seed: int = 0  # seed of the scene sample


@dataclass(frozen=True)
class FocusReport:
    """What :func:`build_focus_report` wrote."""

    path: Path
    size_bytes: int
    images: int
    scenes_total: int
    scenes_shown: tuple[str, ...]
    flagged: tuple[str, ...]


def sample_scenes(scene_ids: Sequence[str], flagged: Sequence[str], n: int, seed: int) -> list[str]:
    """Every flagged scene (sorted), then ``n`` of the others: those with the smallest
    ``derive_seed(seed, id)`` (sorted). The same scenes in every process for one seed."""
    chosen = set(flagged) & set(scene_ids)
    others = sorted(
        (s for s in scene_ids if s not in chosen), key=lambda s: (derive_seed(seed, s), s)
    )
    return sorted(chosen) + sorted(others[: max(n, 0)])


# Scene statuses that put a scene in the report whatever the sample (FLAGGED) and their order.
FLAGGED = ("failed", "blocked", "invalid")
SCENE_STATUSES = (*STATUSES, "invalid")


@dataclass
class _Facts:
    """What the summary needs, gathered once (small files only)."""

    out_root: Path
    index: dict[str, dict[str, Any]]
    states: dict[str, dict[str, StageState]]
    validation: dict[str, Any]  # empty when there is no validation report
    validation_time: str
    rejected: dict[str, str]
    config: dict[str, Any]
    coc_stats: dict[str, Any] | None
    status: dict[str, str] = field(default_factory=dict)
    params: dict[str, list[float]] = field(default_factory=dict)
    disk: int = 0

    def flagged(self) -> list[str]:
        """Scenes that failed, are blocked or failed validation, sorted."""
        return [s for s in sorted(self.index) if self.status[s] in FLAGGED]

    def view(self, scene_id: str, number: int) -> SceneView:
        entry = self.index[scene_id]
        return SceneView(
            scene_id=scene_id,
            number=number,
            split=str(entry.get("split", "?")),
            n_frames=len(entry.get("frames", [])),
            status=self.status[scene_id],
            states=self.states[scene_id],
            validation_failures=self.validation_failures(scene_id),
        )

    def validation_failures(self, scene_id: str) -> list[dict[str, Any]]:
        found = self.validation.get("failures", {}).get(scene_id, [])
        return [f for f in found if isinstance(f, dict)]

    def repair_command(self) -> str:
        return f"trainset focus validate --out-root {shlex.quote(str(self.out_root))} --requeue"


def _gather(out_root: Path, log: TextIO) -> _Facts:
    """Read the small files of the whole data set (one ``metadata.json`` per scene)."""
    from trainset.focus.stages import FOCUS_STAGES  # imports the stages' run functions

    index = read_scene_index(out_root)

    validation_file = out_root / REPORT_FILE
    validation = read_optional_json(validation_file)
    rejected = read_optional_json(out_root / LOGS_DIR / REJECTED_LOG)
    coc_stats = read_optional_json(out_root / STATS_FILE)
    facts = _Facts(
        out_root=out_root,
        index=index,
        states=stage_states(out_root, sorted(index), FOCUS_STAGES),
        validation=validation if isinstance(validation, dict) else {},
        validation_time=(
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(validation_file.stat().st_mtime))
            if isinstance(validation, dict)
            else ""
        ),
        rejected=rejected if isinstance(rejected, dict) else {},
        config=read_config(out_root),
        coc_stats=coc_stats if isinstance(coc_stats, dict) else None,
        params={"f_mm": [], "N": [], "S_focus_m": []},
    )
    with Progress(len(index), "report: metadata and disk use", stream=log) as bar:
        for scene_id in sorted(index):
            meta = read_optional_json(metadata_path(out_root, scene_id))
            for entry in parameter_sets(meta):
                facts.params["f_mm"].append(entry["f"] * 1e3)
                facts.params["N"].append(entry["N"])
                facts.params["S_focus_m"].append(entry["S_focus"])
            facts.disk += disk_bytes(out_root / scene_id)
            bar.update(1, scene_id)
    for path in out_root.iterdir():  # index, config, logs, ...
        if path.name not in index:
            facts.disk += disk_bytes(path) if path.is_dir() else path.lstat().st_size
    invalid = set(facts.validation.get("failed_scenes", []))
    for scene_id, states in facts.states.items():
        status = scene_status(states)
        facts.status[scene_id] = "invalid" if status == "done" and scene_id in invalid else status
    return facts


def _section_summary(facts: _Facts) -> Html:
    ids = sorted(facts.index)
    by_status = {s: [i for i in ids if facts.status[i] == s] for s in SCENE_STATUSES}
    bad = len(by_status["failed"]) + len(by_status["blocked"]) + len(by_status["invalid"])
    if bad:
        verdict = tag(
            "div",
            f"FAIL: {bad} of {len(ids)} scenes failed or are blocked. After fixing their inputs, "
            f"repair with: {facts.repair_command()}",
            cls="verdict fail",
        )
    elif by_status["pending"]:
        verdict = tag(
            "div",
            f"INCOMPLETE: {len(by_status['pending'])} of {len(ids)} scenes have stages not run "
            "yet (see the table of stages)",
            cls="verdict note",
        )
    elif not facts.validation:
        verdict = tag(
            "div",
            "Every stage done; not validated yet: trainset focus validate --out-root "
            f"{shlex.quote(str(facts.out_root))}",
            cls="verdict note",
        )
    else:
        verdict = tag("div", f"PASS: all {len(ids)} scenes done and valid", cls="verdict pass")
    frames = sum(len(e.get("frames", [])) for e in facts.index.values())
    splits = {name: 0 for name in ("train", "val", "test")}
    for entry in facts.index.values():
        if entry.get("split") in splits:
            splits[entry["split"]] += 1
    labels = _section(facts.config, "labels")
    renders = _section(facts.config, "renders")
    max_coc = facts.config.get("max_coc", labels.get("max_coc"))
    rows: list[tuple[Any, Any]] = [
        (
            "scenes",
            join(
                [f"{len(ids)}: "]
                + [
                    join([badge(s), f" {len(by_status[s])}  "])
                    for s in SCENE_STATUSES
                    if by_status[s] or s in ("done", "failed", "blocked")
                ]
            ),
        ),
        ("rejected by the index", f"{len(facts.rejected)} (listed below)" if facts.rejected else 0),
        ("frames", frames),
        ("splits", ", ".join(f"{k} {v}" for k, v in splits.items())),
        ("disk", _size_text(facts.disk)),
        (
            "max_coc",
            f"{max_coc:.6g} m = {max_coc * 1e3:.4g} mm on the sensor"
            if isinstance(max_coc, (int, float))
            else "not set (run `trainset focus render --max-coc ...`)",
        ),
        ("coc_model", labels.get("coc_model", "-")),
        ("parameter sets per scene", labels.get("n_sets", "-")),
        ("renderer", renders.get("renderer", "-")),
        ("validation", _validation_text(facts)),
        ("repair command", tag("code", facts.repair_command())),
    ]
    stage_rows = []
    for stage_name in next(iter(facts.states.values()), {}):
        counts = {s: 0 for s in STATUSES}
        for scene_id in ids:
            counts[facts.states[scene_id][stage_name].status] += 1
        stage_rows.append([stage_name, *(counts[s] for s in STATUSES)])
    return join(
        [
            verdict,
            key_values(rows),
            tag("h3", "Stages"),
            table(["stage", *STATUSES], stage_rows),
            _problems(facts),
        ]
    )


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """Section ``name`` of ``config.yaml`` (empty when absent or not a mapping)."""
    section = config.get(name)
    return section if isinstance(section, dict) else {}


def _validation_text(facts: _Facts) -> str:
    if not facts.validation:
        return "no validation report yet (trainset focus validate)"
    v = facts.validation
    failed = v.get("failed_scenes", [])
    verdict = "PASS" if not failed else f"FAIL ({len(failed)} scenes)"
    return (
        f"{verdict}: {v.get('passing_scenes')}/{v.get('total_scenes')} scenes pass "
        f"({REPORT_FILE}, written {facts.validation_time})"
    )


def _rerun(facts: _Facts, scene_id: str) -> str:
    """Stages to re-run for a scene: validation's list, else the failed and blocked stages."""
    listed = facts.validation.get("rerun_stages", {}).get(scene_id)
    if isinstance(listed, list) and listed:
        return ", ".join(str(s) for s in listed)
    states = facts.states[scene_id]
    return ", ".join(n for n, s in states.items() if s.status in ("failed", "blocked"))


def _problems(facts: _Facts) -> Html:
    rows = []
    for scene_id in facts.flagged():
        states = facts.states[scene_id]
        failed = [f"{n}: {s.reason}" for n, s in states.items() if s.status == "failed"]
        blocked = [n for n, s in states.items() if s.status == "blocked"]
        rows.append(
            [
                tag("a", scene_id, href=f"#scene-{scene_id}"),
                badge(facts.status[scene_id]),
                join(
                    [
                        tag("div", "\n".join(failed), cls="reason"),
                        validation_details(facts.validation_failures(scene_id)),
                    ]
                ),
                ", ".join(blocked) or "-",
                _rerun(facts, scene_id),
            ]
        )
    parts: list[Any] = []
    if rows:
        parts += [
            tag("h3", "Failed and blocked scenes"),
            table(["scene", "status", "reason", "blocked stages", "stages to re-run"], rows),
        ]
    if facts.rejected:
        parts += [
            tag("h3", f"Rejected by the index ({REJECTED_LOG})"),
            table(
                ["scene", "reason"],
                [[s, tag("div", r, cls="reason")] for s, r in sorted(facts.rejected.items())],
            ),
        ]
    return join(parts)


def _size_text(n_bytes: int) -> str:
    """Bytes in kB, MB or GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes} B"


def _section_distributions(page: ReportPage, facts: _Facts) -> Html:
    parts: list[Any] = [tag("h2", "Distributions")]
    stats = facts.coc_stats
    plot = facts.out_root / PLOT_FILE
    if stats is not None:
        rows = [
            [f"p{q}", f"{stats[f'p{q}']:.6g} m", f"{stats[f'p{q}'] * 1e3:.4g} mm"]
            for q in (50, 90, 95, 99)
            if isinstance(stats.get(f"p{q}"), (int, float))
        ]
        parts.append(table(["CoC percentile", "sensor m", "sensor mm"], rows))
    try:
        parts.append(page.image("coc_histogram.png", plot.read_bytes(), alt="CoC histogram"))
    except Exception as exc:  # a missing or damaged plot must not stop the report
        parts.append(tag("p", f"no CoC histogram ({PLOT_FILE}: {exc})", cls="missing"))
    if facts.params["f_mm"]:
        parts.append(page.image("parameters.png", _parameter_plot(facts.params), alt="f, N, S"))
    else:
        parts.append(tag("p", "no parameter sets yet (no metadata.json)", cls="missing"))
    return join(parts)


def _parameter_plot(params: Mapping[str, list[float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"f_mm": "f (mm)", "N": "N (f-number)", "S_focus_m": "S_focus (m)"}
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.6), dpi=90)
    for ax, (key, label) in zip(axes, labels.items()):
        ax.hist(params[key], bins=30, color="0.5")
        ax.set_xlabel(label)
    axes[0].set_ylabel("parameter sets")
    fig.suptitle(f"{len(params['f_mm'])} parameter sets over all scenes", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def build_focus_report(
    out_root: str | Path,
    options: FocusReportOptions = FocusReportOptions(),
    *,
    output: str | Path | None = None,
    stream: TextIO | None = None,
) -> FocusReport:
    """Write the report of the data set in ``out_root`` (see the module docstring).

    ``output`` defaults to :func:`trainset.focus.layout.report_path`. Progress goes to
    ``stream`` (stderr by default). Raises InputError when ``out_root`` has no scene index.
    """
    root = Path(out_root)
    if options.scenes < 0 or options.frames < 1:
        raise InputError(
            "scenes must be >= 0 and frames >= 1",
            key="--scenes/--frames",
            expected="scenes >= 0, frames >= 1",
            found=(options.scenes, options.frames),
        )
    page_path = Path(output) if output is not None else report_path(root)
    log = stream if stream is not None else sys.stderr
    facts = _gather(root, log)
    flagged = facts.flagged()
    shown = sample_scenes(sorted(facts.index), flagged, options.scenes, options.seed)
    with ReportPage(page_path, f"Focus data set report: {root}") as page:
        page.add_heading(
            f"Focus data set: {root}",
            "trainset focus report",
            f"{len(shown)} of {len(facts.index)} scenes shown (every failed, blocked or invalid "
            f"scene, plus a sample of {options.scenes} with seed {options.seed}), "
            f"{options.frames} frames each.",
        )
        page.add(_section_summary(facts))
        page.add(_section_distributions(page, facts))
        page.add(tag("h2", "Scenes"))
        with Progress(len(shown), "report: scenes", stream=log) as bar:
            for number, scene_id in enumerate(shown):
                page.add(scene_section(page, root, facts.view(scene_id, number), options.frames))
                bar.update(1, scene_id)
        path = page.publish()
        size = page.published_bytes()
        images = page.n_images
    return FocusReport(path, size, images, len(facts.index), tuple(shown), tuple(flagged))
