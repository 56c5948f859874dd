"""Which scenes of a focus data set failed or are blocked, and why, read from its files.

Sources: ``logs/rejected_scenes.json`` (scenes the index refused), the stage states of
:mod:`trainset.pipeline.scene_state` (``logs/failures.jsonl`` and the sentinels) and, when asked,
``logs/validation_report.json``. Used at the end of `focus run` and by `focus status`.
"""

from __future__ import annotations

from pathlib import Path

from trainset.focus.index import REJECTED_LOG
from trainset.focus.layout import scene_ids
from trainset.pipeline.dataset_files import LOGS_DIR, safe_text
from trainset.pipeline.scene_state import stage_states
from trainset.store import read_json

VALIDATION_REPORT = Path(LOGS_DIR) / "validation_report.json"


def rejected_scenes(out_root: Path) -> dict[str, str]:
    """``logs/rejected_scenes.json``: scene folder -> why the index refused it (empty if none)."""
    path = Path(out_root) / LOGS_DIR / REJECTED_LOG
    if not path.is_file():
        return {}
    data = read_json(path)
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def problem_lines(out_root: Path, *, with_validation: bool = False) -> list[str]:
    """One line per scene that failed or is blocked: where, why and what is blocked.

    With ``with_validation`` the failures of ``logs/validation_report.json`` are added for scenes
    no stage failed in (a file damaged after its stage finished).
    """
    from trainset.focus.stages import FOCUS_STAGES  # here: imports the stages' run functions

    root = Path(out_root)
    lines = [
        f"{safe_text(name)}: rejected at index: {reason}"
        for name, reason in sorted(rejected_scenes(root).items())
    ]
    ids = scene_ids(root)
    states = stage_states(root, ids, FOCUS_STAGES)
    listed: set[str] = set()
    for scene in ids:
        failed = [(name, st) for name, st in states[scene].items() if st.status == "failed"]
        blocked = [name for name, st in states[scene].items() if st.status == "blocked"]
        if not failed:
            continue  # a blocked stage always has a failed one upstream
        listed.add(scene)
        text = "; ".join(f"{name} failed: {state.reason}" for name, state in failed)
        lines.append(f"{scene}: {text}" + (f" (blocked: {', '.join(blocked)})" if blocked else ""))
    report_path = root / VALIDATION_REPORT
    if with_validation and report_path.is_file():
        report = read_json(report_path)
        reasons = report.get("failure_reasons", {}) if isinstance(report, dict) else {}
        for scene in report.get("failed_scenes", []) if isinstance(report, dict) else []:
            if scene not in listed and scene in ids:
                lines.append(f"{scene}: validation failed: {reasons.get(scene, '?')}")
    return lines
