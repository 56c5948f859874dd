"""One scene of the focus report: a strip of thumbnails per frame, depth statistics, warnings
and failure reasons (used by :mod:`trainset.focus.report`).

Each strip row is: sharp frame | depth (colour, log scale, near = red, scale bar in metres) |
for each parameter set its focus map (white = in focus, with its mean) and its render. The
arrays of one frame are read, turned into thumbnails and dropped before the next frame; a file
that is missing or damaged is named in its cell instead of an image.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainset.errors import InputError
from trainset.focus.deblur import SHARPNESS_WARNINGS
from trainset.focus.depth import CONSISTENCY_LOG, PATCH_LOG, SANITY_LOG
from trainset.focus.labels import WARNINGS_LOG
from trainset.focus.layout import (
    bokeh_path,
    depth_path,
    depth_stats_path,
    focus_path,
    frame_path,
    metadata_path,
)
from trainset.pipeline.dataset_files import read_scene_log
from trainset.pipeline.scene_state import StageState
from trainset.store import read_json, read_npz_array
from trainset.store.report_page import Html, ReportPage, join, table, tag, thumbnail_jpeg

# Depth colour map (near = its red end); the scale bar is drawn from the same map in CSS.
DEPTH_CMAP = "turbo"
# Per-scene warning logs shown under each scene: (label, log name of the stage that writes it).
WARNING_LOGS = (
    ("depth sanity", SANITY_LOG),
    ("depth consistency", CONSISTENCY_LOG),
    ("focus-map mean", WARNINGS_LOG),
    ("sharpness", SHARPNESS_WARNINGS),
)
BADGE_COLOURS = {
    "done": "#dff3df",
    "failed": "#fbe1e1",
    "blocked": "#fde7c8",
    "pending": "#e8e8e8",
    "invalid": "#fbe1e1",
}
DEPTH_STATS = ("d_min", "d_p5", "d_median", "d_p95", "d_max")


@dataclass(frozen=True)
class SceneView:
    """What the report knows about a scene before reading its arrays."""

    scene_id: str
    number: int  # position in the report; names the scene's images
    split: str
    n_frames: int
    status: str  # done | failed | blocked | pending | invalid (stages done, validation failed)
    states: Mapping[str, StageState]
    validation_failures: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


def badge(status: str) -> Html:
    """A coloured status label."""
    return tag("span", status, cls="badge", style=f"background:{BADGE_COLOURS[status]}")


def read_optional_json(path: Path) -> Any:
    """A JSON file, or None when it is missing or unreadable (the report shows what exists)."""
    try:
        return read_json(path) if path.is_file() else None
    except InputError:
        return None


def parameter_sets(meta: Any) -> list[dict[str, float]]:
    """The ``{f, N, S_focus}`` sets of a ``metadata.json`` with numbers (others skipped)."""
    sets = meta.get("sets") if isinstance(meta, dict) else None
    keys = ("f", "N", "S_focus")
    return [
        {k: float(s[k]) for k in keys}
        for s in (sets if isinstance(sets, list) else [])
        if isinstance(s, dict) and all(isinstance(s.get(k), (int, float)) for k in keys)
    ]


def validation_details(failures: Sequence[Mapping[str, Any]]) -> Html:
    """A scene's validation failures, folded (``<details>``) under their count."""
    lines = [f"{f.get('stage')}: {f.get('reason')}" for f in failures]
    if not lines:
        return Html("")
    summary = tag("summary", f"validation: {len(lines)} problem(s)")
    return tag("details", join([summary, tag("div", "\n".join(lines), cls="reason")]))


def depth_lut() -> np.ndarray:
    """(256, 3) uint8 colours of :data:`DEPTH_CMAP`."""
    import matplotlib

    colours = matplotlib.colormaps[DEPTH_CMAP](np.linspace(0, 1, 256))[:, :3]
    return (colours * 255).astype(np.uint8)


def depth_colours(depth_m: np.ndarray, lo_m: float, hi_m: float, lut: np.ndarray) -> np.ndarray:
    """(H, W) depth in metres -> (H, W, 3) uint8 on a log scale: ``lo_m`` (near) and closer get
    the last LUT colour, ``hi_m`` (far) and beyond the first."""
    lo = max(lo_m, 1e-6)
    hi = max(hi_m, lo * 1.0001)
    d = np.clip(np.nan_to_num(depth_m.astype(np.float32), nan=hi, posinf=hi, neginf=lo), lo, hi)
    x = (np.log(hi) - np.log(d)) / (np.log(hi) - np.log(lo))
    return lut[np.round(x * (len(lut) - 1)).astype(np.intp)]


def _scale_bar(lo_m: float, hi_m: float, lut: np.ndarray) -> Html:
    """The depth colour scale in CSS (no image): near at the left, with min, mid, max in m."""
    picks = [lut[round(i * (len(lut) - 1) / 8)] for i in range(8, -1, -1)]
    stops = ",".join("#{:02x}{:02x}{:02x}".format(*c) for c in picks)
    mid = float(np.sqrt(max(lo_m, 1e-6) * max(hi_m, 1e-6)))
    labels = join([tag("span", f"{v:.3g} m") for v in (lo_m, mid, hi_m)])
    return join(
        [
            tag("div", "", cls="scale", style=f"background:linear-gradient(to right,{stops})"),
            tag("div", labels, cls="scalelabels"),
        ]
    )


def _tile(
    page: ReportPage,
    name: str,
    path: Path,
    root: Path,
    load: Callable[[Path], np.ndarray],
    alt: str,
    caption: Callable[[np.ndarray], str] | None = None,
) -> Html:
    """A thumbnail of ``load(path)``, or a note saying why there is none."""
    if not path.exists():
        return tag("div", f"missing: {path.relative_to(root)}", cls="missing")
    try:
        image = load(path)
    except Exception as exc:  # a damaged file is shown as such, never as a broken image
        problem = f"unreadable ({type(exc).__name__}: {exc}): {path.relative_to(root)}"
        return tag("div", problem, cls="missing")
    note = tag("div", caption(image)) if caption else Html("")
    return join([page.image(name, thumbnail_jpeg(_as_uint8(image)), alt=alt), note])


def _as_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 as it is; a [0, 1] map (focus) scaled to 0..255."""
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image.astype(np.float32), 0, 1) * 255).astype(np.uint8)


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _focus_mean(focus: np.ndarray) -> str:
    return f"mean {float(focus.astype(np.float32).mean()):.2f}"


def _warnings(root: Path, scene_id: str) -> Html:
    """The scene's lines of each warning log, each log folded under its count."""
    logs = [
        (label, read_scene_log(root, log, scene_id).splitlines()) for label, log in WARNING_LOGS
    ]
    patched = [
        f"{row.get('frame')}: {row.get('nan')} NaN, {row.get('inf')} Inf, "
        f"{row.get('nonpositive')} non-positive, {row.get('clamped')} clamped "
        f"(filled with {row.get('fill_m')} m)"
        for row in csv.DictReader(io.StringIO(read_scene_log(root, PATCH_LOG, scene_id)))
    ]
    logs.append(("depth pixels patched (NaN patches)", patched))
    return join(
        [
            tag(
                "details",
                join(
                    [
                        tag("summary", f"{label}: {len(lines)} warning(s)"),
                        tag("pre", "\n".join(lines)),
                    ]
                ),
            )
            for label, lines in logs
            if lines
        ]
    )


def _depth_range(stats: Any) -> tuple[float, float] | None:
    if isinstance(stats, dict) and all(isinstance(stats.get(k), (int, float)) for k in DEPTH_STATS):
        return float(stats["d_min"]), float(stats["d_max"])
    return None


def _strip(
    page: ReportPage,
    root: Path,
    view: SceneView,
    picks: list[int],
    sets: list[dict[str, float]],
    depth_range: tuple[float, float] | None,
) -> Html:
    lut = depth_lut()
    if depth_range is None:
        scale: Any = "each frame's own range (no depth_maps/stats.json)"

        def depth_tile(p: Path) -> np.ndarray:
            depth = read_npz_array(p, "depth").astype(np.float32)
            return depth_colours(depth, float(np.nanmin(depth)), float(np.nanmax(depth)), lut)
    else:
        scale = _scale_bar(*depth_range, lut)

        def depth_tile(p: Path) -> np.ndarray:
            return depth_colours(read_npz_array(p, "depth"), *depth_range, lut)

    head = [tag("th", "frame"), tag("th", "sharp frame"), tag("th", join(["depth", scale]))]
    sub = [tag("th", ""), tag("th", ""), tag("th", "log scale, near = red")]
    for s, p in enumerate(sets):
        caption = (
            f"set {s:02d}: f {p['f'] * 1e3:.1f} mm · N {p['N']:.2f} · S_focus {p['S_focus']:.3g} m"
        )
        head.append(tag("th", caption, colspan=2))
        sub += [tag("th", "focus map (white = sharp)"), tag("th", "render")]
    rows = [tag("tr", join(head)), tag("tr", join(sub))]
    scene, name = view.scene_id, f"s{view.number:04d}"
    for t in picks:
        cells = [
            Html(f"{t:04d}"),
            _tile(page, f"{name}_t{t:04d}_frame.jpg", frame_path(root, scene, t), root, _read_rgb, f"{scene} frame {t}"),
            _tile(page, f"{name}_t{t:04d}_depth.jpg", depth_path(root, scene, t), root, depth_tile, f"{scene} depth {t}"),
        ]  # fmt: skip
        for s in range(len(sets)):
            focus = focus_path(root, scene, s, t)
            render = bokeh_path(root, scene, s, t)
            cells += [
                _tile(page, f"{name}_t{t:04d}_set{s:02d}_focus.jpg", focus, root,
                      lambda p: read_npz_array(p, "focus_map"), f"{scene} focus map set {s} frame {t}",
                      caption=_focus_mean),
                _tile(page, f"{name}_t{t:04d}_set{s:02d}_render.jpg", render, root, _read_rgb,
                      f"{scene} render set {s} frame {t}"),
            ]  # fmt: skip
        rows.append(tag("tr", join([tag("td", c) for c in cells])))
    return tag("div", tag("table", join(rows), cls="strip"), cls="scroll")


def pick_frames(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices evenly spaced over ``0..n_frames-1`` (first and last included)."""
    if n_frames <= 0 or k <= 0:
        return []
    if k == 1:
        return [0]
    return sorted({round(i * (n_frames - 1) / (k - 1)) for i in range(k)})


def scene_section(page: ReportPage, root: Path, view: SceneView, frames: int) -> Html:
    """The scene's section: heading with its status, stage states, failure reasons, validation
    problems, depth statistics, warnings and the strip of ``frames`` frames."""
    stats = read_optional_json(depth_stats_path(root, view.scene_id))
    heading = f"{view.scene_id} · split {view.split} · {view.n_frames} frames "
    parts: list[Any] = [
        tag("h3", join([heading, badge(view.status)]), id=f"scene-{view.scene_id}"),
        join([join([f"{name} ", badge(s.status), " "]) for name, s in view.states.items()]),
    ]
    reasons = [
        f"{name} {s.status}: {s.reason}"
        for name, s in view.states.items()
        if s.status in ("failed", "blocked")
    ]
    if reasons:
        parts.append(tag("div", "\n".join(reasons), cls="reason"))
    parts.append(validation_details(view.validation_failures))
    if isinstance(stats, dict):
        values = [stats.get(k) for k in DEPTH_STATS]
        cells = [f"{v:.4g}" if isinstance(v, (int, float)) else "-" for v in values]
        parts.append(table([f"{k} (m)" for k in DEPTH_STATS], [cells]))
    parts.append(_warnings(root, view.scene_id))
    sets = parameter_sets(read_optional_json(metadata_path(root, view.scene_id)))
    picks = pick_frames(view.n_frames, frames)
    parts.append(_strip(page, root, view, picks, sets, _depth_range(stats)))
    return tag("section", join(parts))
