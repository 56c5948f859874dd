"""The SLURM part of `trainset focus status`: the jobs' states per stage and failed scenes.

States come from the controller (``squeue -t all``); it forgets finished jobs after
``MinJobAge``, so the sentinel counts printed above this section stay the authority.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from trainset.pipeline.slurm import (
    FAILED_STATES,
    Runner,
    SlurmError,
    controller_up,
    job_states,
    read_jobs,
    run_command,
    unit_states,
)
from trainset.store import read_json

# Order of the focus pipeline's SLURM steps (scene steps and whole-set steps).
STEP_ORDER = ("deblur", "depth", "calibrate", "render", "validate")
COC_STATS = Path("logs") / "coc_stats.json"


def recommended_max_coc(out_root: Path) -> float | None:
    """``recommended_max_coc`` of ``logs/coc_stats.json`` (sensor metres), None when absent."""
    path = Path(out_root) / COC_STATS
    if not path.is_file():
        return None
    try:
        stats = read_json(path)
    except (OSError, ValueError):
        return None
    value = stats.get("recommended_max_coc") if isinstance(stats, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def slurm_status_lines(out_root: Path, runner: Runner = run_command) -> list[str]:
    """Lines describing the jobs recorded in ``{out_root}/slurm/jobs.json`` (empty when none)."""
    submissions = read_jobs(out_root)
    if not submissions:
        return []
    job_ids = [str(job["job_id"]) for sub in submissions for job in sub.get("jobs", [])]
    header = f"SLURM: {len(job_ids)} jobs in {len(submissions)} submissions (slurm/jobs.json)"
    if not controller_up(runner):
        return [header, "  no controller answers `scontrol ping`: job states unknown"]
    try:
        states = job_states(job_ids, runner)
    except SlurmError as exc:
        return [header, f"  job states unavailable: {exc}"]
    latest = unit_states(submissions, states)
    lines = [header + "; newest task per scene and stage:"]
    steps = sorted({step for step, _ in latest}, key=_step_rank)
    for step in steps:
        counts = Counter(state.state for (s, _), (state, _) in latest.items() if s == step)
        summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
        lines.append(f"  {step:<10} {summary}")
    for (step, unit), (state, log) in sorted(latest.items(), key=lambda kv: _key_rank(kv[0])):
        if state.state not in FAILED_STATES:
            continue
        what = unit if unit is not None else "(whole set)"
        why = state.reason
        if why == "DependencyNeverSatisfied":
            why += ": an earlier stage of this scene failed"
        lines.append(f"  {state.state} {step} {what}: {why} (log: slurm/{log})")
    newest = submissions[-1]
    known = {(state.job_id, state.task) for state in states}
    forgotten = sum(
        1
        for job in newest.get("jobs", [])
        for task in (job.get("tasks") or [None])
        if (str(job.get("job_id")), task) not in known
    )
    if forgotten:
        lines.append(
            f"  {forgotten} tasks of the newest submission are no longer known to the "
            "controller (finished more than MinJobAge ago); the sentinel counts are authoritative"
        )
    lines.extend(_gate_lines(Path(out_root), newest))
    return lines


def _gate_lines(out_root: Path, newest: dict) -> list[str]:
    steps = {job.get("step") for job in newest.get("jobs", [])}
    if "calibrate" not in steps or "render" in steps:
        return []
    value = recommended_max_coc(out_root)
    command = newest.get("command")
    cont = " ".join([*command, "--max-coc", "from-stats"]) if command else ""
    if value is None:
        return ["  gate: calibration has not written logs/coc_stats.json yet"]
    return [
        f"  gate: recommended max_coc = {value:.6g} m ({value * 1e3:.4g} mm on the sensor)",
        f"  continue with: {cont}" if cont else "  continue with --max-coc VALUE|from-stats",
    ]


def _step_rank(step: str) -> tuple[int, str]:
    return (STEP_ORDER.index(step) if step in STEP_ORDER else len(STEP_ORDER), step)


def _key_rank(key: tuple[str, str | None]) -> tuple[int, str, str]:
    step, unit = key
    return (*_step_rank(step), unit or "")
