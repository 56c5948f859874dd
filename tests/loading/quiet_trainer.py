"""A Lightning ``Trainer`` on the CPU without loggers, checkpoints, bars or summaries (tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def quiet_trainer(tmp_path: Path, **kw: Any) -> Any:
    """``lightning.Trainer(accelerator="cpu", ...)`` writing only under ``tmp_path``."""
    import lightning

    return lightning.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )
