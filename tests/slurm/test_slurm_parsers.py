"""The Slurm parsers and the demand they make, on output captured from a real Slurm.

The files in ``data/`` were written by ``capture.py`` (see ``data/README.md`` for the jobs and
nodes in each); these tests need no Slurm installed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shoal.daemon.demand import DemandUpdate
from shoal.daemon.slurm.constants import DRAIN_REASON, SQUEUE_FIELDS
from shoal.daemon.slurm.demand import slurm_demand
from shoal.daemon.slurm.drain import drained_by_shoal
from shoal.daemon.slurm.errors import SlurmParseError
from shoal.daemon.slurm.parse import (
    SlurmJob,
    compress_hostlist,
    def_mem_per_cpu,
    expand_hostlist,
    parse_memory,
    parse_sinfo,
    parse_slurm_config,
    parse_slurm_time,
    parse_squeue,
)
from shoal.daemon.slurm.source import SlurmDemandSource
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import QueuedJobs, RunningJob
from shoal.scaler.shape import Shape

DATA = Path(__file__).parent / "data"
MiB = 1024**2
H = 3600.0


def data(name: str) -> str:
    return (DATA / name).read_text()


def jobs(name: str) -> dict[str, SlurmJob]:
    return {job.job_id: job for job in parse_squeue(data(name))}


# --- squeue ------------------------------------------------------------------------------

NOT_AVAIL = "ReqNodeNotAvail, UnavailableNodes:cloud4"
# job id: state, reason, cpus, nodes, cores per node, memory per node (MiB), time limit (s),
# array tasks, held, nodes it runs on
MIXED = {
    "1": ("RUNNING", "None", 2, 2, 1, 150, 5400, 1, False, ("cloud1", "cloud2")),
    "2_1": ("RUNNING", "None", 1, 1, 1, 100, 600, 1, False, ("cloud1",)),
    "2_2": ("RUNNING", "None", 1, 1, 1, 100, 600, 1, False, ("cloud2",)),
    "4": ("CONFIGURING", "None", 2, 1, 2, 600, 2 * 86400, 1, False, ("cloud3",)),
    "5": ("PENDING", "Resources", 2, 1, 2, 500, 1800, 1, False, ()),
    "6": ("PENDING", "Priority", 3, 2, 2, 300, None, 1, False, ()),
    "7_1": ("PENDING", "Priority", 1, 1, 1, 300, 2700, 1, False, ()),
    "7_2": ("PENDING", "Priority", 1, 1, 1, 300, 2700, 1, False, ()),
    "7_3": ("PENDING", "Priority", 1, 1, 1, 300, 2700, 1, False, ()),
    "8": ("PENDING", "JobHeldUser", 1, 1, 1, 100, None, 1, True, ()),
    "9": ("PENDING", "JobHeldAdmin", 1, 1, 1, 100, None, 1, True, ()),
    "10": ("PENDING", NOT_AVAIL, 1, 1, 1, 100, None, 1, False, ()),
    "11": ("PENDING", "PartitionConfig", 1, 1, 1, 2000, None, 1, False, ()),
    "12": ("PENDING", "BeginTime", 1, 1, 1, 100, None, 1, False, ()),
    "13": ("PENDING", "Dependency", 1, 1, 1, 100, None, 1, False, ()),
    "14": ("PENDING", "PartitionConfig", 1, 1, 1, 100, 300, 1, False, ()),
}


def test_squeue_mixed_has_every_job_once():
    assert sorted(jobs("squeue-mixed.txt")) == sorted(MIXED)


@pytest.mark.parametrize("job_id", list(MIXED))
def test_squeue_mixed(job_id: str):
    job = jobs("squeue-mixed.txt")[job_id]
    state, reason, cpus, nodes, cores, memory, limit, tasks, held, node_list = MIXED[job_id]
    assert (job.state, job.reason, job.cpus, job.nodes) == (state, reason, cpus, nodes)
    assert job.cores_per_node == cores
    assert job.memory_per_node() == memory * MiB
    assert job.time_limit == limit
    assert (job.array_tasks, job.held, job.node_list) == (tasks, held, node_list)


def test_squeue_fields_of_array_tasks_and_partitions():
    by_id = jobs("squeue-mixed.txt")
    assert by_id["7_2"].array_tasks == 1
    assert by_id["2_1"].node_list  # a running task has its own job id; we name it by array
    assert by_id["14"].partitions == ("cloud", "dyn")
    assert by_id["1"].tres == {"cpu": "2", "mem": "300M", "node": "2", "billing": "2"}
    assert by_id["1"].time_used > 0
    assert by_id["8"].priority == 0 and by_id["5"].priority > 0


def test_squeue_requeued_job_counts_its_restart():
    job = jobs("squeue-requeued.txt")["4"]
    assert (job.state, job.reason, job.restarts, job.node_list) == (
        "PENDING",
        "BeginTime",
        1,
        (),
    )


@pytest.mark.parametrize(
    ("job_id", "state", "memory"),
    [
        ("1", "CONFIGURING", 1000),  # no --mem, no DefMemPerCPU: a whole node's memory
        ("5", "PENDING", 1000),
        ("6", "PENDING", 1000),  # --mem=0: all of it, too
    ],
    ids=["configuring-no-mem", "pending-no-mem", "mem-0"],
)
def test_squeue_without_default_memory(job_id: str, state: str, memory: int):
    job = jobs("squeue-nodefmem.txt")[job_id]
    assert job.min_memory == 0
    assert (job.state, job.memory_per_node()) == (state, memory * MiB)


# --- sinfo -------------------------------------------------------------------------------

# node: base state, flags, joined, drain, cpus allocated, memory (MiB), features, reason
SINFO = {
    ("sinfo-mixed.txt", "cloud1"): (
        "ALLOCATED", {"CLOUD", "POWER_UP"}, True, False, 2, 1000, (), ""
    ),
    ("sinfo-mixed.txt", "cloud3"): (
        "ALLOCATED", {"CLOUD", "POWERED_DOWN"}, False, False, 2, 1000, (), ""
    ),
    ("sinfo-mixed.txt", "cloud4"): (
        "DOWN", {"CLOUD", "POWERED_DOWN"}, False, False, 0, 1000, (), "capacity test"
    ),
    ("sinfo-requeued.txt", "cloud3"): (
        "IDLE", {"CLOUD", "POWERING_DOWN"}, False, False, 0, 1000, (), "no capacity"
    ),
    ("sinfo-dynamic.txt", "cloud1"): (
        "ALLOCATED", {"CLOUD", "DRAIN", "POWER_UP"}, True, True, 2, 1000, (), "shoal idle"
    ),
    ("sinfo-dynamic.txt", "dyn1"): (
        "ALLOCATED", {"DYNAMIC_NORM"}, True, False, 2, 4000, ("dyn", "big"), ""
    ),
}  # fmt: skip


@pytest.mark.parametrize(("name", "node"), list(SINFO), ids=[f"{f}-{n}" for f, n in SINFO])
def test_sinfo(name: str, node: str):
    by_name = {n.name: n for n in parse_sinfo(data(name))}
    got = by_name[node]
    state, flags, joined, drain, allocated, _memory, features, reason = SINFO[(name, node)]
    assert (got.state, got.flags, got.joined, got.drain) == (state, flags, joined, drain)
    assert got.cpus_allocated == allocated
    assert (got.features, got.reason) == (features, reason)
    assert got.address == "127.0.0.1"
    assert got.dynamic == (node == "dyn1")


def test_state_text_puts_the_flags_after_the_state_in_order():
    node = next(n for n in parse_sinfo(data("sinfo-requeued.txt")) if n.name == "cloud3")
    assert node.state_text == "idle+cloud+powering_down"


def test_sinfo_gives_one_record_for_a_node_listed_once_per_partition():
    lines = data("sinfo-dynamic.txt").splitlines()
    first, dyn1 = lines[0], lines[-1]
    names = [n.name for n in parse_sinfo("\n".join([dyn1, first, dyn1]) + "\n")]
    assert names == ["dyn1", first.split("\t")[0]]


# --- demand ------------------------------------------------------------------------------


def shape(wall: float, mib: int, cores: int) -> Shape:
    return Shape(wall, float(mib * MiB), float(cores), 0.0, False)


def test_demand_mixed():
    got = slurm_demand(parse_squeue(data("squeue-mixed.txt")), parse_sinfo(data("sinfo-mixed.txt")))
    assert set(got.demand.queued) == {
        QueuedJobs(shape(1800, 500, 2), 1),  # 5: Resources
        QueuedJobs(shape(H, 300, 2), 1, 2),  # 6: -n3 -N2 --mem-per-cpu=150: one 2-node gang
        QueuedJobs(shape(2700, 300, 1), 3),  # array 7, three tasks
        QueuedJobs(shape(H, 100, 1), 1),  # 10: ReqNodeNotAvail
        QueuedJobs(shape(H, 2000, 1), 1),  # 11: PartitionConfig
        QueuedJobs(shape(300, 100, 1), 1),  # 14: PartitionConfig, two partitions
    }
    assert got.skipped == {"JobHeldUser": 1, "JobHeldAdmin": 1, "BeginTime": 1, "Dependency": 1}
    running = {(r.node_id, r.shape) for r in got.demand.running}
    assert running == {
        ("cloud1", shape(5400, 150, 1)),  # job 1 holds a CPU on each of its two nodes
        ("cloud2", shape(5400, 150, 1)),
        ("cloud1", shape(600, 100, 1)),  # array 2's tasks
        ("cloud2", shape(600, 100, 1)),
        ("cloud3", shape(2 * 86400, 600, 2)),  # job 4, configuring: its node is booting
    }
    assert len(got.demand.running) == 5
    assert all(r.elapsed >= 0 for r in got.demand.running)
    assert got.joined == {"cloud1", "cloud2"}


def test_demand_multi_node_jobs_are_gangs_of_what_slurm_allocates_per_node():
    """Real squeue output of pending -N jobs: each one gang, its shape per node."""
    got = slurm_demand(parse_squeue(data("squeue-gangs.txt")), ())
    assert sorted(got.demand.queued, key=lambda q: (q.node_count, q.shape.cores)) == [
        QueuedJobs(shape(H, 400, 2), 1, 2),  # -N2 --mem-per-cpu=200 -c2: 2 CPUs x 200M a node
        QueuedJobs(shape(H, 300, 3), 1, 2),  # -N2 --ntasks-per-node=3 --mem-per-cpu=100
        QueuedJobs(shape(H, 700, 4), 1, 2),  # -N2 --ntasks-per-node=2 -c2 --mem=700 (per node)
        QueuedJobs(shape(3600, 500, 1), 1, 3),  # -N3 --mem=500: 500M on each node
        QueuedJobs(shape(H, 200, 2), 1, 3),  # -N3 -n4 --mem-per-cpu=100: the busiest node's 2
    ]


def test_demand_counts_a_requeued_job_waiting_out_its_begin_time():
    got = slurm_demand(parse_squeue(data("squeue-requeued.txt")), ())
    assert QueuedJobs(shape(2 * 86400, 600, 2), 1) in got.demand.queued
    assert got.skipped["BeginTime"] == 1  # job 12's own --begin still is not demand
    assert "cloud3" not in {r.node_id for r in got.demand.running}


def test_demand_dynamic_nodes_joined_and_busy():
    got = slurm_demand(
        parse_squeue(data("squeue-dynamic.txt")), parse_sinfo(data("sinfo-dynamic.txt"))
    )
    # cloud1 (allocated+drain, reason "shoal idle") runs its job but takes no new one: it is
    # draining, never room for the queued jobs
    assert got.joined == {"cloud2", "dyn1"}
    assert got.draining == {"cloud1"}
    assert "cloud1" in {r.node_id for r in got.demand.running}  # still busy: not idle
    on_dyn1 = sorted(r.shape.memory for r in got.demand.running if r.node_id == "dyn1")
    assert on_dyn1 == [100 * MiB, 2000 * MiB]


@pytest.mark.parametrize(
    ("partitions", "expected"),
    [
        ({"dyn"}, {QueuedJobs(shape(H, 2000, 1), 1), QueuedJobs(shape(300, 100, 1), 1)}),
        ({"nowhere"}, set()),
    ],
    ids=["dyn-only", "no-match"],
)
def test_demand_partition_filter(partitions: set[str], expected: set[QueuedJobs]):
    got = slurm_demand(parse_squeue(data("squeue-mixed.txt")), (), partitions=partitions)
    assert set(got.demand.queued) == expected


def test_demand_options_reach_the_shapes():
    got = slurm_demand(
        parse_squeue(data("squeue-nodefmem.txt")),
        (),
        default_wall_time=600.0,
        disk=5.0,
        preemptible=True,
    )
    assert got.demand.queued == (QueuedJobs(Shape(600.0, 1000.0 * MiB, 1.0, 5.0, True), 2),)
    assert {r.node_id for r in got.demand.running} == {"cloud1", "cloud2", "cloud3", "cloud4"}
    assert all(isinstance(r, RunningJob) for r in got.demand.running)


# --- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("config-defmem.txt", 100 * MiB), ("config-nodefmem.txt", None)],
    ids=["DefMemPerCPU=100", "unset"],
)
def test_def_mem_per_cpu(name: str, expected: int | None):
    config = parse_slurm_config(data(name))
    assert def_mem_per_cpu(config) == expected
    assert config["SuspendTime"] == "15 sec"
    assert config["SlurmctldHost[0]"].endswith("(127.0.0.1)")


def test_def_mem_per_cpu_fills_in_when_slurm_gave_no_memory():
    job = jobs("squeue-mixed.txt")["6"]  # 3 CPUs on 2 nodes: 2 on the busier node
    bare = dataclasses.replace(job, min_memory=0, tres={})
    assert bare.memory_per_node() == 0
    assert bare.memory_per_node(def_mem_per_cpu=100 * MiB) == 200 * MiB


# --- values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("UNLIMITED", None),
        ("NOT_SET", None),
        ("Partition_Limit", None),
        ("INVALID", None),  # squeue's text for a time above a year
        ("5", 300.0),  # minutes
        ("0:45", 45.0),  # minutes:seconds, as squeue prints short limits
        ("30:00", 1800.0),
        ("1:30:00", 5400.0),
        ("2-00:00:00", 172800.0),
        ("1-2", 93600.0),  # days-hours
        ("1-2:30", 95400.0),  # days-hours:minutes
        ("10-01:02:03", 867723.0),
    ],
)
def test_parse_slurm_time(text: str, seconds: float | None):
    assert parse_slurm_time(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4", "-5", "1-", "1.5", "1:60x"])
def test_parse_slurm_time_rejects(text: str):
    with pytest.raises(ValueError, match="not a Slurm time"):
        parse_slurm_time(text)


def squeue_time(seconds: int) -> str:
    """How squeue prints a time (its _print_secs): d-hh:mm:ss, h:mm:ss or m:ss."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


@given(st.integers(min_value=0, max_value=365 * 86400))
def test_parse_slurm_time_reads_what_squeue_prints(seconds: int):
    assert parse_slurm_time(squeue_time(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("100", 100 * MiB),  # bare: megabytes
        ("600M", 600 * MiB),
        ("1G", 1024 * MiB),
        ("1.50G", 1536 * MiB),
        ("512K", 512 * 1024),
        ("2T", 2 * 1024**4),
    ],
)
def test_parse_memory(text: str, size: int):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5X", "-1M", "1,5G"])
def test_parse_memory_rejects(text: str):
    with pytest.raises(ValueError, match="not a Slurm size"):
        parse_memory(text)


@pytest.mark.parametrize(
    ("task_id", "count"),
    [("3", 1), ("1-3", 3), ("1-3,7", 4), ("0-9:2", 5), ("0-9:2%2", 5), ("1-1000%10", 1000)],
)
def test_unexpanded_array_ranges_count_their_tasks(task_id: str, count: int):
    line = data("squeue-mixed.txt").splitlines()[0].split("\t")
    line[SQUEUE_FIELDS.index("arraytaskid")] = task_id
    [job] = parse_squeue("\t".join(line))
    assert job.array_tasks == count
    assert job.job_id == f"{line[SQUEUE_FIELDS.index('arrayjobid')]}_{task_id}"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("cloud[1-3],dyn1", ["cloud1", "cloud2", "cloud3", "dyn1"]),
        ("n[01-02]", ["n01", "n02"]),
        ("", []),
        ("(null)", []),
    ],
)
def test_expand_hostlist(text: str, names: list[str]):
    assert expand_hostlist(text) == names


def test_compress_hostlist_round_trips():
    assert compress_hostlist(["cloud2", "cloud1", "dyn1", "cloud4", "cloud1"]) == (
        "cloud[1-2,4],dyn1"
    )
    assert expand_hostlist(compress_hostlist(["a1", "a2", "b7"])) == ["a1", "a2", "b7"]


def test_bad_hostlist_is_a_value_error():
    with pytest.raises(ValueError, match="not a Slurm hostlist"):
        expand_hostlist("cloud[1-")


# --- malformed output --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda line: line.rsplit("\t", 3)[0], "expected 16 tab-separated fields, got 13"),
        (lambda line: line.replace("\t2\t2\t600M", "\tmany\t2\t600M", 1), "CPU count"),
        (lambda line: line.replace("600M", "600Q", 1), "not a Slurm size"),
        (lambda line: line.replace("2-00:00:00", "soon", 1), "not a Slurm time"),
    ],
    ids=["short-line", "bad-int", "bad-size", "bad-time"],
)
def test_squeue_parse_errors_name_the_line(mangle, message: str):
    lines = data("squeue-mixed.txt").splitlines()
    lines[0] = mangle(lines[0])
    with pytest.raises(SlurmParseError, match=message) as info:
        parse_squeue("\n".join(lines))
    assert "squeue line 1:" in str(info.value)


def test_sinfo_parse_error_names_the_line():
    lines = data("sinfo-mixed.txt").splitlines()
    lines[2] = lines[2].replace("\t2/0/0/2\t", "\tplenty/0/0/2\t", 1)
    with pytest.raises(SlurmParseError, match=r"sinfo line 3: allocated CPUs"):
        parse_sinfo("\n".join(lines))


# --- whose drain -----------------------------------------------------------------------------


class FixtureClient:
    """A SlurmClient answering with captured output (``nodes`` may be edited)."""

    def __init__(self, squeue: str, sinfo: str) -> None:
        self.jobs_ = parse_squeue(data(squeue))
        self.nodes_ = parse_sinfo(data(sinfo))

    async def config(self) -> dict[str, str]:
        return parse_slurm_config(data("config-defmem.txt"))

    async def jobs(self) -> list[SlurmJob]:
        return list(self.jobs_)

    async def nodes(self) -> list:
        return list(self.nodes_)


async def test_only_a_drain_with_shoals_exact_reason_is_shoals() -> None:
    """cloud1 is drained with reason "shoal idle" (sinfo-dynamic.txt): a prefix of shoal's
    reason is someone else's drain -- not adopted, not cleaned up, not shoal's to undrain or
    terminate. Drained with "shoal" itself, it is shoal's."""
    client = FixtureClient("squeue-dynamic.txt", "sinfo-dynamic.txt")
    cloud1 = next(n for n in client.nodes_ if n.name == "cloud1")
    assert cloud1.drain and cloud1.reason == "shoal idle" and not drained_by_shoal(cloud1)
    source = SlurmDemandSource(client, FakeClock(), translate=lambda n: f"i-{n}")  # type: ignore[arg-type]
    update = await source.read()
    assert isinstance(update, DemandUpdate)
    assert update.draining_nodes == {"i-cloud1"} and update.own_drains == frozenset()

    client.nodes_ = [
        dataclasses.replace(n, reason=DRAIN_REASON) if n.name == "cloud1" else n
        for n in client.nodes_
    ]
    update = await source.read()
    assert isinstance(update, DemandUpdate) and update.own_drains == {"i-cloud1"}
