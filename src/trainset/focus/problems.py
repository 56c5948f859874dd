"""Which scenes of a focus data set failed or are blocked, and why, read from its files.

Sources: ``logs/rejected_scenes.json`` (scenes the index refused), the stage states of
:mod:`trainset.pipeline.state` (``logs/failures.jsonl`` and the sentinels) and, when asked,
``logs/validation_report.json``. Used at the end of `focus run` and by `focus status`.
"""

from __future__ import annotations

from pathlib import Path

from trainset.focus.index import REJECTED_LOG
from trainset.pipeline.dataset_files import LOGS_DIR, safe_text
from trainset.pipeline.runner import scene_ids
from trainset.pipeline.stage import registered_stages
from trainset.pipeline.state import BLOCKED, FAILED, stage_states
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
    from trainset.focus import stages  # noqa: F401  (registers the focus stages)

    root = Path(out_root)
    lines = [
        f"{safe_text(name)}: rejected at index: {reason}"
        for name, reason in sorted(rejected_scenes(root).items())
    ]
    ids = scene_ids(root)
    states = stage_states(root, ids, registered_stages())
    listed: set[str] = set()
    for scene in ids:
        failed = [(name, st) for name, by in states.items() if (st := by[scene]).status == FAILED]
        blocked = [name for name, by in states.items() if by[scene].status == BLOCKED]
        if not failed and not blocked:
            continue
        listed.add(scene)
        if failed:
            name, state = failed[0]
            text = f"{scene}: {name} failed: {state.reason}"
        else:
            cause = states[blocked[0]][scene]
            text = f"{scene}: {cause.stage} failed: {cause.reason}"
        if blocked:
            text += f" (blocked: {', '.join(blocked)})"
        lines.append(text)
    report_path = root / VALIDATION_REPORT
    if with_validation and report_path.is_file():
        report = read_json(report_path)
        reasons = report.get("failure_reasons", {}) if isinstance(report, dict) else {}
        for scene in report.get("failed_scenes", []) if isinstance(report, dict) else []:
            if scene not in listed and scene in ids:
                lines.append(f"{scene}: validation failed: {reasons.get(scene, '?')}")
    return lines
