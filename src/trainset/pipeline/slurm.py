"""SLURM executor: per-step resources, job scripts, resource checks, sbatch arrays, job states.

Generic over what the jobs run. A caller describes *scene steps* (one array task per unit of
work, e.g. one scene, by its index in the sorted scene index) and *set steps* (one job over the
whole set, e.g. calibrate, validate); :func:`plan_jobs` turns them into sbatch submissions:

- a scene step's tasks wait task-for-task on the previous scene step
  (``--dependency=aftercorr:<job>``, ``--kill-on-invalid-dep=yes``): one failed unit never blocks
  the others, and the dependents of a failed unit are cancelled instead of pending forever;
- a set step waits for every job of the scene steps it follows with ``afterany`` (it runs on the
  units that finished), and scene steps that need a set step wait on it with ``afterok``;
- units are grouped by the first step they still lack, so each group's chain starts where it
  left off; groups are also cut into chunks below the cluster's ``MaxArraySize``.

Job scripts (``#SBATCH`` resource lines, then the command) are written to
``{out_root}/slurm/<step>.sh`` where a user can read them; the job ids of every submission go
to ``{out_root}/slurm/jobs.json``. Job states come from ``squeue -t all`` (the controller forgets
finished jobs after ``MinJobAge``, so sentinels stay the source of truth for what is done).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trainset.errors import InputError, TrainsetError
from trainset.pipeline.plan import Plan, StageResources, spec_path, write_step_spec
from trainset.store import atomic_write_json, atomic_write_text, read_json, read_yaml

SLURM_DIR = "slurm"  # {out_root}/slurm: job scripts, jobs.json, job logs
JOBS_FILE = "jobs.json"
JOBS_FORMAT = "trainset.slurm.jobs"
TASK_INDEX = "{task_index}"  # argv placeholder for the unit index a task works on
OFFSET_VAR = "TRAINSET_TASK_OFFSET"  # exported per chunk: unit index = SLURM_ARRAY_TASK_ID + offset
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize (array indices 0..1000)
# States in which a job or task can still start or is running (squeue --states names).
ACTIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}
)
# States in which a task ended without doing its work.
FAILED_STATES = frozenset(
    {
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
    }
)


class SlurmError(TrainsetError):
    """A SLURM command failed (sbatch refused a job, the controller did not answer)."""


# --------------------------------------------------------------------------- resources


_RESOURCE_KEYS = (
    "partition", "cpus", "mem", "time", "gres", "throttle", "account", "constraint",
)  # fmt: skip


@dataclass(frozen=True)
class SlurmConfig:
    """Per-step resources plus lines run at the top of every job script (``setup``)."""

    resources: dict[str, StageResources]
    setup: tuple[str, ...] = ()


def _check_resource_value(key: str, value: Any, source: str, step: str) -> Any:
    where = f"{step}.{key}"
    if key in ("cpus", "throttle"):
        if value is None and key == "throttle":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(
                "must be a positive integer", file=source, key=where, expected=">= 1", found=value
            )
        return value
    if key == "gres" and value in (None, "", "none"):
        return None
    if key in ("account", "constraint") and value in (None, ""):
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError("must be a non-empty string", file=source, key=where, found=value)
    if key == "mem":
        memory_mb(value, source=source, key=where)
    if key == "time":
        time_minutes(value, source=source, key=where)
    if key == "gres":
        parse_gres(value, source=source, key=where)
    return value.strip()


def load_slurm_config(
    path: str | os.PathLike[str] | None, defaults: Mapping[str, StageResources]
) -> SlurmConfig:
    """The steps' default resources (declared by the domain that plans them), overridden by a
    YAML file when given.

    File layout: ``{"setup": [lines...], "stages": {step: {partition, cpus, mem, time, gres,
    throttle, account, constraint}}}``; any key left out keeps the default, ``gres: none``
    drops it; a step the plan does not have is an error.
    """
    resources = dict(defaults)
    if path is None:
        return SlurmConfig(resources)
    source = str(path)
    if not Path(path).is_file():
        raise InputError("SLURM config file not found", file=source)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise InputError("must be a mapping", file=source, expected="setup/stages", found=data)
    unknown = sorted(set(data) - {"setup", "stages"})
    if unknown:
        raise InputError("unknown keys", file=source, expected="setup, stages", found=unknown)
    setup = data.get("setup") or []
    if not isinstance(setup, list) or not all(isinstance(line, str) for line in setup):
        raise InputError("must be a list of strings", file=source, key="setup", found=setup)
    stages = data.get("stages") or {}
    if not isinstance(stages, dict):
        raise InputError("must be a mapping", file=source, key="stages", found=stages)
    for step, overrides in stages.items():
        if step not in resources:
            raise InputError(
                "unknown step", file=source, key=f"stages.{step}", expected=sorted(resources)
            )
        if not isinstance(overrides, dict):
            raise InputError("must be a mapping", file=source, key=f"stages.{step}")
        bad = sorted(set(overrides) - set(_RESOURCE_KEYS))
        if bad:
            raise InputError(
                "unknown resource keys",
                file=source,
                key=f"stages.{step}",
                expected=list(_RESOURCE_KEYS),
                found=bad,
            )
        checked = {k: _check_resource_value(k, v, source, step) for k, v in overrides.items()}
        resources[step] = replace(resources[step], **checked)
    return SlurmConfig(resources, tuple(setup))


_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.IGNORECASE)
_MEM_FACTOR_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def memory_mb(text: str, *, source: object = None, key: str | None = None) -> float:
    """A SLURM memory size ("48G", "512M", "1T", "100" = MB) in megabytes."""
    match = _MEM_RE.match(str(text))
    if not match:
        raise InputError(
            "not a SLURM memory size", file=source, key=key, expected="e.g. 48G, 512M", found=text
        )
    return float(match.group(1)) * _MEM_FACTOR_MB[match.group(2).upper()]


def time_minutes(text: str, *, source: object = None, key: str | None = None) -> float | None:
    """A SLURM time ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM[:SS]") in minutes.

    None for "UNLIMITED"/"INFINITE".
    """
    value = str(text).strip()
    if value.upper() in ("UNLIMITED", "INFINITE"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not match:
        raise InputError(
            "not a SLURM time", file=source, key=key, expected="e.g. 04:00:00", found=text
        )
    days, a, b, c = match.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = [*parts, 0, 0][:3]
        return int(days) * 1440 + hours * 60 + minutes + seconds / 60
    if len(parts) == 1:  # MM
        return float(parts[0])
    if len(parts) == 2:  # MM:SS
        return parts[0] + parts[1] / 60
    return parts[0] * 60 + parts[1] + parts[2] / 60  # HH:MM:SS


def parse_gres(text: str, *, source: object = None, key: str | None = None) -> dict[str, int]:
    """Parse a GRES list ("gpu:1", "gpu:a100:4(S:0-1),shard:8") into {"gpu": 1, "gpu:a100": 1}.

    Each entry counts under its name and, when typed, under "name:type" too; "(null)" is empty.
    """
    counts: dict[str, int] = {}
    value = str(text).strip()
    if value in ("", "(null)"):
        return counts
    for raw in re.sub(r"\([^)]*\)", "", value).split(","):
        fields = raw.strip().split(":")
        if not fields[0] or len(fields) > 3:
            raise InputError("not a GRES", file=source, key=key, expected="gpu:1", found=text)
        count = 1
        if len(fields) > 1 and fields[-1].isdigit():
            count = int(fields.pop())
        names = [fields[0]] if len(fields) == 1 else [fields[0], f"{fields[0]}:{fields[1]}"]
        for name in names:
            counts[name] = counts.get(name, 0) + count
    return counts


# --------------------------------------------------------------------------- cluster facts


def parse_records(text: str) -> list[dict[str, str]]:
    """Parse ``scontrol show ... -o`` output: one record per line, ``Key=Value`` fields.

    A value may hold spaces (``OS=Linux 6.1 #1 SMP``): words without ``=`` join the previous value.
    """
    records: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        record: dict[str, str] = {}
        last: str | None = None
        for word in line.split():
            key, sep, value = word.partition("=")
            if sep and re.fullmatch(r"[A-Za-z][\w/:.]*", key):
                record[key] = value
                last = key
            elif last is not None:
                record[last] += " " + word
        records.append(record)
    return records


@dataclass(frozen=True)
class NodeInfo:
    """One node as ``scontrol show node`` reports it (memory in MB)."""

    name: str
    cpus: int
    memory_mb: float
    gres: dict[str, int]
    partitions: tuple[str, ...]
    state: str


@dataclass(frozen=True)
class PartitionInfo:
    """One partition as ``scontrol show partition`` reports it (time in minutes, None = no limit)."""

    name: str
    state: str
    max_time_min: float | None
    max_cpus_per_node: int | None
    max_mem_per_node_mb: float | None


@dataclass(frozen=True)
class ClusterInfo:
    """Partitions and nodes of the cluster, and its largest array index + 1."""

    partitions: dict[str, PartitionInfo]
    nodes: tuple[NodeInfo, ...]
    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE

    def nodes_of(self, partition: str) -> list[NodeInfo]:
        """Nodes that belong to ``partition``."""
        return [node for node in self.nodes if partition in node.partitions]


def _limit(value: str | None) -> str | None:
    return None if value in (None, "", "UNLIMITED", "INFINITE", "NONE") else value


def parse_cluster(partition_text: str, node_text: str, config_text: str = "") -> ClusterInfo:
    """Cluster facts from ``scontrol show partition -o``, ``show node -o`` and ``show config``."""
    partitions = {}
    for rec in parse_records(partition_text):
        name = rec.get("PartitionName", "")
        max_time = _limit(rec.get("MaxTime"))
        max_cpus = _limit(rec.get("MaxCPUsPerNode"))
        max_mem = _limit(rec.get("MaxMemPerNode"))
        partitions[name] = PartitionInfo(
            name=name,
            state=rec.get("State", "UNKNOWN"),
            max_time_min=time_minutes(max_time) if max_time else None,
            max_cpus_per_node=int(max_cpus) if max_cpus else None,
            max_mem_per_node_mb=memory_mb(max_mem) if max_mem else None,
        )
    nodes = []
    for rec in parse_records(node_text):
        nodes.append(
            NodeInfo(
                name=rec.get("NodeName", ""),
                cpus=int(rec.get("CPUTot", "0") or 0),
                memory_mb=float(rec.get("RealMemory", "0") or 0),
                gres=parse_gres(rec.get("Gres", "(null)")),
                partitions=tuple(p for p in rec.get("Partitions", "").split(",") if p),
                state=rec.get("State", "UNKNOWN"),
            )
        )
    max_array = DEFAULT_MAX_ARRAY_SIZE
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", config_text, re.MULTILINE)
    if match:
        max_array = int(match.group(1))
    return ClusterInfo(partitions, tuple(nodes), max_array)


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a SLURM client command and capture its output (no shell)."""
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise SlurmError(
            f"{argv[0]}: command not found; install the SLURM client tools "
            "(Debian: slurm-client) or run on a cluster login node"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{' '.join(argv)}: no answer within {timeout:.0f} s") from exc


def controller_up(runner: Runner = run_command) -> bool:
    """True when ``scontrol ping`` reaches a SLURM controller (about 0.01 s)."""
    try:
        result = runner(["scontrol", "ping"])
    except SlurmError:
        return False
    return result.returncode == 0 and "UP" in result.stdout


def query_cluster(runner: Runner = run_command) -> ClusterInfo:
    """Partitions, nodes and MaxArraySize of the reachable cluster."""
    outputs = []
    for what in ("partition", "node", "config"):
        argv = ["scontrol", "show", what] + (["-o"] if what != "config" else [])
        result = runner(argv)
        if result.returncode != 0:
            raise SlurmError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
        outputs.append(result.stdout)
    return parse_cluster(*outputs)


def check_resources(resources: Mapping[str, StageResources], cluster: ClusterInfo) -> list[str]:
    """Every reason a step's request could never run on ``cluster`` (empty when all fit).

    A request SLURM would accept and leave pending forever (more CPUs or memory than any node of
    the partition has, a GPU on a partition without GPUs, a time over the partition's limit) is
    reported here, before anything is submitted.
    """
    problems = []
    for step, res in resources.items():
        part = cluster.partitions.get(res.partition)
        if part is None:
            problems.append(
                f"{step}: partition '{res.partition}' does not exist "
                f"(partitions: {', '.join(sorted(cluster.partitions)) or 'none'})"
            )
            continue
        if not part.state.startswith("UP"):
            problems.append(f"{step}: partition '{res.partition}' is {part.state}, not UP")
        nodes = cluster.nodes_of(res.partition)
        if not nodes:
            problems.append(f"{step}: partition '{res.partition}' has no nodes")
            continue
        max_cpus = max(node.cpus for node in nodes)
        if part.max_cpus_per_node is not None:
            max_cpus = min(max_cpus, part.max_cpus_per_node)
        if res.cpus > max_cpus:
            problems.append(
                f"{step}: asks for {res.cpus} CPUs but the nodes of partition "
                f"'{res.partition}' have at most {max_cpus}"
            )
        need_mb = memory_mb(res.mem)
        max_mb = max(node.memory_mb for node in nodes)
        if part.max_mem_per_node_mb is not None:
            max_mb = min(max_mb, part.max_mem_per_node_mb)
        if need_mb > max_mb:
            problems.append(
                f"{step}: asks for {res.mem} of memory but the nodes of partition "
                f"'{res.partition}' have at most {max_mb:.0f}M"
            )
        need_min = time_minutes(res.time)
        if part.max_time_min is not None and (need_min is None or need_min > part.max_time_min):
            problems.append(
                f"{step}: asks for time {res.time} but partition '{res.partition}' allows at "
                f"most {part.max_time_min:.0f} minutes"
            )
        if res.gres:
            for name, count in parse_gres(res.gres).items():
                have = max(node.gres.get(name, 0) for node in nodes)
                if count > have:
                    problems.append(
                        f"{step}: asks for GRES {name}:{count} but the nodes of partition "
                        f"'{res.partition}' have {name}:{have}"
                    )
    return problems


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class SceneStep:
    """An array step: one task per unit index in ``pending`` (units that still lack it).

    ``argv`` is the command each task runs, with :data:`TASK_INDEX` where the unit index goes.
    ``needs`` names set steps that must succeed first when they are in the same submission.
    """

    name: str
    argv: tuple[str, ...]
    pending: frozenset[int]
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetStep:
    """A single job over the whole set; runs after every job of ``after`` ended (any state)."""

    name: str
    argv: tuple[str, ...]
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedJob:
    """One sbatch submission: ``tasks`` are array indices (unit index - ``offset``), None = single job.

    ``dependencies`` are (kind, key) pairs naming earlier planned jobs, kind one of
    ``aftercorr``, ``afterany``, ``afterok``.
    """

    key: str
    step: str
    tasks: tuple[int, ...] | None
    offset: int = 0
    dependencies: tuple[tuple[str, str], ...] = ()


def array_spec(indices: Iterable[int], throttle: int | None = None) -> str:
    """``--array`` value: sorted indices as ranges ("0-3,7,9-10"), plus ``%K`` when throttled."""
    values = sorted(set(indices))
    if not values:
        raise ValueError("an array needs at least one index")
    parts = []
    start = prev = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        if value is not None:
            start = prev = value
    spec = ",".join(parts)
    return f"{spec}%{throttle}" if throttle else spec


def plan_jobs(
    scene_steps: Sequence[SceneStep],
    set_steps: Sequence[SetStep] = (),
    *,
    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE,
) -> list[PlannedJob]:
    """The jobs of one submission, in an order where every dependency comes first.

    ``scene_steps`` are in chain order. A unit joins the chain at the first step it lacks and
    gets a task in that step and every later one (a later step whose output is current skips
    it quickly), so task i of a step always has task i in the previous step to wait for.
    Units are cut into chunks of ``max_array_size`` by index (array indices restart at 0, the
    chunk's offset is added back in the job). A set step is planned after the scene steps it
    follows; scene steps that need it are chained behind it with ``afterok``.
    """
    if max_array_size < 1:
        raise ValueError("max_array_size must be >= 1")
    names = [step.name for step in scene_steps]
    first_missing: dict[int, int] = {}
    for position, step in enumerate(scene_steps):
        for unit in step.pending:
            first_missing.setdefault(unit, position)
            first_missing[unit] = min(first_missing[unit], position)
    groups: dict[tuple[int, int], list[int]] = {}
    for unit, position in first_missing.items():
        groups.setdefault((position, unit // max_array_size), []).append(unit)

    set_by_name = {step.name: step for step in set_steps}
    jobs: list[PlannedJob] = []
    keys_of_step: dict[str, list[str]] = {name: [] for name in names}
    planned_sets: set[str] = set()

    def plan_set(step: SetStep) -> None:
        deps = tuple(("afterany", key) for name in step.after for key in keys_of_step.get(name, []))
        jobs.append(PlannedJob(step.name, step.name, None, 0, deps))
        planned_sets.add(step.name)

    for position, step in enumerate(scene_steps):
        for needed in step.needs:
            if needed in set_by_name and needed not in planned_sets:
                plan_set(set_by_name[needed])
        for (start, chunk), units in sorted(groups.items()):
            if start > position:
                continue
            offset = chunk * max_array_size
            key = f"{step.name}.{start}.{chunk}"
            deps: list[tuple[str, str]] = []
            if start < position:
                deps.append(("aftercorr", f"{names[position - 1]}.{start}.{chunk}"))
            deps.extend(("afterok", need) for need in step.needs if need in planned_sets)
            tasks = tuple(sorted(unit - offset for unit in units))
            jobs.append(PlannedJob(key, step.name, tasks, offset, tuple(deps)))
            keys_of_step[step.name].append(key)
    for set_step in set_steps:
        if set_step.name not in planned_sets:
            plan_set(set_step)
    return jobs


# --------------------------------------------------------------------------- scripts, sbatch


def script_path(out_root: str | os.PathLike[str], step: str) -> Path:
    """Where the job script of ``step`` is written: ``{out_root}/slurm/{step}.sh``."""
    return Path(out_root) / SLURM_DIR / f"{step}.sh"


def render_script(
    step: str,
    argv: Sequence[str],
    resources: StageResources,
    out_root: str | os.PathLike[str],
    *,
    array: bool,
    setup: Sequence[str] = (),
) -> str:
    """The text of a job script: ``#SBATCH`` resource lines, ``setup`` lines, then ``argv``.

    For an array step :data:`TASK_INDEX` in ``argv`` becomes the unit index
    (``SLURM_ARRAY_TASK_ID`` plus the chunk offset exported as ``TRAINSET_TASK_OFFSET``).
    """
    logs = Path(out_root).resolve() / SLURM_DIR / "logs"
    pattern = f"{step}_%A_%a.out" if array else f"{step}_%j.out"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=trainset-{step}",
        f"#SBATCH --partition={resources.partition}",
    ]
    if resources.gres:
        lines.append(f"#SBATCH --gres={resources.gres}")
    lines += [
        f"#SBATCH --time={resources.time}",
        f"#SBATCH --mem={resources.mem}",
        f"#SBATCH --cpus-per-task={resources.cpus}",
    ]
    if resources.account:
        lines.append(f"#SBATCH --account={resources.account}")
    if resources.constraint:
        lines.append(f"#SBATCH --constraint={resources.constraint}")
    lines += [f"#SBATCH --output={logs / pattern}", "set -euo pipefail", *setup]
    index = f'"$((SLURM_ARRAY_TASK_ID + ${{{OFFSET_VAR}:-0}}))"'
    words = [index if (array and word == TASK_INDEX) else shlex.quote(word) for word in argv]
    lines.append("exec " + " ".join(words))
    return "\n".join(lines) + "\n"


def sbatch_argv(
    job: PlannedJob, resources: StageResources, script: Path, job_ids: Mapping[str, str]
) -> list[str]:
    """The sbatch command of ``job``; ``job_ids`` maps planned keys to submitted job ids."""
    argv = ["sbatch", "--parsable"]
    # Arrays always set the offset, so one inherited from the caller's shell cannot leak in.
    export = "ALL" if job.tasks is None else f"ALL,{OFFSET_VAR}={job.offset}"
    argv.append(f"--export={export}")
    if job.tasks is not None:
        argv.append(f"--array={array_spec(job.tasks, resources.throttle)}")
    if job.dependencies:
        by_kind: dict[str, list[str]] = {}
        for kind, key in job.dependencies:
            by_kind.setdefault(kind, []).append(job_ids[key])
        spec = ",".join(f"{kind}:{':'.join(ids)}" for kind, ids in by_kind.items())
        argv += [f"--dependency={spec}", "--kill-on-invalid-dep=yes"]
    argv.append(str(script))
    return argv


@dataclass
class Submission:
    """What one call of :func:`submit` did (or would do, on a dry run)."""

    scripts: dict[str, Path] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    resources_checked: bool = False

    def dry_run_text(self) -> str:
        """Scripts and sbatch commands, as a shell reader would write them by hand."""
        out = []
        for step, path in self.scripts.items():
            out.append(f"# ---- {path} ({step})")
            out.append(path.read_text(encoding="utf-8").rstrip("\n"))
        out.append("# ---- sbatch commands")
        for job, argv in zip(self.jobs, self.commands):
            words = " ".join(f'"{w}"' if "$JOB_" in w else shlex.quote(w) for w in argv)
            out.append(f"JOB_{_var(job['key'])}=$({words})")
        return "\n".join(out) + "\n"


def _var(key: str) -> str:
    return re.sub(r"\W", "_", key)


def submit(
    out_root: str | os.PathLike[str],
    scene_steps: Sequence[SceneStep],
    set_steps: Sequence[SetStep],
    config: SlurmConfig,
    *,
    dry_run: bool = False,
    cluster: ClusterInfo | None = None,
    runner: Runner = run_command,
    note: Mapping[str, Any] | None = None,
    unit_names: Sequence[str] | None = None,
) -> Submission:
    """Write the job scripts, check resources, and submit (or on ``dry_run`` only describe) jobs.

    Scripts go to ``{out_root}/slurm/`` in both modes. With ``cluster`` given (or a controller
    reachable) every step's resources are checked first and all problems are raised together
    as :class:`InputError`; nothing is submitted then. Submitted job ids are appended to
    ``{out_root}/slurm/jobs.json`` with ``note`` (e.g. the command); with ``unit_names`` (name
    of unit index i) each array job also records the names of its units.
    """
    out = Path(out_root).resolve()
    steps: dict[str, SceneStep | SetStep] = {s.name: s for s in scene_steps}
    steps.update({s.name: s for s in set_steps})
    missing = sorted(set(steps) - set(config.resources))
    if missing:
        raise InputError("no SLURM resources configured", key="stages", found=missing)
    if cluster is None and (not dry_run or controller_up(runner)):
        cluster = query_cluster(runner)
    planned = plan_jobs(
        scene_steps,
        set_steps,
        max_array_size=cluster.max_array_size if cluster else DEFAULT_MAX_ARRAY_SIZE,
    )
    used = {job.step: config.resources[job.step] for job in planned}
    if not dry_run:
        _refuse_while_active(out, runner)
    if cluster is not None:
        problems = check_resources(used, cluster)
        if problems:
            raise InputError(
                "SLURM resources can never be satisfied on this cluster: "
                + "; ".join(problems)
                + " (set them in the file given to --slurm-config)"
            )
    submission = Submission(resources_checked=cluster is not None)
    (out / SLURM_DIR / "logs").mkdir(parents=True, exist_ok=True)
    for step_name in dict.fromkeys(job.step for job in planned):
        step = steps[step_name]
        text = render_script(
            step_name,
            step.argv,
            config.resources[step_name],
            out,
            array=isinstance(step, SceneStep),
            setup=config.setup,
        )
        path = script_path(out, step_name)
        atomic_write_text(path, text)
        os.chmod(path, 0o755)
        submission.scripts[step_name] = path
    job_ids: dict[str, str] = {}
    try:
        for job in planned:
            ids = job_ids if not dry_run else {k: f"$JOB_{_var(k)}" for k in job_ids}
            argv = sbatch_argv(job, used[job.step], submission.scripts[job.step], ids)
            submission.commands.append(argv)
            record: dict[str, Any] = {
                "key": job.key,
                "step": job.step,
                "tasks": list(job.tasks) if job.tasks is not None else None,
                "offset": job.offset,
                "script": str(submission.scripts[job.step].relative_to(out)),
            }
            if unit_names is not None and job.tasks is not None:
                record["units"] = [unit_names[task + job.offset] for task in job.tasks]
            if dry_run:
                job_ids[job.key] = job.key
            else:
                result = runner(argv)
                if result.returncode != 0:
                    raise SlurmError(
                        f"sbatch refused {job.step} ({shlex.join(argv)}): {result.stderr.strip()}"
                    )
                job_ids[job.key] = result.stdout.strip().split(";")[0]
                record["job_id"] = job_ids[job.key]
            submission.jobs.append(record)
    finally:
        if not dry_run and submission.jobs:
            append_jobs(out, submission.jobs, note)
    return submission


def trainset_argv(*words: str) -> tuple[str, ...]:
    """The command a job runs: this Python running ``python -m trainset WORDS``."""
    return (sys.executable, "-m", "trainset", *words)


def submit_plan(
    plan: Plan,
    config: SlurmConfig,
    *,
    dry_run: bool = False,
    cluster: ClusterInfo | None = None,
    runner: Runner = run_command,
) -> Submission:
    """Submit ``plan`` (the SLURM executor): every step becomes its spec file
    (``{out_root}/slurm/{step}.step.json``) and a job script running ``python -m trainset step
    SPEC``, with ``--unit-index`` per array task for a per-unit step.

    Per-unit steps chain task by task (``aftercorr``) and must share one unit list; a unit's
    chain starts at the first step it is pending in. Whole-set steps wait for every job of the
    steps they come ``after`` (``afterany``); per-unit steps that name a whole-set step in
    their ``after`` wait for it to succeed (``afterok``).
    """
    out = Path(plan.out_root).resolve()
    unit_steps = [s for s in plan.steps if s.units is not None]
    units = unit_steps[0].units if unit_steps else ()
    for step in unit_steps:
        if step.units != units:
            raise InputError(
                "per-unit steps of one submission must share their units",
                key=step.name,
                expected=f"{len(units or ())} units of {unit_steps[0].name}",
                found=f"{len(step.units or ())}",
            )
    index = {unit: i for i, unit in enumerate(units or ())}
    scene_steps, set_steps = [], []
    for step in plan.steps:
        spec = spec_path(out, step.name, SLURM_DIR)
        if step.units is None:
            write_step_spec(spec, step, out)
            set_steps.append(SetStep(step.name, trainset_argv("step", str(spec)), step.after))
            continue
        pending = step.units if step.pending is None else step.pending
        write_step_spec(spec, step, out)
        scene_steps.append(
            SceneStep(
                step.name,
                trainset_argv("step", str(spec), "--unit-index", TASK_INDEX),
                frozenset(index[u] for u in pending),
                step.after,
            )
        )
    return submit(
        out,
        scene_steps,
        set_steps,
        config,
        dry_run=dry_run,
        cluster=cluster,
        runner=runner,
        note={"command": list(plan.command), **dict(plan.notes)},
        unit_names=list(units or ()),
    )


def _refuse_while_active(out_root: Path, runner: Runner) -> None:
    """InputError when jobs recorded for ``out_root`` are still pending or running: a second
    submission would run the same units twice at once."""
    recorded = [str(job["job_id"]) for sub in read_jobs(out_root) for job in sub.get("jobs", [])]
    active = [s for s in job_states(recorded, runner) if s.state in ACTIVE_STATES]
    if active:
        ids = sorted({s.job_id for s in active}, key=int)
        raise InputError(
            "jobs of an earlier submission are still pending or running; wait for them "
            f"(`trainset focus status`) or cancel them (`scancel {' '.join(ids)}`) first",
            file=jobs_path(out_root),
            expected="no active job",
            found=f"{len(active)} active tasks in jobs {', '.join(ids)}",
        )


# --------------------------------------------------------------------------- records, states


def jobs_path(out_root: str | os.PathLike[str]) -> Path:
    """``{out_root}/slurm/jobs.json``."""
    return Path(out_root) / SLURM_DIR / JOBS_FILE


def read_jobs(out_root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every submission recorded in ``jobs.json``, oldest first (empty when there is none)."""
    path = jobs_path(out_root)
    if not path.is_file():
        return []
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != JOBS_FORMAT:
        raise InputError("not a trainset SLURM job record", file=path, key="format")
    submissions = data.get("submissions")
    if not isinstance(submissions, list):
        raise InputError("must be a list", file=path, key="submissions", found=submissions)
    return submissions


def append_jobs(
    out_root: str | os.PathLike[str],
    jobs: Sequence[Mapping[str, Any]],
    note: Mapping[str, Any] | None = None,
) -> None:
    """Append one submission (its jobs and ``note``) to ``jobs.json`` atomically."""
    submissions = read_jobs(out_root)
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **dict(note or {}),
        "jobs": [dict(job) for job in jobs],
    }
    submissions.append(entry)
    atomic_write_json(
        jobs_path(out_root), {"format": JOBS_FORMAT, "version": 1, "submissions": submissions}
    )


@dataclass(frozen=True)
class TaskState:
    """State of one job or array task: ``task`` is None for a job that is not an array."""

    job_id: str
    task: int | None
    state: str
    reason: str


def parse_squeue(text: str) -> list[TaskState]:
    """Parse ``squeue -h -r -t all -o '%F|%K|%T|%r'`` lines (array tasks expanded)."""
    states = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4:
            continue
        job_id, task, state, reason = fields
        index = int(task) if task.isdigit() else None
        states.append(TaskState(job_id, index, state, reason))
    return states


def job_states(job_ids: Sequence[str], runner: Runner = run_command) -> list[TaskState]:
    """States of the given jobs' tasks; jobs the controller no longer knows are left out."""
    if not job_ids:
        return []
    argv = ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids), "-o", "%F|%K|%T|%r"]
    result = runner(argv)
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return []
        raise SlurmError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return parse_squeue(result.stdout)


def wait_for_jobs(
    job_ids: Sequence[str],
    *,
    timeout_s: float,
    poll_s: float = 0.5,
    runner: Runner = run_command,
) -> list[TaskState]:
    """Poll until no task of ``job_ids`` is pending or running; return the final states.

    Raises :class:`SlurmError` naming the tasks still active after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        states = job_states(job_ids, runner)
        active = [s for s in states if s.state in ACTIVE_STATES]
        if not active:
            return states
        if time.monotonic() > deadline:
            listed = ", ".join(f"{s.job_id}_{s.task} {s.state} ({s.reason})" for s in active[:10])
            raise SlurmError(f"jobs still active after {timeout_s:.0f} s: {listed}")
        time.sleep(poll_s)


def unit_states(
    submissions: Sequence[Mapping[str, Any]], states: Sequence[TaskState]
) -> dict[tuple[str, str | None], tuple[TaskState, str]]:
    """Newest known state per (step, unit) with the job's log file (relative to ``slurm/``).

    A unit is named by its recorded name (``units``) or else its index as text; set steps have
    unit None. Later submissions override earlier ones, so a resubmitted unit shows its newest
    task; tasks the controller has forgotten are left out.
    """
    by_job = {(state.job_id, state.task): state for state in states}
    latest: dict[tuple[str, str | None], tuple[TaskState, str]] = {}
    for entry in submissions:
        for job in entry.get("jobs", []):
            job_id = str(job.get("job_id", ""))
            step = str(job["step"])
            if job.get("tasks") is None:
                if (job_id, None) in by_job:
                    latest[(step, None)] = (by_job[(job_id, None)], f"logs/{step}_{job_id}.out")
                continue
            offset = int(job.get("offset", 0))
            names = job.get("units")
            for position, task in enumerate(job["tasks"]):
                found = by_job.get((job_id, int(task)))
                if found is None:
                    continue
                unit = str(names[position]) if names else str(int(task) + offset)
                latest[(step, unit)] = (found, f"logs/{step}_{job_id}_{task}.out")
    return latest
