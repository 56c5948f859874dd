"""SLURM executor without a cluster: parsing, configuration, planning, scripts, dry runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from trainset.errors import InputError
from trainset.pipeline.slurm import (
    TASK_INDEX,
    PlannedJob,
    SceneStep,
    SetStep,
    SlurmConfig,
    SlurmError,
    StageResources,
    TaskState,
    append_jobs,
    array_spec,
    check_resources,
    load_slurm_config,
    memory_mb,
    parse_cluster,
    parse_gres,
    parse_squeue,
    plan_jobs,
    read_jobs,
    render_script,
    run_command,
    submit,
    time_minutes,
    unit_states,
    wait_for_jobs,
)

# Captured from `scontrol show partition -o` / `show node -o` on the one-node test cluster
# (scripts/slurm/start.sh), plus a GPU partition of a typical GPU cluster.
PARTITIONS = (
    "PartitionName=cpu AllowGroups=ALL Default=YES MaxTime=UNLIMITED MaxCPUsPerNode=UNLIMITED "
    "Nodes=vm State=UP TotalCPUs=2 TotalNodes=1 DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED\n"
    "PartitionName=gpu AllowGroups=ALL Default=NO MaxTime=2-00:00:00 MaxCPUsPerNode=UNLIMITED "
    "Nodes=g[1-2] State=UP TotalCPUs=144 TotalNodes=2 MaxMemPerNode=UNLIMITED\n"
)
NODES = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=2  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=0.46 "
    "Gres=(null) NodeAddr=127.0.0.1 OS=Linux 6.18.44-fc-v669 #1 SMP PREEMPT_DYNAMIC @0  "
    "RealMemory=24105 AllocMem=0 State=IDLE Partitions=cpu  CfgTRES=cpu=2,mem=24105M\n"
    "NodeName=g1 CPUTot=72 Gres=gpu:h100:4(S:0-3) RealMemory=491520 State=IDLE Partitions=gpu\n"
    "NodeName=g2 CPUTot=72 Gres=gpu:h100:4(S:0-3) RealMemory=491520 State=MIXED Partitions=gpu\n"
)
CONFIG = "MaxArraySize            = 1001\nMinJobAge               = 300 sec\n"
CLUSTER = parse_cluster(PARTITIONS, NODES, CONFIG)
# Default resources as a domain declares them (the focus plan's blocks).
PLAN_RESOURCES = {
    "deblur": StageResources("gpu", 8, "48G", "04:00:00", "gpu:1", 32),
    "depth": StageResources("gpu", 8, "64G", "06:00:00", "gpu:1", 16),
    "calibrate": StageResources("cpu", 8, "32G", "01:00:00"),
    "render": StageResources("gpu", 8, "80G", "08:00:00", "gpu:1", 16),
    "validate": StageResources("cpu", 1, "16G", "00:30:00"),
}
# The same with the GPU nodes also in the CPU partition: the plan's resources fit it.
BIG_CLUSTER = parse_cluster(PARTITIONS, NODES.replace("Partitions=gpu", "Partitions=cpu,gpu"))


def test_memory_sizes_convert_to_megabytes():
    assert [memory_mb(t) for t in ("48G", "512M", "1T", "100", "2048K")] == [
        49152,
        512,
        1048576,
        100,
        2,
    ]


def test_bad_memory_size_is_an_input_error():
    with pytest.raises(InputError, match=r"key 'depth.mem': not a SLURM memory size"):
        memory_mb("lots", key="depth.mem")


def test_slurm_times_convert_to_minutes():
    texts = ("30", "05:30", "04:00:00", "1-00:00:00", "2-12", "UNLIMITED")
    assert [time_minutes(t) for t in texts] == [30, 5.5, 240, 1440, 3600, None]


def test_bad_time_is_an_input_error():
    with pytest.raises(InputError, match="not a SLURM time"):
        time_minutes("4h")


def test_gres_counts_by_name_and_type():
    assert parse_gres("gpu:h100:4(S:0-3),shard:8") == {"gpu": 4, "gpu:h100": 4, "shard": 8}
    assert parse_gres("(null)") == {}
    assert parse_gres("gpu") == {"gpu": 1}


def test_cluster_records_parse_nodes_partitions_and_array_limit():
    assert CLUSTER.max_array_size == 1001
    assert CLUSTER.partitions["gpu"].max_time_min == 2880
    assert CLUSTER.partitions["cpu"].max_time_min is None
    vm = CLUSTER.nodes[0]
    assert (vm.name, vm.cpus, vm.memory_mb, vm.gres, vm.partitions) == (
        "vm",
        2,
        24105,
        {},
        ("cpu",),
    )
    assert [n.name for n in CLUSTER.nodes_of("gpu")] == ["g1", "g2"]


def test_plan_resources_fit_a_gpu_cluster_but_not_a_cpu_only_node():
    assert check_resources(PLAN_RESOURCES, BIG_CLUSTER) == []
    assert check_resources(PLAN_RESOURCES, CLUSTER) == [
        "calibrate: asks for 8 CPUs but the nodes of partition 'cpu' have at most 2",
        "calibrate: asks for 32G of memory but the nodes of partition 'cpu' have at most 24105M",
    ]


def test_gpu_on_a_partition_without_gpus_is_reported():
    res = {"depth": StageResources("cpu", 1, "1G", "00:10:00", "gpu:1")}
    assert check_resources(res, CLUSTER) == [
        "depth: asks for GRES gpu:1 but the nodes of partition 'cpu' have gpu:0"
    ]


def test_time_over_partition_limit_and_unknown_partition_are_reported():
    res = {
        "render": StageResources("gpu", 8, "80G", "3-00:00:00", "gpu:h100:1"),
        "validate": StageResources("debug", 1, "1G", "00:10:00"),
    }
    assert check_resources(res, CLUSTER) == [
        "render: asks for time 3-00:00:00 but partition 'gpu' allows at most 2880 minutes",
        "validate: partition 'debug' does not exist (partitions: cpu, gpu)",
    ]


def test_config_file_overrides_only_the_keys_it_names(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text(
        "setup: ['module load cuda']\n"
        "stages:\n  depth: {partition: a100, throttle: 4}\n  deblur: {gres: none}\n"
    )
    config = load_slurm_config(path, PLAN_RESOURCES)
    assert config.setup == ("module load cuda",)
    assert config.resources["depth"] == StageResources("a100", 8, "64G", "06:00:00", "gpu:1", 4)
    assert config.resources["deblur"].gres is None
    assert config.resources["render"] == PLAN_RESOURCES["render"]


def test_a_step_the_plan_does_not_have_is_refused_with_the_known_ones(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text("stages:\n  tile: {cpus: 2}\n")
    with pytest.raises(InputError, match=r"stages.tile.*unknown step.*expected \['a'\]"):
        load_slurm_config(path, {"a": PLAN_RESOURCES["depth"]})


def test_constraint_becomes_an_sbatch_line():
    res = StageResources("gpu", 8, "96G", "08:00:00", "gpu:1", constraint="gpu80g")
    text = render_script("deblur", ["trainset"], res, "/o", array=False)
    assert "#SBATCH --constraint=gpu80g" in text.splitlines()


def test_config_unknown_step_is_an_input_error(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text("stages:\n  polish: {cpus: 2}\n")
    with pytest.raises(InputError, match=r"key 'stages.polish': unknown step"):
        load_slurm_config(path, PLAN_RESOURCES)


def test_config_bad_cpus_is_an_input_error(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text("stages:\n  depth: {cpus: 0}\n")
    with pytest.raises(InputError, match=r"key 'depth.cpus'.*expected >= 1, found 0"):
        load_slurm_config(path, PLAN_RESOURCES)


def test_config_unknown_resource_key_is_an_input_error(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text("stages:\n  depth: {gpus: 2}\n")
    with pytest.raises(InputError, match=r"unknown resource keys.*found \['gpus'\]"):
        load_slurm_config(path, PLAN_RESOURCES)


def test_missing_config_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="SLURM config file not found"):
        load_slurm_config(tmp_path / "nope.yaml", PLAN_RESOURCES)


def test_array_spec_compresses_ranges_and_adds_throttle():
    assert array_spec([7, 0, 1, 2, 3, 9, 10], 16) == "0-3,7,9-10%16"
    assert array_spec([5]) == "5"


def _steps(pending_a, pending_b, pending_c):
    return [
        SceneStep("deblur", ("x",), frozenset(pending_a)),
        SceneStep("depth", ("x",), frozenset(pending_b)),
        SceneStep("render", ("x",), frozenset(pending_c), needs=("calibrate",)),
    ]


def test_units_join_the_chain_at_their_first_missing_step():
    jobs = plan_jobs(_steps({0, 1}, {0, 1, 2}, {0, 1, 2, 3}))
    assert jobs == [
        PlannedJob("deblur.0.0", "deblur", (0, 1)),
        PlannedJob("depth.0.0", "depth", (0, 1), 0, (("aftercorr", "deblur.0.0"),)),
        PlannedJob("depth.1.0", "depth", (2,)),
        PlannedJob("render.0.0", "render", (0, 1), 0, (("aftercorr", "depth.0.0"),)),
        PlannedJob("render.1.0", "render", (2,), 0, (("aftercorr", "depth.1.0"),)),
        PlannedJob("render.2.0", "render", (3,)),
    ]


def test_set_steps_wait_with_afterany_and_needers_with_afterok():
    set_steps = [SetStep("calibrate", ("c",), ("depth",)), SetStep("validate", ("v",), ("render",))]
    jobs = plan_jobs(_steps(set(), {4}, {4}), set_steps)
    assert jobs == [
        PlannedJob("depth.1.0", "depth", (4,)),
        PlannedJob("calibrate", "calibrate", None, 0, (("afterany", "depth.1.0"),)),
        PlannedJob(
            "render.1.0",
            "render",
            (4,),
            0,
            (("aftercorr", "depth.1.0"), ("afterok", "calibrate")),
        ),
        PlannedJob("validate", "validate", None, 0, (("afterany", "render.1.0"),)),
    ]


def test_units_beyond_max_array_size_go_to_chunks_with_offsets():
    jobs = plan_jobs(_steps({0, 1, 2}, set(), set()), max_array_size=2)
    assert [(j.key, j.tasks, j.offset) for j in jobs[:2]] == [
        ("deblur.0.0", (0, 1), 0),
        ("deblur.0.1", (0,), 2),
    ]
    assert jobs[3] == PlannedJob("depth.0.1", "depth", (0,), 2, (("aftercorr", "deblur.0.1"),))


def test_script_holds_resource_lines_and_task_index(tmp_path):
    text = render_script(
        "depth",
        (
            "/usr/bin/python3",
            "-m",
            "trainset",
            "step",
            "depth.step.json",
            "--unit-index",
            TASK_INDEX,
        ),
        PLAN_RESOURCES["depth"],
        tmp_path,
        array=True,
        setup=("module load cuda",),
    )
    logs = tmp_path.resolve() / "slurm" / "logs"
    assert text.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --job-name=trainset-depth",
        "#SBATCH --partition=gpu",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --time=06:00:00",
        "#SBATCH --mem=64G",
        "#SBATCH --cpus-per-task=8",
        f"#SBATCH --output={logs}/depth_%A_%a.out",
        "set -euo pipefail",
        "module load cuda",
        "exec /usr/bin/python3 -m trainset step depth.step.json --unit-index "
        '"$((SLURM_ARRAY_TASK_ID + ${TRAINSET_TASK_OFFSET:-0}))"',
    ]


def test_script_runs_in_bash_with_offset(tmp_path):
    text = render_script(
        "t",
        ("echo", "unit", TASK_INDEX),
        StageResources("cpu", 1, "1G", "1"),
        tmp_path,
        array=True,
    )
    env = {"SLURM_ARRAY_TASK_ID": "3", "TRAINSET_TASK_OFFSET": "1001", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["bash", "-c", text], capture_output=True, text=True, env=env)
    assert result.stdout == "unit 1004\n"


def _never_called(argv):
    raise AssertionError(f"dry run ran {argv}")


def test_dry_run_prints_scripts_and_dependency_flags_without_submitting(tmp_path):
    steps = _steps({0, 1, 2}, {0, 1, 2}, set())
    set_steps = [SetStep("calibrate", ("c",), ("depth",))]
    config = SlurmConfig(dict(PLAN_RESOURCES))
    sub = submit(
        tmp_path, steps, set_steps, config, dry_run=True, cluster=BIG_CLUSTER, runner=_never_called
    )
    text = sub.dry_run_text()
    deblur_sh = tmp_path.resolve() / "slurm" / "deblur.sh"
    depth_sh = tmp_path.resolve() / "slurm" / "depth.sh"
    calibrate_sh = tmp_path.resolve() / "slurm" / "calibrate.sh"
    lines = text.splitlines()
    assert (
        f"JOB_deblur_0_0=$(sbatch --parsable --export=ALL,TRAINSET_TASK_OFFSET=0 --array=0-2%32 {deblur_sh})"
        in lines
    )
    assert (
        "JOB_depth_0_0=$(sbatch --parsable --export=ALL,TRAINSET_TASK_OFFSET=0 --array=0-2%16 "
        f'"--dependency=aftercorr:$JOB_deblur_0_0" --kill-on-invalid-dep=yes {depth_sh})'
    ) in lines
    assert (
        "JOB_calibrate=$(sbatch --parsable --export=ALL "
        f'"--dependency=afterany:$JOB_depth_0_0" --kill-on-invalid-dep=yes {calibrate_sh})'
    ) in lines
    for line in ("#SBATCH --gres=gpu:1", "#SBATCH --mem=48G", "#SBATCH --partition=cpu"):
        assert line in lines
    assert not (tmp_path / "slurm" / "jobs.json").exists()


def test_submit_refuses_resources_that_never_fit_and_submits_nothing(tmp_path):
    steps = [SceneStep("depth", ("x", TASK_INDEX), frozenset({0}))]
    with pytest.raises(InputError, match=r"depth: asks for 8 CPUs but .* 'cpu' have at most 2"):
        submit(
            tmp_path,
            steps,
            [],
            SlurmConfig({"depth": replace_partition(PLAN_RESOURCES["depth"], "cpu")}),
            cluster=CLUSTER,
            runner=_never_called,
        )
    assert read_jobs(tmp_path) == []


def replace_partition(res: StageResources, partition: str) -> StageResources:
    return StageResources(partition, res.cpus, res.mem, res.time, None, res.throttle)


class _FakeSbatch:
    """Answers sbatch with job ids 101, 102, ...; squeue with ``queue`` lines."""

    def __init__(self, queue=""):
        self.calls = []
        self.queue = queue

    def __call__(self, argv):
        if argv[0] == "squeue":
            return subprocess.CompletedProcess(argv, 0, self.queue, "")
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, f"{100 + len(self.calls)}\n", "")


def test_submit_refuses_while_earlier_jobs_are_active(tmp_path):
    append_jobs(tmp_path, [{"job_id": "7", "step": "a", "tasks": [0, 1]}])
    fake = _FakeSbatch(queue="7|0|COMPLETED|None\n7|1|RUNNING|None\n")
    steps = [SceneStep("a", ("x", TASK_INDEX), frozenset({1}))]
    config = SlurmConfig({"a": StageResources("cpu", 1, "1G", "10")})
    with pytest.raises(InputError, match=r"still pending or running.*scancel 7.*1 active tasks"):
        submit(tmp_path, steps, [], config, cluster=CLUSTER, runner=fake)
    assert fake.calls == []


def test_submit_chains_real_job_ids_and_records_them(tmp_path):
    fake = _FakeSbatch()
    steps = _steps({0, 1}, {0, 1}, set())[:2]
    cfg = {
        k: StageResources("cpu", 1, "1G", v.time, None, v.throttle)
        for k, v in PLAN_RESOURCES.items()
    }
    submit(
        tmp_path,
        steps,
        [],
        SlurmConfig(cfg),
        cluster=CLUSTER,
        runner=fake,
        note={"n": 1},
        unit_names=["s0", "s1"],
    )
    assert fake.calls[1][-3:-1] == ["--dependency=aftercorr:101", "--kill-on-invalid-dep=yes"]
    record = json.loads((tmp_path / "slurm" / "jobs.json").read_text())
    assert record["format"] == "trainset.slurm.jobs"
    assert [(j["job_id"], j["tasks"]) for j in record["submissions"][0]["jobs"]] == [
        ("101", [0, 1]),
        ("102", [0, 1]),
    ]
    assert record["submissions"][0]["n"] == 1
    assert record["submissions"][0]["jobs"][1]["units"] == ["s0", "s1"]


def test_squeue_lines_parse_into_task_states():
    text = "11|0|COMPLETED|None\n11|2|FAILED|NonZeroExitCode\n13|N/A|PENDING|Dependency\n"
    assert parse_squeue(text) == [
        TaskState("11", 0, "COMPLETED", "None"),
        TaskState("11", 2, "FAILED", "NonZeroExitCode"),
        TaskState("13", None, "PENDING", "Dependency"),
    ]


def test_unit_states_map_tasks_back_to_units_and_latest_submission_wins():
    submissions: list[dict[str, Any]] = [
        {"jobs": [{"job_id": "5", "step": "depth", "tasks": [0, 1], "offset": 1000}]},
        {"jobs": [{"job_id": "9", "step": "depth", "tasks": [1], "offset": 1000}]},
        {"jobs": [{"job_id": "10", "step": "validate", "tasks": None}]},
        {"jobs": [{"job_id": "11", "step": "render", "tasks": [0], "units": ["scene_a"]}]},
    ]
    states = [
        TaskState("5", 0, "COMPLETED", "None"),
        TaskState("5", 1, "FAILED", "NonZeroExitCode"),
        TaskState("9", 1, "RUNNING", "None"),
        TaskState("10", None, "PENDING", "Dependency"),
        TaskState("11", 0, "PENDING", "None"),
    ]
    assert unit_states(submissions, states) == {
        ("depth", "1000"): (states[0], "logs/depth_5_0.out"),
        ("depth", "1001"): (states[2], "logs/depth_9_1.out"),
        ("validate", None): (states[3], "logs/validate_10.out"),
        ("render", "scene_a"): (states[4], "logs/render_11_0.out"),
    }


def test_jobs_file_of_another_format_is_an_input_error(tmp_path):
    path = Path(tmp_path) / "slurm" / "jobs.json"
    path.parent.mkdir()
    path.write_text('{"format": "other"}')
    with pytest.raises(InputError, match=r"jobs.json: key 'format': not a trainset SLURM job"):
        read_jobs(tmp_path)


def test_config_unknown_top_level_key_is_an_input_error(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text("partitions: {}\n")
    with pytest.raises(InputError, match=r"unknown keys \(expected setup, stages, found"):
        load_slurm_config(path, PLAN_RESOURCES)


def test_config_setup_must_be_a_list_of_lines(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text("setup: module load cuda\n")
    with pytest.raises(InputError, match=r"key 'setup': must be a list of strings"):
        load_slurm_config(path, PLAN_RESOURCES)


def test_config_bad_memory_names_the_step(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text("stages:\n  render: {mem: lots}\n")
    with pytest.raises(InputError, match=r"key 'render.mem': not a SLURM memory size"):
        load_slurm_config(path, PLAN_RESOURCES)


def test_bad_gres_is_an_input_error():
    with pytest.raises(InputError, match="not a GRES"):
        parse_gres("gpu:a:b:1")


def test_sbatch_refusal_raises_and_keeps_the_jobs_already_submitted(tmp_path):
    calls = []

    def runner(argv):
        calls.append(argv)
        if len(calls) == 2:
            return subprocess.CompletedProcess(argv, 1, "", "sbatch: error: invalid account")
        return subprocess.CompletedProcess(argv, 0, "41\n", "")

    steps = [SceneStep(n, ("x", TASK_INDEX), frozenset({0})) for n in ("a", "b")]
    config = SlurmConfig({n: StageResources("cpu", 1, "1G", "10") for n in ("a", "b")})
    with pytest.raises(SlurmError, match=r"sbatch refused b .*invalid account"):
        submit(tmp_path, steps, [], config, cluster=CLUSTER, runner=runner)
    assert [job["job_id"] for job in read_jobs(tmp_path)[0]["jobs"]] == ["41"]


def test_waiting_past_the_timeout_names_the_active_tasks():
    def runner(argv):
        return subprocess.CompletedProcess(argv, 0, "5|3|PENDING|Dependency\n", "")

    with pytest.raises(SlurmError, match=r"still active after 0 s: 5_3 PENDING \(Dependency\)"):
        wait_for_jobs(["5"], timeout_s=0, poll_s=0, runner=runner)


def test_missing_slurm_client_is_a_slurm_error_with_a_hint():
    with pytest.raises(SlurmError, match=r"trainset-no-such-scontrol: command not found; install"):
        run_command(["trainset-no-such-scontrol", "ping"])
