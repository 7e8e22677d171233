"""Slurm's text as records: pure functions over the output of ``squeue``, ``sinfo`` and
``scontrol show config`` (no I/O; ``daemon.slurm.client`` runs the commands).

The formats are ``daemon.slurm.constants``' field lists. Plain ``-o`` letters cannot be used
alone: ``%m`` prints the memory of ``--mem`` and of ``--mem-per-cpu`` alike (squeue strips the
per-CPU flag), and the node state letters show one flag of several. ``tres-alloc``
(``cpu=3,mem=450M,node=2,billing=3``: the request while pending, the allocation once running)
tells the two memory forms apart, and ``StateComplete``
(``mixed+cloud+not_responding+powering_up``) shows every node flag. A line not in the format
asked for is a ``SlurmParseError``; a value not in Slurm's format a ValueError. Hostlists
(``expand_hostlist``, ``compress_hostlist``) are ``providers.hostlist``'s, re-exported here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from shoal.daemon.slurm.constants import HELD_REASONS, SEP, SINFO_FIELDS, SQUEUE_FIELDS
from shoal.daemon.slurm.errors import SlurmParseError
from shoal.providers.hostlist import compress_hostlist, expand_hostlist

__all__ = [
    "SlurmJob",
    "SlurmNode",
    "compress_hostlist",
    "def_mem_per_cpu",
    "expand_hostlist",
    "parse_memory",
    "parse_seconds",
    "parse_sinfo",
    "parse_slurm_config",
    "parse_slurm_time",
    "parse_squeue",
]

MiB = 1024**2
_EMPTY: Mapping[str, str] = MappingProxyType({})

# --- values --------------------------------------------------------------------------------

# squeue prints INVALID for a time above a year (or negative): no usable limit either
_UNSET_TIMES = frozenset(
    {"UNLIMITED", "INFINITE", "NOT_SET", "PARTITION_LIMIT", "N/A", "NONE", "INVALID"}
)
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)B?$", re.IGNORECASE)
_UNITS = {"": MiB, "K": 1024, "M": MiB, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_slurm_time(text: str) -> float | None:
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
    ``flags`` the rest (CLOUD, POWERED_DOWN, POWERING_UP, NOT_RESPONDING, DRAIN, ...). Only
    what shoal reads: the clean-up loop's allocated CPUs, features (its mark), address
    (an instance's) and reason, the power saver's and the drain adopter's state."""

    name: str
    state: str
    flags: frozenset[str]
    cpus_allocated: int
    features: tuple[str, ...] = ()
    address: str = ""
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
    time_used = parse_slurm_time(f["timeused"])
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
        time_limit=parse_slurm_time(f["timelimit"]),
        time_used=time_used or 0.0,
        partitions=tuple(p for p in f["partition"].split(",") if p),
        node_list=tuple(expand_hostlist(f["nodelist"])),
        tres=_tres(f["tres-alloc"]),
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
        state=state,
        flags=frozenset(flags),
        cpus_allocated=_int(allocated, "allocated CPUs"),
        features=_features(f["features"]),
        address=_none(f["nodeaddr"]),
        reason="" if reason == "none" else reason,
    )


def parse_sinfo(text: str) -> tuple[SlurmNode, ...]:
    """Nodes from the output of ``sinfo_argv``: one record per node (``sinfo -N`` prints a
    node once per partition it is in), in first-seen order."""
    nodes: dict[str, SlurmNode] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            node = _parse_node(line)
        except ValueError as exc:
            raise SlurmParseError(f"sinfo line {number}: {exc}: {line!r}") from None
        nodes.setdefault(node.name, node)
    return tuple(nodes.values())


_CONFIG_LINE = re.compile(r"^(\S+)\s*=\s?(.*)$")


def parse_slurm_config(text: str) -> dict[str, str]:
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
