"""Scene stage ``renders``: defocus renders (``bokeh_renders/``) with the renderer ``layered``.

``run_renders(out_root, scene_id, params)`` follows the ``Stage.run`` signature; ``params`` are
the labels parameters (``max_coc``, ``n_sets``, ``coc_model``) plus ``sensor_width_m`` (default
0.036) and the renderer's record (:func:`trainset.focus.render.renderer_record`: ``renderer``,
``renderer_version``, ``renderer_options`` with every option resolved). The lens settings are
the scene's own sets (the same as the focus maps'); the CoC of each pixel in pixels is
``c_m * width_px / sensor_width_m``. It also writes the renderer's record to ``metadata.json``.
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
from trainset.focus.layout import bokeh_path, depth_frame_count, depth_path, frame_path
from trainset.focus.optics import DEFAULT_N_SETS, DEFAULT_SENSOR_WIDTH_M, signed_coc_px
from trainset.store import atomic_write_png, read_npz_array, read_png

RENDERS_STAGE = "renders"
# 1: renderer layered v1; 2: layered v2 (hidden content, tent layers add up): renders change.
RENDERS_VERSION = 2


def renders_params(
    max_coc: float,
    *,
    n_sets: int = DEFAULT_N_SETS,
    coc_model: str = "plan",
    sensor_width_m: float = DEFAULT_SENSOR_WIDTH_M,
    renderer: str = "layered",
    renderer_options: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """Checked parameters of the renders stage (all of them shape the output); the renderer's
    options are resolved to all of its options, defaults included."""
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
    built = make_renderer(renderer, device="cpu", **dict(renderer_options or {}))
    return {
        **labels_params(max_coc, n_sets=n_sets, coc_model=coc_model),
        "sensor_width_m": float(sensor_width_m),
        **renderer_record(built),
    }


def run_renders(out_root: Path, scene_id: str, params: Mapping[str, Any]) -> dict[str, int]:
    """Render every set and frame of one scene to ``bokeh_renders/set_XX/bokeh_XXXX.png``.

    Returns counts ``{frames, sets, renders}``.
    """
    out_root = Path(out_root)
    checked = renders_params(
        float(params["max_coc"]),
        n_sets=int(params.get("n_sets", DEFAULT_N_SETS)),
        coc_model=str(params.get("coc_model", "plan")),
        sensor_width_m=float(params.get("sensor_width_m", DEFAULT_SENSOR_WIDTH_M)),
        renderer=str(params.get("renderer", "layered")),
        renderer_options=params.get("renderer_options"),
    )
    from trainset.focus.render import make_renderer, renderer_record

    sets = scene_sets(out_root, scene_id, checked)
    n_frames = depth_frame_count(out_root, scene_id)
    renderer = make_renderer(checked["renderer"], **checked["renderer_options"])
    for t in range(n_frames):
        image = read_png(frame_path(out_root, scene_id, t))
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
    remove_extra_outputs(
        out_root / scene_id / "bokeh_renders", len(sets), n_frames, "bokeh", ".png"
    )
    record = {
        **base_metadata(scene_id, sets, checked, n_frames),
        **renderer_record(renderer),
        "sensor_width_m": checked["sensor_width_m"],
    }
    write_metadata(out_root, scene_id, record, keep_render=False)
    return {"frames": n_frames, "sets": len(sets), "renders": n_frames * len(sets)}
