"""Builders for planner snapshots: short, readable scenarios for table and property tests."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from shoal.scaler import planner
from shoal.scaler.model import (
    CapacityType,
    Demand,
    NodeInfo,
    NodeState,
    NodeType,
    Offering,
    Plan,
    PlannerState,
    Policy,
    QueuedJobs,
    RunningJob,
    Snapshot,
)
from shoal.scaler.shape import Shape

GiB = 1024**3
HOUR = 3600.0
NOW = 1_000_000.0


def job(
    cores: float = 1,
    mem_gib: float = 1,
    disk_gib: float = 1,
    *,
    wall: float = 7200,
    preemptible: bool = False,
) -> Shape:
    """A job shape; the default run time (2 h) is beyond target time, so no time-sharing."""
    return Shape(wall, mem_gib * GiB, cores, disk_gib * GiB, preemptible)


def node_type(
    name: str = "c5.xlarge",
    cores: float = 4,
    mem_gib: float = 9,
    disk_gib: float = 20,
    *,
    price: float | None = 0.2,
    spot: bool = False,
    min_nodes: int = 0,
    max_nodes: int = 10,
    instance_types: Iterable[str] | None = None,
    zone: str = "us-east-1a",
) -> NodeType:
    """A node type; the defaults leave 4 cores, 8 GiB and 16 GiB for jobs after overhead."""
    types = tuple(instance_types) if instance_types else (name.split(":")[0],)
    return NodeType(
        name=name,
        instance_types=types,
        shape=Shape(HOUR, mem_gib * GiB, cores, disk_gib * GiB, spot),
        price_per_hour=price,
        bid=price if spot else None,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        zones=(zone,),
    )


def node(
    node_id: str,
    t: NodeType,
    state: NodeState = NodeState.READY,
    *,
    age: float = 1200.0,
    static: bool = False,
    now: float = NOW,
) -> NodeInfo:
    return NodeInfo(
        id=node_id,
        node_type=t.name,
        instance_type=t.instance_types[0],
        zone=t.zones[0],
        preemptible=t.preemptible,
        state=state,
        launched_at=now - age,
        static=static,
    )


def queued(shape: Shape, count: int) -> QueuedJobs:
    return QueuedJobs(shape, count)


def running(shape: Shape, node_id: str, elapsed: float = 60.0) -> RunningJob:
    return RunningJob(shape, node_id, elapsed)


def snapshot(
    nodes: Iterable[NodeInfo] = (),
    queue: Iterable[QueuedJobs] = (),
    runs: Iterable[RunningJob] = (),
    unavailable: dict[Offering, float] | None = None,
) -> Snapshot:
    return Snapshot(
        demand=Demand(queued=tuple(queue), running=tuple(runs)),
        nodes=tuple(nodes),
        unavailable=unavailable or {},
    )


def backed_off(t: NodeType, until: float = NOW + 180) -> dict[Offering, float]:
    return {o: until for o in t.offerings()}


def policy(*types: NodeType, **knobs: object) -> Policy:
    """A policy for readable scenarios: no inertia, flat overheads (1 GiB of memory and
    4 GiB of disk a node) and Toil's count packing, unless a test says otherwise."""
    knobs.setdefault("beta_inertia", 0.0)
    knobs.setdefault("node_memory_overhead", 1 * GiB)
    knobs.setdefault("node_disk_overhead", 4 * GiB)
    knobs.setdefault("packing", "count")
    return Policy(node_types=tuple(types), **knobs)  # type: ignore[arg-type]


def unneeded(*ids: str, since: float) -> PlannerState:
    return PlannerState(unneeded_since=dict.fromkeys(ids, since))


def offering(t: NodeType) -> Offering:
    return Offering(t.instance_types[0], t.zone, CapacityType(t.capacity_type))


def record_packings(monkeypatch: pytest.MonkeyPatch) -> list[dict[Shape, int]]:
    """Make the planner's ``binpack`` note the jobs of every packing it runs, pinned (running)
    and other jobs together (then pack them); returns the list it appends them to."""
    seen: list[dict[Shape, int]] = []
    real = planner.binpack

    def recording(jobs, node_shapes, target_time=3600, prices=None, pinned=None):
        noted = dict(pinned or {})
        for shape, count in dict(jobs).items():
            noted[shape] = noted.get(shape, 0) + count
        seen.append(noted)
        return real(jobs, node_shapes, target_time=target_time, prices=prices, pinned=pinned)

    monkeypatch.setattr(planner, "binpack", recording)
    return seen


def launched(p: Plan) -> dict[str, int]:
    """A plan's launches: node type -> nodes."""
    return {launch.node_type: launch.count for launch in p.launches}


def unsched(p: Plan) -> dict[tuple[Shape, tuple[str, ...]], int]:
    """A plan's waiting jobs: (job shape, reasons) -> jobs."""
    return {(u.shape, u.reasons): u.count for u in p.unschedulable}
