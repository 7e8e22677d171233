"""Talking to Slurm: its client commands as asyncio subprocesses, their output as records.

``SlurmClient`` runs ``squeue``, ``sinfo`` and ``scontrol`` (paths, ``SLURM_CONF`` and a
timeout from ``SlurmCommands``) and raises typed errors: ``SlurmUnavailableError`` (a
``RetryableError``: the controller did not answer, or the command timed out),
``SlurmCommandError`` (Slurm refused, e.g. an unknown node name) and ``SlurmParseError``
(output not in the format asked for).

The output formats are fixed ``--Format`` (``-O``) field lists, tab-separated, with the one
free-text field (the reason) last; every field used exists from Slurm 21.08 to 25.x. Plain
``-o`` letters cannot be used alone: ``%m`` prints the memory of ``--mem`` and of
``--mem-per-cpu`` alike (squeue strips the per-CPU flag), and the node state letters show
one flag of several. ``tres-alloc`` (``cpu=3,mem=450M,node=2,billing=3``: the request while
pending, the allocation once running) tells the two memory forms apart, and
``StateComplete`` (``mixed+cloud+not_responding+powering_up``) shows every node flag.

The parsers (``parse_squeue``, ``parse_sinfo``, ``parse_config``, ``parse_duration``,
``parse_memory``) are pure, and ``slurm_demand`` turns their records into shoal's
``Demand``: PENDING jobs that wait for capacity become ``QueuedJobs`` (one shape per node of
an N-node job, array tasks counted), jobs that hold nodes become one ``RunningJob`` per node,
the nodes whose slurmd has registered and responds are the joined nodes, and drained nodes
(which take no new jobs) are draining, not joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

import hostlist
from shoal.providers.errors import ProviderError, RetryableError
from shoal.providers.workers import TAG_SLURM_NODE  # the Slurm node an instance is for
from shoal.scaler.model import Demand, QueuedJobs, RunningJob
from shoal.scaler.shape import Shape

__all__ = [
    "CAPACITY_REASONS",
    "HELD_REASONS",
    "HOLDING_STATES",
    "SINFO_FIELDS",
    "SQUEUE_FIELDS",
    "TAG_SLURM_FEATURES",
    "TAG_SLURM_NODE",
    "SlurmClient",
    "SlurmCommandError",
    "SlurmCommands",
    "SlurmDemand",
    "SlurmError",
    "SlurmJob",
    "SlurmNode",
    "SlurmParseError",
    "SlurmUnavailableError",
    "compress_hostlist",
    "def_mem_per_cpu",
    "expand_hostlist",
    "parse_config",
    "parse_duration",
    "parse_memory",
    "parse_seconds",
    "parse_sinfo",
    "parse_squeue",
    "sinfo_argv",
    "slurm_demand",
    "squeue_argv",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

MiB = 1024**2
_EMPTY: Mapping[str, str] = MappingProxyType({})

# Tags on the instances of a Slurm cluster (besides providers.base's membership tags):
# the features a dynamic node registers with (slurmd -Z --conf "Feature=..."), comma-separated
TAG_SLURM_FEATURES = "shoal:slurm-features"

# --- errors ------------------------------------------------------------------------------


class SlurmError(ProviderError):
    """A Slurm command failed. ``argv`` is what ran, ``returncode`` its exit status (None if
    it never ran or was killed), ``stderr`` what it said."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
        code: str = "",
    ) -> None:
        operation = os.path.basename(argv[0]) if argv else ""
        super().__init__(message, code=code, operation=operation)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr


class SlurmUnavailableError(SlurmError, RetryableError):
    """slurmctld did not answer (down, restarting, overloaded) or the command timed out."""


class SlurmCommandError(SlurmError):
    """Slurm refused the command (unknown node, invalid state...) or it could not be run."""


class SlurmParseError(SlurmError, ValueError):
    """The command's output is not in the format asked for."""


# stderr of a client that could not reach slurmctld, in the versions we know
_UNAVAILABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Zero Bytes were transmitted"
    r"|Connection refused|connect failure|Slurm backup controller in standby mode"
    r"|Communication connection failure",
    re.IGNORECASE,
)

# --- formats -----------------------------------------------------------------------------

SEP = "\t"
SQUEUE_FIELDS = (
    "jobid",
    "arrayjobid",
    "arraytaskid",
    "state",
    "prioritylong",
    "restartcnt",
    "numcpus",
    "mincpus",
    "minmemory",
    "numnodes",
    "timelimit",
    "timeused",
    "partition",
    "nodelist",
    "tres-alloc",
    "feature",
    "reason",  # free text: last
)
SINFO_FIELDS = (
    "nodelist",
    "partitionname",
    "statecomplete",
    "cpus",
    "cpusstate",
    "memory",
    "features",
    "features_act",
    "nodeaddr",
    "nodehost",
    "reason",  # free text: last
)


def _format(fields: Sequence[str]) -> str:
    # "name:0<TAB>": width 0 prints the whole value (the default width, 20, truncates), and
    # what follows the width is printed after the value: our separator.
    return ",".join(f"{name}:0{SEP}" for name in fields[:-1]) + f",{fields[-1]}:0"


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlurmCommands:
    """Where the Slurm client commands are and how to run them."""

    squeue: str = "squeue"
    sinfo: str = "sinfo"
    scontrol: str = "scontrol"
    slurm_conf: str | None = None  # SLURM_CONF for the commands; None: inherit/default
    timeout: float = 30.0  # seconds before a command is killed

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.slurm_conf is not None:
            env["SLURM_CONF"] = self.slurm_conf
        return env


def squeue_argv(commands: SlurmCommands) -> list[str]:
    """All pending and running jobs, array tasks one per line (``-r``), in our format."""
    return [commands.squeue, "--noheader", "--array", f"--Format={_format(SQUEUE_FIELDS)}"]


def sinfo_argv(commands: SlurmCommands) -> list[str]:
    """Every node, one line per node and partition (``-N``), hidden partitions too (``-a``)."""
    return [
        commands.sinfo,
        "--noheader",
        "--Node",
        "--all",
        f"--Format={_format(SINFO_FIELDS)}",
    ]


# --- values --------------------------------------------------------------------------------

# squeue prints INVALID for a time above a year (or negative): no usable limit either
_UNSET_TIMES = frozenset(
    {"UNLIMITED", "INFINITE", "NOT_SET", "PARTITION_LIMIT", "N/A", "NONE", "INVALID"}
)
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)B?$", re.IGNORECASE)
_UNITS = {"": MiB, "K": 1024, "M": MiB, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_duration(text: str) -> float | None:
    """Seconds from a Slurm time: ``UNLIMITED``/``NOT_SET``/``INVALID``... -> None, else one of
    ``minutes``, ``minutes:seconds``, ``hours:minutes:seconds``, ``days-hours``,
    ``days-hours:minutes``, ``days-hours:minutes:seconds`` (squeue prints ``30:00`` for 30
    minutes, ``1:00:00``, ``2-00:00:00``). Raises ValueError otherwise."""
    value = text.strip()
    if value.upper() in _UNSET_TIMES:
        return None
    match = _TIME.match(value)
    if match is None:
        raise ValueError(f"not a Slurm time: {text!r}")
    days, first, second, third = match.groups()
    parts = [int(p) for p in (first, second, third) if p is not None]
    if days is not None:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = [*parts, 0, 0][:3]
        return float(int(days) * 86400 + hours * 3600 + minutes * 60 + seconds)
    if len(parts) == 1:  # minutes
        return float(parts[0] * 60)
    if len(parts) == 2:  # minutes:seconds
        return float(parts[0] * 60 + parts[1])
    return float(parts[0] * 3600 + parts[1] * 60 + parts[2])


def parse_seconds(text: str) -> float | None:
    """Seconds from a duration as ``scontrol show config`` prints it (``30 sec``, ``0 sec``,
    ``UNLIMITED``, ``NONE``): None when unset. Raises ValueError otherwise."""
    value = text.strip()
    if value.upper() in _UNSET_TIMES:
        return None
    number, _, unit = value.partition(" ")
    if unit.strip() not in ("", "sec", "secs", "seconds") or not number.isdigit():
        raise ValueError(f"not a Slurm duration in seconds: {text!r}")
    return float(number)


def parse_memory(text: str) -> int:
    """Bytes from a Slurm size: ``600M``, ``1G``, ``1.50G``, ``100`` (megabytes when bare;
    Slurm's units are binary). Raises ValueError otherwise."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"not a Slurm size: {text!r}")
    number, unit = match.groups()
    return round(float(number) * _UNITS[unit.upper()])


def expand_hostlist(text: str) -> list[str]:
    """``cloud[1-3],dyn1`` -> ``["cloud1", "cloud2", "cloud3", "dyn1"]``; "" -> []."""
    text = text.strip()
    if not text or text in ("(null)", "N/A"):
        return []
    try:
        return list(hostlist.expand_hostlist(text))
    except hostlist.BadHostlist as exc:
        raise ValueError(f"not a Slurm hostlist: {text!r} ({exc})") from None


def compress_hostlist(names: Iterable[str]) -> str:
    """``["cloud1", "cloud2", "dyn1"]`` -> ``cloud[1-2],dyn1`` (sorted, duplicates dropped)."""
    return str(hostlist.collect_hostlist(sorted(set(names))))


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} is not an integer: {text!r}") from None


def _tres(text: str) -> Mapping[str, str]:
    """``cpu=2,mem=600M,node=1,billing=2`` -> {"cpu": "2", "mem": "600M", ...}."""
    if text in ("", "N/A", "(null)"):
        return _EMPTY
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"not a TRES list: {text!r}")
        out[key] = value
    return MappingProxyType(out)


def _array_tasks(task_id: str) -> int:
    """How many tasks an array task id stands for: ``3`` -> 1, ``1-3,7`` -> 4, ``0-9:2%2`` -> 5."""
    spec = task_id.split("%")[0]
    count = 0
    for part in spec.split(","):
        bounds, _, step_text = part.partition(":")
        first, _, last = bounds.partition("-")
        step = _int(step_text, "array step") if step_text else 1
        lo = _int(first, "array task id")
        hi = _int(last, "array task id") if last else lo
        if hi < lo or step < 1:
            raise ValueError(f"not an array task range: {task_id!r}")
        count += (hi - lo) // step + 1
    return count


# --- records -----------------------------------------------------------------------------

HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})
# reasons of a PENDING job that more nodes would satisfy (matched on the text before a comma:
# "ReqNodeNotAvail, UnavailableNodes:cloud3"). Not: Dependency, BeginTime (but see
# slurm_demand for requeued jobs), limits, held jobs, "None" (not yet looked at).
CAPACITY_REASONS = frozenset(
    {"Resources", "Priority", "PartitionConfig", "NodeDown", "ReqNodeNotAvail"}
)
# states of a job that holds its nodes
HOLDING_STATES = frozenset(
    {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING"}
)
_NOT_JOINED = frozenset({"POWERED_DOWN", "POWERING_UP", "POWER_DOWN", "POWERING_DOWN"})
_HELD_TEXT = re.compile(r"held", re.IGNORECASE)  # "launch failed requeued held", ...


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """One line of ``squeue``: a job, or one task (or a range of tasks) of a job array.

    Memory is in bytes, times in seconds; ``time_limit`` is None when unlimited or not set.
    ``min_memory`` is squeue's per-node-or-per-CPU figure; ``tres`` the job's TRES (its
    request while pending, its allocation after), whose ``mem`` is the job's total.
    """

    job_id: str  # "12", or "7_2" for a task of array 7
    state: str  # PENDING, RUNNING, CONFIGURING, ...
    reason: str
    priority: int
    restarts: int  # how often it was requeued
    cpus: int  # in all
    min_cpus_per_node: int
    min_memory: int
    nodes: int
    time_limit: float | None
    time_used: float
    partitions: tuple[str, ...]
    node_list: tuple[str, ...]  # the nodes it runs on (empty while pending)
    tres: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    features: str = ""
    array_job_id: str | None = None
    array_task_id: str | None = None  # "2"; a range such as "1-3" when not expanded
    array_tasks: int = 1  # how many tasks this line stands for

    @property
    def held(self) -> bool:
        """Held by a user or an admin (``scontrol hold``, ``sbatch --hold``): priority 0."""
        if self.state != "PENDING":
            return False
        reason = self.reason.split(",")[0]
        return reason in HELD_REASONS or self.priority == 0 or bool(_HELD_TEXT.search(reason))

    @property
    def cores_per_node(self) -> int:
        """CPUs on each node: the busiest node's share of ``cpus`` (``-n3 -N2`` -> 2)."""
        return max(self.min_cpus_per_node, math.ceil(self.cpus / max(self.nodes, 1)), 1)

    def memory_per_node(self, def_mem_per_cpu: int | None = None) -> int:
        """Bytes on each node: ``--mem``, or ``--mem-per-cpu`` x this job's CPUs on the node.

        squeue prints both as one number; the TRES total (``mem`` over all nodes) tells them
        apart: it is that number x nodes for ``--mem`` and x CPUs for ``--mem-per-cpu``.
        Without either, the TRES total per node (Slurm applies DefMemPerCPU, or gives the
        whole node when no default is set), else ``def_mem_per_cpu`` (bytes) x CPUs.
        """
        total = parse_memory(self.tres["mem"]) if "mem" in self.tres else None
        nodes = max(self.nodes, 1)
        if self.min_memory > 0:
            per_cpu = self.min_memory * self.cpus
            per_node = self.min_memory * nodes
            if total is not None and abs(total - per_cpu) < abs(total - per_node):
                return self.min_memory * self.cores_per_node
            return self.min_memory
        if total is not None:
            return math.ceil(total / nodes)
        if def_mem_per_cpu:
            return def_mem_per_cpu * self.cores_per_node
        return 0


@dataclass(frozen=True, slots=True)
class SlurmNode:
    """One node of ``sinfo``. ``state`` is the base state (IDLE, MIXED, ALLOCATED, DOWN...),
    ``flags`` the rest (CLOUD, POWERED_DOWN, POWERING_UP, NOT_RESPONDING, DRAIN, ...)."""

    name: str
    partitions: tuple[str, ...]
    state: str
    flags: frozenset[str]
    cpus: int
    cpus_allocated: int
    memory: int  # bytes (RealMemory)
    features: tuple[str, ...] = ()
    active_features: tuple[str, ...] = ()
    address: str = ""
    hostname: str = ""
    reason: str = ""

    @property
    def state_text(self) -> str:
        """The state and its flags, lower case, flags sorted: ``idle+cloud+powered_down``."""
        return "+".join([self.state.lower(), *sorted(f.lower() for f in self.flags)])

    @property
    def responding(self) -> bool:
        return "NOT_RESPONDING" not in self.flags

    @property
    def powered_down(self) -> bool:
        return "POWERED_DOWN" in self.flags

    @property
    def powering_up(self) -> bool:
        return "POWERING_UP" in self.flags

    @property
    def powering_down(self) -> bool:
        return "POWERING_DOWN" in self.flags

    @property
    def drain(self) -> bool:
        """Draining or drained: no new jobs (``scontrol update state=drain``)."""
        return "DRAIN" in self.flags

    @property
    def down(self) -> bool:
        return self.state == "DOWN"

    @property
    def dynamic(self) -> bool:
        return any(flag.startswith("DYNAMIC") for flag in self.flags)

    @property
    def joined(self) -> bool:
        """Its slurmd registered and answers: responding, and not powered down, powering up,
        asked to power down or powering down (a node forced down before its slurmd came up
        shows neither NOT_RESPONDING nor POWERING_UP, only POWER_DOWN). A DOWN or drained node
        that answers has joined all the same."""
        if self.state in ("FUTURE", "UNKNOWN"):
            return False
        return self.responding and not self.flags & _NOT_JOINED


# --- parsers -------------------------------------------------------------------------------


def _fields(line: str, names: Sequence[str]) -> dict[str, str]:
    values = line.split(SEP, len(names) - 1)
    if len(values) != len(names):
        raise ValueError(f"expected {len(names)} tab-separated fields, got {len(values)}")
    return {name: value.strip() for name, value in zip(names, values, strict=True)}


def _none(text: str) -> str:
    return "" if text.upper() in ("(NULL)", "N/A") else text


def _parse_job(line: str) -> SlurmJob:
    f = _fields(line, SQUEUE_FIELDS)
    task = _none(f["arraytaskid"]) or None
    array_job = f["arrayjobid"] if task is not None else None
    job_id = f"{array_job}_{task}" if task is not None else f["jobid"]
    time_used = parse_duration(f["timeused"])
    return SlurmJob(
        job_id=job_id,
        state=f["state"].upper(),
        reason=f["reason"],
        priority=_int(f["prioritylong"], "priority"),
        restarts=_int(f["restartcnt"], "restart count"),
        cpus=_int(f["numcpus"], "CPU count"),
        min_cpus_per_node=_int(f["mincpus"], "CPUs per node"),
        min_memory=parse_memory(f["minmemory"]),
        nodes=_int(f["numnodes"], "node count"),
        time_limit=parse_duration(f["timelimit"]),
        time_used=time_used or 0.0,
        partitions=tuple(p for p in f["partition"].split(",") if p),
        node_list=tuple(expand_hostlist(f["nodelist"])),
        tres=_tres(f["tres-alloc"]),
        features=_none(f["feature"]),
        array_job_id=array_job,
        array_task_id=task,
        array_tasks=_array_tasks(task) if task is not None else 1,
    )


def parse_squeue(text: str) -> tuple[SlurmJob, ...]:
    """Jobs from the output of ``squeue_argv`` (blank lines skipped)."""
    jobs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            jobs.append(_parse_job(line))
        except ValueError as exc:
            raise SlurmParseError(f"squeue line {number}: {exc}: {line!r}") from None
    return tuple(jobs)


def _features(text: str) -> tuple[str, ...]:
    return tuple(f for f in _none(text).split(",") if f)


def _parse_node(line: str) -> SlurmNode:
    f = _fields(line, SINFO_FIELDS)
    state, *flags = f["statecomplete"].upper().split("+")
    allocated = f["cpusstate"].split("/")[0]
    reason = f["reason"]
    return SlurmNode(
        name=f["nodelist"],
        partitions=(f["partitionname"],) if _none(f["partitionname"]) else (),
        state=state,
        flags=frozenset(flags),
        cpus=_int(f["cpus"], "CPUs"),
        cpus_allocated=_int(allocated, "allocated CPUs"),
        memory=parse_memory(f["memory"]),
        features=_features(f["features"]),
        active_features=_features(f["features_act"]),
        address=_none(f["nodeaddr"]),
        hostname=_none(f["nodehost"]),
        reason="" if reason == "none" else reason,
    )


def parse_sinfo(text: str) -> tuple[SlurmNode, ...]:
    """Nodes from the output of ``sinfo_argv``: one record per node, its partitions merged
    (``sinfo -N`` prints a node once per partition), in first-seen order."""
    nodes: dict[str, SlurmNode] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            node = _parse_node(line)
        except ValueError as exc:
            raise SlurmParseError(f"sinfo line {number}: {exc}: {line!r}") from None
        seen = nodes.get(node.name)
        if seen is not None:
            more = tuple(p for p in node.partitions if p not in seen.partitions)
            node = replace(seen, partitions=seen.partitions + more)
        nodes[node.name] = node
    return tuple(nodes.values())


_CONFIG_LINE = re.compile(r"^(\S+)\s*=\s?(.*)$")


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config`` -> {"DefMemPerCPU": "100", "SuspendTime": "15 sec", ...}."""
    out = {}
    for line in text.splitlines():
        match = _CONFIG_LINE.match(line.strip())
        if match:
            out[match.group(1)] = match.group(2).strip()
    return out


def def_mem_per_cpu(config: Mapping[str, str]) -> int | None:
    """DefMemPerCPU in bytes, or None when unset (``scontrol show config`` then shows
    ``DefMemPerNode`` instead, ``UNLIMITED`` when that is unset too)."""
    value = config.get("DefMemPerCPU", "")
    if not value or value.upper() in ("UNLIMITED", "0"):
        return None
    return parse_memory(value)


# --- demand --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlurmDemand:
    """Shoal's view of a Slurm cluster: the demand, the joined nodes (room for work), the
    drained ones (DRAIN, DRAINING or DRAINED: no room, whatever else they are), and how many
    pending jobs (array tasks counted) were left out, by reason (e.g. {"JobHeldUser": 2})."""

    demand: Demand
    joined: frozenset[str]
    skipped: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    draining: frozenset[str] = frozenset()


def _needs_capacity(job: SlurmJob, reasons: Collection[str]) -> bool:
    reason = job.reason.split(",")[0].strip()
    if reason in reasons:
        return True
    # a requeued batch job (its node failed or was powered down) waits a few seconds of
    # BeginTime before Slurm places it again: it still needs a node
    return reason == "BeginTime" and job.restarts > 0


def slurm_demand(
    jobs: Iterable[SlurmJob],
    nodes: Iterable[SlurmNode],
    *,
    default_wall_time: float = 3600.0,
    def_mem_per_cpu: int | None = None,
    disk: float = 0.0,
    preemptible: bool = False,
    partitions: Collection[str] | None = None,
    capacity_reasons: Collection[str] = CAPACITY_REASONS,
) -> SlurmDemand:
    """Demand from Slurm's jobs and nodes.

    Queued: PENDING jobs whose reason means more nodes would let them run (``capacity_
    reasons``; held jobs never), each node of an N-node job one shape, each array task
    counted. Running: one ``RunningJob`` per node a job holds (RUNNING, CONFIGURING,
    COMPLETING...), ``elapsed`` its time used. A shape's wall time is the job's time limit,
    ``default_wall_time`` when it has none. ``partitions`` keeps only jobs that may run in
    one of them. Joined: nodes whose slurmd registered and responds (``SlurmNode.joined``)
    and that take new work: a drained node is in ``draining`` instead, so it is never counted
    as room for the queued jobs.
    """
    queued: Counter[Shape] = Counter()
    running: list[RunningJob] = []
    skipped: Counter[str] = Counter()
    for job in jobs:
        if partitions is not None and not any(p in partitions for p in job.partitions):
            continue
        wall = job.time_limit if job.time_limit is not None else default_wall_time
        shape = Shape(
            wall,
            float(job.memory_per_node(def_mem_per_cpu)),
            float(job.cores_per_node),
            disk,
            preemptible,
        )
        if job.state == "PENDING":
            if not job.held and _needs_capacity(job, capacity_reasons):
                queued[shape] += job.nodes * job.array_tasks
            else:
                skipped[job.reason.split(",")[0].strip() or "None"] += job.array_tasks
        elif job.state in HOLDING_STATES:
            running.extend(RunningJob(shape, name, job.time_used) for name in job.node_list)
    demand = Demand(
        queued=tuple(QueuedJobs(shape, count) for shape, count in queued.items()),
        running=tuple(running),
    )
    nodes = tuple(nodes)
    joined = frozenset(node.name for node in nodes if node.joined and not node.drain)
    draining = frozenset(node.name for node in nodes if node.drain)
    return SlurmDemand(demand, joined, MappingProxyType(dict(skipped)), draining)


# --- the client ----------------------------------------------------------------------------


def _node_arg(nodes: str | Iterable[str]) -> str:
    names = [nodes] if isinstance(nodes, str) else list(nodes)
    if not names or not all(names):
        raise ValueError("no node names given")
    return compress_hostlist(expand_hostlist(",".join(names)))


class SlurmClient:
    """Async access to one Slurm cluster through its client commands."""

    def __init__(self, commands: SlurmCommands | None = None) -> None:
        self.commands = commands or SlurmCommands()

    async def run(self, argv: Sequence[str]) -> str:
        """Run one command; its stdout. Raises SlurmUnavailableError, SlurmCommandError."""
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.commands.env(),
            )
        except OSError as exc:
            raise SlurmCommandError(
                f"cannot run {argv[0]}: {exc.strerror or exc}", argv=argv, code="exec"
            ) from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.commands.timeout)
        except TimeoutError:
            raise SlurmUnavailableError(
                f"{os.path.basename(argv[0])} did not finish in {self.commands.timeout:g}s",
                argv=argv,
                code="timeout",
            ) from None
        finally:
            if proc.returncode is None:  # timed out or cancelled: do not leave it running
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        stderr = err.decode(errors="replace").strip()
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            kind = SlurmUnavailableError if _UNAVAILABLE.search(stderr) else SlurmCommandError
            log.warning(
                "event=slurm_command_failed command=%s code=%s seconds=%.3f error=%r",
                os.path.basename(argv[0]),
                proc.returncode,
                elapsed,
                stderr,
            )
            raise kind(
                f"{' '.join(argv[:3])} exited {proc.returncode}: {stderr or '(no message)'}",
                argv=argv,
                returncode=proc.returncode,
                stderr=stderr,
                code=str(proc.returncode),
            )
        log.debug("event=slurm_command command=%s seconds=%.3f", os.path.basename(argv[0]), elapsed)
        return out.decode(errors="replace")

    async def jobs(self) -> tuple[SlurmJob, ...]:
        """Pending and running jobs (array tasks one by one)."""
        argv = squeue_argv(self.commands)
        return self._parsed(parse_squeue, await self.run(argv), argv)

    async def nodes(self) -> tuple[SlurmNode, ...]:
        argv = sinfo_argv(self.commands)
        return self._parsed(parse_sinfo, await self.run(argv), argv)

    async def config(self) -> dict[str, str]:
        """``scontrol show config`` as a mapping (see ``def_mem_per_cpu``)."""
        return parse_config(await self.run([self.commands.scontrol, "show", "config"]))

    @staticmethod
    def _parsed(parse: Callable[[str], T], text: str, argv: Sequence[str]) -> T:
        try:
            return parse(text)
        except SlurmParseError as exc:
            raise SlurmParseError(str(exc), argv=argv, code="parse") from None

    async def update_nodes(self, nodes: str | Iterable[str], **settings: str) -> None:
        """``scontrol update NodeName=<hostlist> Key=value ...`` (keys as Slurm spells them)."""
        args = [f"{key}={value}" for key, value in settings.items()]
        await self.run([self.commands.scontrol, "update", f"NodeName={_node_arg(nodes)}", *args])

    async def set_down(self, nodes: str | Iterable[str], reason: str) -> None:
        """Out of service until resumed; its jobs are requeued."""
        await self.update_nodes(nodes, State="DOWN", Reason=reason)

    async def drain(self, nodes: str | Iterable[str], reason: str) -> None:
        """No new jobs; running ones finish."""
        await self.update_nodes(nodes, State="DRAIN", Reason=reason)

    async def resume(self, nodes: str | Iterable[str]) -> None:
        """Back in service (undrain, or leave DOWN)."""
        await self.update_nodes(nodes, State="RESUME")

    async def power_down(
        self, nodes: str | Iterable[str], *, force: bool = False, reason: str | None = None
    ) -> None:
        """Power down once idle (``POWER_DOWN``), or at once, requeueing its jobs
        (``POWER_DOWN_FORCE``); Slurm runs SuspendProgram and the node returns to ``idle~``."""
        settings = {"State": "POWER_DOWN_FORCE" if force else "POWER_DOWN"}
        if reason is not None:
            settings["Reason"] = reason
        await self.update_nodes(nodes, **settings)

    async def set_address(self, node: str, address: str, hostname: str | None = None) -> None:
        """Where slurmctld reaches a node (``NodeAddr``, and ``NodeHostname`` if given)."""
        settings = {"NodeAddr": address}
        if hostname is not None:
            settings["NodeHostname"] = hostname
        await self.update_nodes(node, **settings)

    async def delete_nodes(self, nodes: str | Iterable[str]) -> None:
        """Remove dynamic nodes (``scontrol delete NodeName=...``); they must hold no job."""
        await self.run([self.commands.scontrol, "delete", f"NodeName={_node_arg(nodes)}"])
