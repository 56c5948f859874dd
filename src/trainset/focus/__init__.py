"""FocusMamba data: sharp frames, metric depth, CoC calibration, defocus renders, focus maps.

The pipeline from Python: ``trainset.focus.run(RunConfig(raw_root, out_root, ...))`` (what
`trainset focus run` calls; :mod:`trainset.focus.steps`). Both names are imported on first use,
so importing the package stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunConfig", "run"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from trainset.focus.steps import run

        return run
    if name == "RunConfig":
        from trainset.focus.config import RunConfig

        return RunConfig
    raise AttributeError(f"module 'trainset.focus' has no attribute {name!r}")
