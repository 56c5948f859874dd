"""The parameters of every focus stage, with their defaults, in one place.

Each stage's parameters are a frozen dataclass whose fields are command-line options
(:func:`trainset.cli_tools.option`): the stage's own command (``trainset focus depth``) and
``trainset focus run`` both take them from here, so every option of a stage is reachable from
``run`` by construction. ``stage_params()`` gives the mapping a stage's sentinel is hashed from
(the same mapping the stage commands always wrote, so existing outputs stay current).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainset.cli_tools import option
from trainset.errors import InputError
from trainset.focus.optics import (
    COC_MODELS,
    DEFAULT_FOCUS_RANGE,
    DEFAULT_N_SETS,
    DEFAULT_SENSOR_WIDTH_M,
    FOCUS_RANGES,
)

# The plan's defaults (focus-pipeline-plan.md, Phases 1 and 4).
DEFAULT_MIN_FRAMES = 16  # minimum frames per scene
DEFAULT_SPLIT_SEED = 42  # seed of assign_splits
DEFAULT_SAMPLE_FRACTION = 0.2  # fraction of scenes calibration reads
# The plan's sanity bounds on median depth: indoor 2-5 m, outdoor 5-50 m (scenes carry no
# indoor/outdoor label, so the default accepts the union 2-50 m).
DEFAULT_MEDIAN_RANGE_M = (2.0, 50.0)
# The plan's temporal-consistency threshold on mean|d[t+1]-d[t]| / mean(d[t]).
DEFAULT_CONSISTENCY_THRESHOLD = 0.15
# A frame needs at least this fraction of valid (measured, finite, positive, in range) pixels,
# or its scene fails: holes are filled with the scene median, and a frame more than half filled
# would give labels and renders of a made-up flat surface. Kinect-style sensors measure ~88-91 %
# of a frame (7-Scenes); a lens cap or a blank frame measures nothing.
DEFAULT_MIN_VALID_FRACTION = 0.5
# Frames below this fraction of their scene's median sharpness are flagged (a warning log).
DEFAULT_SHARPNESS_RATIO = 0.25


@dataclass(frozen=True)
class IndexConfig:
    """Phase 1: which raw scenes are kept and how they are split."""

    min_frames: int = option(DEFAULT_MIN_FRAMES, "--min-frames", "minimum frames per scene")
    seed: int = option(DEFAULT_SPLIT_SEED, "--seed", "split seed, as the plan's assign_splits")


@dataclass(frozen=True)
class DeblurConfig:
    """Phase 2: the sharp frames."""

    backend: str = option(
        "passthrough",
        "--backend",
        "passthrough | unsharp | genfocus (GenFocus DeblurNet; docs/focus-genfocus.md)",
        run_flag="--deblur-backend",
    )
    options: tuple[tuple[str, str], ...] = option(
        (),
        "--backend-option",
        "deblur backend option (repeat), e.g. genfocus flux_dir=PATH lora=PATH",
        run_flag="--deblur-option",
        kind="kv",
    )
    sharpness_ratio: float = option(
        DEFAULT_SHARPNESS_RATIO,
        "--sharpness-ratio",
        "flag frames below this fraction of their scene's median sharpness",
    )

    def stage_params(self) -> dict[str, Any]:
        """The deblur stage's parameters (its sentinel hash); building the backend to get its
        parameters loads no weights."""
        from trainset.focus.deblur import make_deblur_backend

        if not 0 < self.sharpness_ratio < 1:
            raise InputError(
                "sharpness ratio must be in (0, 1)",
                key="--sharpness-ratio",
                expected="0 < r < 1",
                found=self.sharpness_ratio,
            )
        options = dict(self.options)
        backend = make_deblur_backend(self.backend, **options)
        return {
            "backend": self.backend,
            "options": options,
            "backend_params": backend.params(),
            "sharpness_ratio": self.sharpness_ratio,
        }


@dataclass(frozen=True)
class DepthConfig:
    """Phase 3: metric depth and its checks."""

    backend: str = option("provided", "--backend", "provided | vda", run_flag="--depth-backend")
    checkpoint: str | None = option(None, "--checkpoint", "model checkpoint (vda)", type=Path)
    encoder: str | None = option(
        None,
        "--encoder",
        "vda model size (default: inferred from the checkpoint)",
        type=str,
        choices=("vits", "vitb", "vitl"),
    )
    input_size: int | None = option(
        None, "--input-size", "vda: short side fed to the model, multiple of 14 (518)", type=int
    )
    device: str | None = option(
        None, "--device", "vda: auto (default), cpu, cuda, cuda:N", type=str
    )
    depth_scale: float | None = option(
        None,
        "--depth-scale",
        "provided: units per metre of integer depth (16-bit PNG, integer .npy; 1000 = mm)",
        type=float,
    )
    depth_invalid: str | None = option(
        None,
        "--depth-invalid",
        "provided: integer depth values meaning 'no measurement', e.g. 0,65535, or none "
        "(default: 0 and the dtype's maximum)",
        type=str,
        metavar="CODES",
    )
    depth_range: str | None = option(
        None,
        "--depth-range",
        "provided: metres outside which depth is 'no measurement' (default 0.001,10000; "
        "e.g. 0.3,8 for a Kinect)",
        type=str,
        metavar="MIN,MAX",
    )
    min_valid_fraction: float = option(
        DEFAULT_MIN_VALID_FRACTION,
        "--min-valid-fraction",
        "a scene fails when a frame has fewer valid depth pixels than this fraction; holes are "
        "filled with the scene median",
    )
    median_range: tuple[float, float] = option(
        DEFAULT_MEDIAN_RANGE_M,
        "--median-range",
        "median depth outside this range (m) is logged as a sanity warning",
        type=float,
        kind="pair",
        metavar=("LOW", "HIGH"),
    )
    consistency_threshold: float = option(
        DEFAULT_CONSISTENCY_THRESHOLD,
        "--consistency-threshold",
        "flag scenes where mean|d[t+1]-d[t]|/mean(d[t]) exceeds this",
    )
    options: tuple[tuple[str, str], ...] = option(
        (),
        "--backend-option",
        "depth backend option (repeat)",
        run_flag="--depth-option",
        kind="kv",
    )

    def backend_options(self) -> dict[str, Any]:
        """The options the backend is built with (those given, as the backend takes them)."""
        options: dict[str, Any] = dict(self.options)
        named = {
            "checkpoint": self.checkpoint,
            "depth_scale": self.depth_scale,
            "invalid_codes": self.depth_invalid,
            "depth_range": self.depth_range,
            "encoder": self.encoder,
            "input_size": self.input_size,
            "device": self.device,
        }
        options.update({k: v for k, v in named.items() if v is not None})
        return options

    def stage_params(self) -> dict[str, Any]:
        """The depth stage's parameters (its sentinel hash); the backend is built from its
        options without loading a model."""
        from trainset.focus.depth import depth_backend_for

        low, high = self.median_range
        if not 0 < low < high:
            raise InputError(
                "median range must be 0 < LOW < HIGH",
                key="--median-range",
                expected="0 < LOW < HIGH",
                found=(low, high),
            )
        if not 0 < self.min_valid_fraction <= 1:
            raise InputError(
                "minimum valid fraction must be in (0, 1]",
                key="--min-valid-fraction",
                expected="0 < f <= 1",
                found=self.min_valid_fraction,
            )
        base = {"backend": self.backend, "options": self.backend_options()}
        backend = depth_backend_for(base)
        return {
            **base,
            "backend_params": backend.params(),
            "median_range_m": [low, high],
            "consistency_threshold": self.consistency_threshold,
            "min_valid_fraction": self.min_valid_fraction,
        }


@dataclass(frozen=True)
class LensConfig:
    """The (f, N, S_focus) parameter sets: shared by calibrate and render, which must agree."""

    sets: int = option(DEFAULT_N_SETS, "--sets", "(f, N, S_focus) parameter sets per scene")
    coc_model: str = option(
        "plan",
        "--coc-model",
        "CoC formula: plan f^2/(N*S) (as the dataloader) or thin_lens f^2/(N*(S-f))",
        choices=COC_MODELS,
    )
    focus_range: str = option(
        DEFAULT_FOCUS_RANGE,
        "--focus-range",
        "depth range S_focus is drawn in: minmax = the plan's d_min..d_max, p5-p95 = "
        "d_p5..d_p95 of depth_maps/stats.json (robust to stray far pixels)",
        choices=tuple(FOCUS_RANGES),
    )


@dataclass(frozen=True)
class CalibrateConfig:
    """Phase 4: the CoC distribution and the recommended max_coc."""

    sample_fraction: float = option(
        DEFAULT_SAMPLE_FRACTION,
        "--sample-fraction",
        "fraction of the scenes with depth read, chosen by sha256 of the id (plan: 0.2)",
    )
    output_stats: str | None = option(
        None, "--output-stats", "statistics file (default logs/coc_stats.json)", type=Path
    )
    output_plot: str | None = option(
        None, "--output-plot", "histogram plot (default logs/coc_histogram.png)", type=Path
    )


@dataclass(frozen=True)
class RenderConfig:
    """Phase 5: the renderer of the defocus images (the focus maps need only the lens sets)."""

    renderer: str = option(
        "layered",
        "--renderer",
        "defocus renderer: layered (physically based, torch) or genfocus (GenFocus BokehNet; "
        "docs/focus-genfocus.md)",
    )
    renderer_options: tuple[tuple[str, str], ...] = option(
        (),
        "--renderer-option",
        "renderer option (repeat). layered: hidden=extend|none, highlight_gain=G (1 = off; e.g. "
        "12: clipped lights make bokeh discs), highlight_threshold=, layer_step_px=, "
        "max_layers=; genfocus: flux_dir=, lora=, steps=, long_side=, tiled=, device=, ...",
        kind="kv",
    )
    sensor_width: float = option(
        DEFAULT_SENSOR_WIDTH_M * 1e3, "--sensor-width", "sensor width in mm for CoC in pixels"
    )


def labels_and_renders_params(
    max_coc: float, lens: LensConfig, render: RenderConfig
) -> dict[str, dict[str, Any]]:
    """Parameters of the ``labels`` and ``renders`` stages (their sentinel hashes) for a
    resolved ``max_coc`` (sensor metres)."""
    from trainset.focus.labels import labels_params
    from trainset.focus.renders import renders_params

    return {
        "labels": labels_params(
            max_coc, n_sets=lens.sets, coc_model=lens.coc_model, focus_range=lens.focus_range
        ),
        "renders": renders_params(
            max_coc,
            n_sets=lens.sets,
            coc_model=lens.coc_model,
            focus_range=lens.focus_range,
            sensor_width_m=render.sensor_width / 1000.0,
            renderer=render.renderer,
            renderer_options=dict(render.renderer_options) or None,
        ),
    }


@dataclass(frozen=True)
class RunConfig:
    """Everything `trainset focus run` needs: the roots, the gate and every stage's config."""

    raw_root: Path
    out_root: Path
    max_coc: str | None = None
    workers: int = 1
    index: IndexConfig = IndexConfig()
    deblur: DeblurConfig = DeblurConfig()
    depth: DepthConfig = DepthConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    lens: LensConfig = LensConfig()
    render: RenderConfig = RenderConfig()

    def stages(self) -> dict[str, Any]:
        """The stage configs by the prefix their options take in `focus run`."""
        return {
            "index": self.index,
            "deblur": self.deblur,
            "depth": self.depth,
            "calibrate": self.calibrate,
            "lens": self.lens,
            "render": self.render,
        }
