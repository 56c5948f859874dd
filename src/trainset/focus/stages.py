"""The focus pipeline's scene stages, registered by name for the runner and the CLI."""

from __future__ import annotations

from trainset.errors import InputError
from trainset.focus.deblur import run_deblur_scene
from trainset.focus.depth import run_depth_scene
from trainset.focus.labels import LABELS_STAGE, LABELS_VERSION, run_labels
from trainset.focus.layout import BOKEH_DIR, DEPTH_DIR, FOCUS_DIR, SHARP_DIR
from trainset.focus.renders import RENDERS_STAGE, RENDERS_VERSION, run_renders
from trainset.pipeline.stage import Stage, register_stage

DEBLUR = register_stage(
    Stage(name="deblur", version=1, sentinel_dir=SHARP_DIR, requires=(), run=run_deblur_scene)
)
DEPTH = register_stage(
    Stage(
        name="depth", version=1, sentinel_dir=DEPTH_DIR, requires=("deblur",), run=run_depth_scene
    )
)
LABELS = register_stage(
    Stage(
        name=LABELS_STAGE,
        version=LABELS_VERSION,
        sentinel_dir=FOCUS_DIR,
        requires=("depth",),
        run=run_labels,
    )
)
# Renders need sharp frames and depth, not the focus maps: a redone render leaves the labels
# alone and redone labels leave the renders alone (plan, "Error Recovery").
RENDERS = register_stage(
    Stage(
        name=RENDERS_STAGE,
        version=RENDERS_VERSION,
        sentinel_dir=BOKEH_DIR,
        requires=("deblur", "depth"),
        run=run_renders,
    )
)
# The focus pipeline's scene stages in pipeline order (what `focus report` shows).
FOCUS_STAGES = (DEBLUR, DEPTH, LABELS, RENDERS)


def stage_named(name: str) -> Stage:
    """The focus stage called ``name`` (InputError naming the known ones otherwise)."""
    for stage in FOCUS_STAGES:
        if stage.name == name:
            return stage
    raise InputError(
        "unknown focus stage", key=name, expected=[s.name for s in FOCUS_STAGES], found=name
    )
