"""Scene stage ``renders``: defocus renders (``bokeh_renders/``) with a renderer.

``run_renders(out_root, scene_id, params)`` follows the ``Stage.run`` signature; ``params`` are
the labels parameters (``max_coc``, ``n_sets``, ``coc_model``) plus ``sensor_width_m`` (default
0.036), ``renderer`` (``layered`` or ``genfocus``) and ``renderer_options`` (as given, e.g. by
``--renderer-option``); the checked parameters add the renderer's record
(:func:`trainset.focus.render.renderer_record`: ``renderer_version`` and ``renderer_params``,
every option resolved). The lens settings are the scene's own sets (the same as the focus
maps'); the CoC of each pixel in pixels is ``c_m * width_px / sensor_width_m``. It also writes
the record to ``metadata.json`` (for genfocus also K and the working size of each set,
``renderer_sets``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainset.errors import InputError
from trainset.focus.labels import (
    base_metadata,
    labels_params,
    remove_extra_outputs,
    scene_sets,
    write_metadata,
)
from trainset.focus.layout import (
    BOKEH_DIR,
    bokeh_path,
    depth_frame_count,
    depth_path,
    frame_path,
)
from trainset.focus.optics import (
    DEFAULT_FOCUS_RANGE,
    DEFAULT_N_SETS,
    DEFAULT_SENSOR_WIDTH_M,
    coc_px_per_disparity,
    signed_coc_px,
)
from trainset.store import atomic_write_png, read_npz_array, read_png

RENDERS_STAGE = "renders"
# 1: renderer layered v1; 2: layered v2 (hidden content, tent layers add up): renders change.
RENDERS_VERSION = 2


def renders_params(
    max_coc: float,
    *,
    n_sets: int = DEFAULT_N_SETS,
    coc_model: str = "plan",
    focus_range: str = DEFAULT_FOCUS_RANGE,
    sensor_width_m: float = DEFAULT_SENSOR_WIDTH_M,
    renderer: str = "layered",
    renderer_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Checked parameters of the renders stage (all of them shape the output): the given
    ``renderer_options`` and the renderer's record with every option resolved (building the
    renderer to get it loads no weights and touches no GPU)."""
    # torch is imported only here and in run_renders, so that loading the stage registry
    # stays light (the runner forks its workers when torch is not loaded).
    from trainset.focus.render import make_renderer, renderer_record

    if not 1e-3 <= sensor_width_m <= 0.1:
        raise InputError(
            "sensor width out of range (metres)",
            key="sensor_width",
            expected="0.001..0.1 m (full frame 0.036)",
            found=sensor_width_m,
        )
    options = dict(renderer_options or {})
    return {
        **labels_params(max_coc, n_sets=n_sets, coc_model=coc_model, focus_range=focus_range),
        "sensor_width_m": float(sensor_width_m),
        "renderer_options": options,
        **renderer_record(make_renderer(renderer, **options)),
    }


def _given_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The renderer options of stage ``params``; parameters recorded by renders version 1 kept
    the layered renderer's ``layer_step_px`` and ``max_layers`` beside the renderer."""
    options = dict(params.get("renderer_options") or {})
    if params.get("renderer", "layered") == "layered":
        for key in ("layer_step_px", "max_layers"):
            if key in params:
                options.setdefault(key, params[key])
    return options


def run_renders(out_root: Path, scene_id: str, params: Mapping[str, Any]) -> dict[str, int]:
    """Render every set and frame of one scene to ``bokeh_renders/set_XX/bokeh_XXXX.png``.

    Returns counts ``{frames, sets, renders}``.
    """
    out_root = Path(out_root)
    checked = renders_params(
        float(params["max_coc"]),
        n_sets=int(params.get("n_sets", DEFAULT_N_SETS)),
        coc_model=str(params.get("coc_model", "plan")),
        focus_range=str(params.get("focus_range", DEFAULT_FOCUS_RANGE)),
        sensor_width_m=float(params.get("sensor_width_m", DEFAULT_SENSOR_WIDTH_M)),
        renderer=str(params.get("renderer", "layered")),
        renderer_options=_given_options(params),
    )
    from trainset.focus.render import make_renderer, renderer_record

    sets = scene_sets(out_root, scene_id, checked)
    n_frames = depth_frame_count(out_root, scene_id)
    renderer = make_renderer(checked["renderer"], **checked["renderer_options"])
    frame_shape: tuple[int, int] | None = None
    for t in range(n_frames):
        image = read_png(frame_path(out_root, scene_id, t))
        frame_shape = (int(image.shape[0]), int(image.shape[1]))
        depth = read_npz_array(depth_path(out_root, scene_id, t), "depth").astype(np.float32)
        if depth.shape != image.shape[:2]:
            raise InputError(
                "depth map and sharp frame differ in size",
                file=depth_path(out_root, scene_id, t),
                key="depth",
                expected=f"(H, W) = {image.shape[:2]} as in frame_{t:04d}.png",
                found=depth.shape,
            )
        for set_idx, lens in enumerate(sets):
            coc = signed_coc_px(
                depth,
                lens["f"],
                lens["N"],
                lens["S_focus"],
                image.shape[1],
                sensor_width_m=checked["sensor_width_m"],
                coc_model=checked["coc_model"],
            )
            atomic_write_png(
                bokeh_path(out_root, scene_id, set_idx, t), renderer.render(image, coc)
            )
    remove_extra_outputs(out_root / scene_id / BOKEH_DIR, len(sets), n_frames, "bokeh", ".png")
    record = {
        **base_metadata(scene_id, sets, checked, n_frames),
        **renderer_record(renderer),
        "sensor_width_m": checked["sensor_width_m"],
    }
    set_record = getattr(renderer, "set_record", None)
    if set_record is not None and frame_shape is not None:
        record["renderer_sets"] = [
            set_record(
                frame_shape,
                coc_px_per_disparity(
                    lens["f"],
                    lens["N"],
                    lens["S_focus"],
                    frame_shape[1],
                    sensor_width_m=checked["sensor_width_m"],
                    coc_model=checked["coc_model"],
                ),
            )
            for lens in sets
        ]
    write_metadata(out_root, scene_id, record, keep_render=False)
    return {"frames": n_frames, "sets": len(sets), "renders": n_frames * len(sets)}
