"""The planner's input and output: a frozen snapshot in, a frozen plan out.

Everything here is plain data. The daemon builds a ``Snapshot`` each pass
(demand, nodes, offerings in backoff), calls ``scaler.plan(snapshot, policy,
state, now)`` and executes the ``Plan`` it gets back; ``Plan.state`` is the
planner state to pass to the next pass. Times are seconds since the epoch,
given by the caller: nothing in ``scaler`` reads a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from shoal.scaler.shape import Shape

__all__ = [
    "AddCause",
    "CapacityType",
    "Demand",
    "Launch",
    "NodeAction",
    "NodeInfo",
    "NodeState",
    "NodeType",
    "Offering",
    "Plan",
    "PlannerState",
    "Policy",
    "QueuedJobs",
    "RemoveCause",
    "RunningJob",
    "Snapshot",
    "Unschedulable",
]

GiB = 1024**3
_EMPTY: Mapping = MappingProxyType({})


class CapacityType(enum.StrEnum):
    ON_DEMAND = "on-demand"
    SPOT = "spot"


@dataclass(frozen=True, slots=True)
class Offering:
    """Where capacity comes from: instance type x zone x capacity type (the unit of backoff)."""

    instance_type: str
    zone: str
    capacity_type: CapacityType

    def __str__(self) -> str:
        return f"{self.instance_type}/{self.zone}/{self.capacity_type}"


@dataclass(frozen=True, slots=True)
class NodeType:
    """One launchable node type: one entry of Toil's node-type list, plus its limits.

    ``name`` is the entry as written (e.g. ``"c5.4xlarge/c5a.4xlarge:0.42"``) and
    keys everything per type; ``instance_types`` are the alternatives in
    preference order, each launched in ``zones`` in order; ``shape`` is the whole
    machine (before overhead), and is preemptible exactly when ``bid`` is set.
    """

    name: str
    instance_types: tuple[str, ...]
    shape: Shape
    price_per_hour: float | None = None
    bid: float | None = None
    min_nodes: int = 0
    max_nodes: int = 10
    zones: tuple[str, ...] = ()
    placement_group: str | None = None  # a placement strategy ("cluster") for its launches

    @property
    def preemptible(self) -> bool:
        return self.bid is not None

    @property
    def capacity_type(self) -> CapacityType:
        return CapacityType.SPOT if self.preemptible else CapacityType.ON_DEMAND

    def offerings(self) -> tuple[Offering, ...]:
        """Every offering in preference order: each instance type in every zone."""
        zones = self.zones or ("",)
        return tuple(Offering(t, z, self.capacity_type) for t in self.instance_types for z in zones)


class NodeState(enum.StrEnum):
    BOOTING = "booting"  # launched, not yet joined the scheduler: capacity, never idle
    READY = "ready"  # joined and schedulable
    DRAINING = "draining"  # no new work; terminated once idle


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One worker node as the daemon sees it."""

    id: str
    node_type: str  # NodeType.name; "" for a node of no configured type (never touched)
    instance_type: str
    zone: str
    preemptible: bool
    state: NodeState
    launched_at: float
    static: bool = False  # static nodes are never scaled down
    # When the node was first seen joined (None: never, so the join timeout applies), and
    # since when it has been missing from every read after it joined (None: not missing).
    joined_at: float | None = None
    missing_since: float | None = None
    # DRAINING with only the daemon's mark to say so (the drain hook may never have run):
    # not room, and never terminated as drained and idle until the drain is made again
    drain_unconfirmed: bool = False


@dataclass(frozen=True, slots=True)
class QueuedJobs:
    """``count`` queued jobs of one shape. A job of ``node_count`` > 1 is a gang: it runs
    on that many nodes at once, all of one node type (and one zone), and ``shape`` is what
    it needs on *each* node (cores, memory and disk per node, as Slurm's ``-N``)."""

    shape: Shape  # wallTime = expected run time; per node for a gang
    count: int
    node_count: int = 1


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A running job holds its node for its remaining expected time, not its whole wall time."""

    shape: Shape
    node_id: str
    elapsed: float


@dataclass(frozen=True, slots=True)
class Demand:
    queued: tuple[QueuedJobs, ...] = ()
    running: tuple[RunningJob, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    demand: Demand
    nodes: tuple[NodeInfo, ...]
    # offerings the planner must not launch, each with the time its backoff ends
    unavailable: Mapping[Offering, float] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Policy:
    """Toil's policy knobs and shoal's own. Durations in seconds, sizes in bytes."""

    node_types: tuple[NodeType, ...]
    target_time: float = 3600.0
    beta_inertia: float = 0.1  # 0 <= b < 1; weight of the previous estimate
    preemptible_compensation: float = 0.0  # 0..1
    # Toil compensates missing spot nodes only with on-demand nodes of the same instance
    # type; True also uses the first on-demand type that fits when there is no such twin.
    compensate_other_types: bool = False
    # Reserved on each node for the OS and agents. None: Toil's reservation computed from
    # the node's size (scaler.overhead); a number: that many bytes on every node.
    node_memory_overhead: int | None = None
    node_disk_overhead: int | None = None
    scale_down_unneeded_time: float = 600.0
    scale_down_budget: float = 0.1  # fraction of nodes removable per pass (at least 1)
    join_timeout: float = 900.0  # a node never seen joined and older than this is terminated
    # a joined node missing from every read this long is replaced (if it runs nothing);
    # none is while more than max(ok count, max fraction x nodes) are missing (in the
    # cluster or the type): the scheduler is likely at fault, as Cluster Autoscaler's
    # ok-total-unready-count and max-total-unready-percentage
    unhealthy_timeout: float = 600.0
    unhealthy_ok_count: int = 3
    unhealthy_max_fraction: float = 0.45
    cost_ceiling_per_hour: float | None = None
    # "count": each queued job goes to the first type that fits, as in Toil. "cost": the
    # types' live nodes are filled first, then the rest is packed by binpack with prices,
    # for the cheapest mix of types (every type needs a price; else "count" is used).
    # "auto": "cost" when every type has a price, else "count".
    packing: str = "auto"
    # Seconds the cost packer's solver (HiGHS) may take per pass; 0: heuristic only.
    solver_time_limit: float = 0.2
    # The cost packer prices a type at price x (1 + this x its cores): a large node is more
    # often held by one long job after its others end (fragmentation over wall time).
    node_size_premium: float = 0.0


@dataclass(frozen=True, slots=True)
class PlannerState:
    """What the planner remembers between passes. Owned by the caller, replaced every pass."""

    estimates: Mapping[str, float] = field(default_factory=lambda: _EMPTY)  # betaInertia
    unneeded_since: Mapping[str, float] = field(default_factory=lambda: _EMPTY)  # node id -> t
    # queued gang (per-node shape, nodes) -> the time it stops waiting for busy nodes
    # (cost packing, planner._place_gangs), kept while it waits or is queued past that time
    gang_waits: Mapping[tuple[Shape, int], float] = field(default_factory=lambda: _EMPTY)
    # the last plan's unschedulable jobs, as the planner counted them, and the tuple it
    # reported them as: equal jobs are reported as that very tuple again (planner._reported).
    # What the plan reports, not what it decides: no part of the state's equality
    reported: tuple[Mapping[tuple[Shape, tuple[str, ...], int], int], tuple[Unschedulable, ...]] = (
        field(default=(_EMPTY, ()), compare=False, repr=False)
    )

    def next_deadline(self, policy: Policy, now: float) -> float | None:
        """The earliest time after ``now`` a node marked unneeded ripens for removal
        (``policy.scale_down_unneeded_time`` after it was marked) or a gang stops waiting
        for busy nodes, or None."""
        ripe = [t + policy.scale_down_unneeded_time for t in self.unneeded_since.values()]
        return min((t for t in (*ripe, *self.gang_waits.values()) if t > now), default=None)


class AddCause(enum.StrEnum):
    DEMAND = "demand"
    MIN_NODES = "min-nodes"
    PREEMPTIBLE_COMPENSATION = "preemptible-compensation"
    FALLBACK = "fallback"  # the preferred type's offerings are in backoff


class RemoveCause(enum.StrEnum):
    IDLE = "idle"  # unneeded for the unneeded period
    ABOVE_MAX = "above-max"
    JOIN_TIMEOUT = "join-timeout"  # booted but never joined; its offering should back off
    UNHEALTHY = "unhealthy"  # joined, then missing from the reads for the unhealthy timeout
    STOPPED = "stopped"  # stopped by someone else (shoal never stops one): it only costs
    INTERRUPTED = "interrupted"  # the cloud takes it away (a spot interruption warning)


@dataclass(frozen=True, slots=True)
class Launch:
    node_type: str
    count: int
    cause: AddCause
    message: str  # e.g. "32 queued jobs need 4 x c5.4xlarge"
    # Gangs within ``count``: each entry is one multi-node job's node count, nodes to be
    # launched all or nothing, in one zone (the rest of ``count`` are single nodes). The
    # plan never launches part of a gang; an executor that cannot launch a gang whole
    # launches none of it.
    gangs: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeAction:
    """A drain or termination (cause: a ``RemoveCause``), or an undrain (an ``AddCause``)."""

    node_id: str
    node_type: str
    cause: RemoveCause | AddCause
    message: str  # e.g. "idle for 10m, 54m into its billing hour"


@dataclass(frozen=True, slots=True)
class Unschedulable:
    shape: Shape
    count: int
    reasons: tuple[str, ...]  # failing dimensions ("memory", ...) or "cost-ceiling", "max-nodes"
    node_count: int = 1  # a gang's nodes (``shape`` is per node)


@dataclass(frozen=True, slots=True)
class Plan:
    launches: tuple[Launch, ...]
    drains: tuple[NodeAction, ...]  # stop sending work; terminate once idle
    terminations: tuple[NodeAction, ...]  # terminate now
    targets: Mapping[str, int]  # wanted node count per node type after this plan
    unschedulable: tuple[Unschedulable, ...]
    state: PlannerState
    cost_per_hour: float = 0.0  # estimated cost of the target cluster
    # draining nodes taken back (schedulable again) instead of launching new ones
    undrains: tuple[NodeAction, ...] = ()
    # removals the planner withholds (unhealthy nodes not replaced now), each saying why
    withheld: tuple[NodeAction, ...] = ()

    @property
    def is_noop(self) -> bool:
        return not (self.launches or self.drains or self.terminations or self.undrains)
