"""The focus pipeline's scene stages, registered by name for the runner and the CLI."""

from __future__ import annotations

from trainset.focus.deblur import SHARP_DIR, run_deblur_scene
from trainset.focus.depth import DEPTH_DIR, run_depth_scene
from trainset.pipeline.stage import Stage, register_stage

DEBLUR = register_stage(
    Stage(name="deblur", version=1, sentinel_dir=SHARP_DIR, requires=(), run=run_deblur_scene)
)
DEPTH = register_stage(
    Stage(
        name="depth", version=1, sentinel_dir=DEPTH_DIR, requires=("deblur",), run=run_depth_scene
    )
)
