"""Slurm's jobs and nodes as shoal's demand (``scaler.model.Demand``), pure.

``slurm_demand`` turns the records of ``daemon.slurm.parse`` into ``SlurmDemand``: PENDING
jobs that wait for capacity become ``QueuedJobs`` (an N-node job one gang of N nodes,
``node_count=N``, its shape what Slurm allocates on each node; array tasks counted), jobs
that hold nodes become one ``RunningJob`` per node, the nodes whose slurmd has registered and
responds are the joined nodes, and drained nodes (which take no new jobs) are draining, not
joined.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from shoal.daemon.slurm.constants import CAPACITY_REASONS, HOLDING_STATES
from shoal.daemon.slurm.parse import SlurmJob, SlurmNode
from shoal.scaler.model import Demand, QueuedJobs, RunningJob
from shoal.scaler.shape import Shape

__all__ = ["SlurmDemand", "slurm_demand"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


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
    reasons``; held jobs never), an N-node job (``-N``) one gang: ``node_count=N`` and a
    per-node shape (``SlurmJob.cores_per_node``, ``memory_per_node``), each array task
    counted. Running: one ``RunningJob`` per node a job holds (RUNNING, CONFIGURING,
    COMPLETING...), ``elapsed`` its time used. A shape's wall time is the job's time limit,
    ``default_wall_time`` when it has none. ``partitions`` keeps only jobs that may run in
    one of them. Joined: nodes whose slurmd registered and responds (``SlurmNode.joined``)
    and that take new work: a drained node is in ``draining`` instead, so it is never counted
    as room for the queued jobs.
    """
    queued: Counter[tuple[Shape, int]] = Counter()  # (per-node shape, node count)
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
                queued[shape, max(job.nodes, 1)] += job.array_tasks
            else:
                skipped[job.reason.split(",")[0].strip() or "None"] += job.array_tasks
        elif job.state in HOLDING_STATES:
            running.extend(RunningJob(shape, name, job.time_used) for name in job.node_list)
    demand = Demand(
        queued=tuple(QueuedJobs(shape, count, n) for (shape, n), count in queued.items()),
        running=tuple(running),
    )
    nodes = tuple(nodes)
    joined = frozenset(node.name for node in nodes if node.joined and not node.drain)
    draining = frozenset(node.name for node in nodes if node.drain)
    return SlurmDemand(demand, joined, MappingProxyType(dict(skipped)), draining)
