"""The planner: ``plan(snapshot, policy, state, now) -> Plan``, a pure function.

The body is a fixed sequence of named steps, as Ray v2's scheduler is::

    observe         classify nodes per type: live (booting + ready) capacity,
                    draining, join timeouts, unhealthy, busy, types whose
                    offerings are all in backoff
    assign          gangs (multi-node jobs, ``QueuedJobs.node_count`` > 1) first,
                    each on N nodes of one type (``_place_gangs``); then
                    give each job a node type, as Toil's bin packing does: a
                    running job stays on its node's type (for its *remaining*
                    expected time, rounded up to whole minutes: below); a
                    queued job goes to the first type, in Toil's shape order,
                    whose shape after overhead fits it.
                    In cost packing (``Policy.packing`` "cost", or "auto" with
                    a price on every type) queued jobs that fit in the room
                    of nodes running jobs keep up anyway (starting within
                    ``HELD_ROOM_WAIT``, ending before the running jobs of any
                    node it may start on, and adding no node to the type's
                    need) go there; the others go where ``binpack``
                    with prices and the types' max as limits puts them (the
                    cheapest mix of types that can grow); jobs past every max
                    go to idle live room of types in backoff, then to types
                    with room left under their max; then live nodes that mix
                    leaves idle take jobs from types that would otherwise
                    launch. The jobs left wait "max-nodes", in the raw
                    estimate of every type that can launch and fits them
    pack            bin-pack each type's jobs (``scaler.binpack``): the raw
                    estimate, Toil's ``nodesToRunQueuedJobs``. Jobs beyond the
                    type's max are reported "max-nodes"; a type whose offerings
                    are all in backoff serves what its live (and draining)
                    nodes hold and passes the rest on to the next type of the
                    same capacity type that fits (FALLBACK); spot jobs no type
                    takes wait for preemptible compensation
    smooth          betaInertia on the raw estimate: estimate = (1-b)*raw +
                    b*previous, rounded half away from zero, as Toil's
                    ``smoothEstimate``; an estimate within ``SETTLED`` of the
                    raw estimate is stored as the raw estimate (below)
    compensate      a spot type in backoff misses min(its smoothed estimate,
                    its max) - its live nodes; the on-demand type of the same
                    instance types gets round(missing x
                    ``preemptible_compensation``) more, as Toil's
                    ``preemptibleNodeDeficit`` (any other on-demand type only
                    with ``Policy.compensate_other_types``). In cost packing,
                    a type's live nodes are not room for queued jobs as far
                    as they are owed as compensation: assign, pack, smooth and
                    compensate run again holding them back
    limit           clamp to min/max; wanted = target - live nodes, taken first
                    from the type's draining nodes (undrains), then launched, as
                    far as the max allows with every draining node counted
    cost ceiling    trim launches, then undrains (least preferred type first)
                    until the cluster's cost fits; report the demand left
                    ("cost-ceiling")
    scale down      join timeouts, unhealthy; draining+idle -> terminate (unless taken
                    back); idle nodes above max -> drain (ABOVE_MAX); idle,
                    ready, autoscaled nodes of a type above its target,
                    unneeded long enough -> drain (IDLE), within the budget,
                    nearest the end of their billing interval first

Semantics a caller can rely on:

* A gang of N nodes is placed whole on one type: on N free (idle) live nodes of a type
  when one has that many; in cost packing, else on N live nodes of a type that are free
  or whose running jobs all end within ``HELD_ROOM_WAIT`` (``_freed_soon``; all at one
  time if a queued 1-node job fits them, which would take a node freed first; for at most
  that wait in all, over passes: ``PlannerState.gang_waits``); else on N
  new nodes of a type with room under its max beside all its live and draining nodes.
  It has those nodes to itself (1-node jobs are packed beside it on other nodes: the
  plan never counts on room the gang may take). Its new
  nodes are one unit of ``Launch.gangs``, launched all or none in one zone (zones are
  the executor's); they are never assembled from draining nodes, and when smoothing,
  the max or the cost ceiling leaves a launch short of a gang's nodes, none of them is
  launched (``_whole_gangs``; the target then holds none of them, so idle nodes too few
  for the gang are drained: ``_cut_gangs_target``; one the cost ceiling cuts is reported
  there). A type's target covers its gangs' nodes on top of its busy
  nodes the gangs do not take (``_kept_beside_gangs``; no more is launched for it), and a
  gang's launch has cause DEMAND (or FALLBACK, PREEMPTIBLE_COMPENSATION as any launch).
  1-node jobs take exactly the path they took before gangs.
* Booting and ready nodes are capacity. Launches are ``target - live - undrains``,
  so a second pass over the same demand with the launched nodes present as booting
  launches nothing.
* A draining node is not capacity, its running jobs are not demand, and it is
  terminated once idle (not while ``NodeInfo.drain_unconfirmed``: only the daemon's
  mark says it drains, and the scheduler may still send it work); but while it is
  still listed (draining, not terminated), a type that wants more nodes takes it back
  (``Plan.undrains``, idle ones first) before it launches any, as Toil un-ignores nodes
  before adding (``testNoLaunchingIfDeltaAlreadyMet``). Undrains need no cloud capacity, so a
  type in backoff may undrain.
* A node a running job names (``Demand.running``) is never drained or terminated,
  whatever its state: a booting node past its join timeout that runs a job, or a missing
  one, is capacity.
* The join timeout applies only to booting nodes never seen joined
  (``NodeInfo.joined_at`` None): a node that joined and then went missing from the
  scheduler's reads is not booting again. Such a node (``missing_since``) stays capacity,
  as Cluster Autoscaler counts an unready node, until it has been missing for
  ``Policy.unhealthy_timeout``; then, if it runs nothing, it is terminated (UNHEALTHY)
  and the same plan launches its replacement.
* Every draining node counts toward its type's max, a drain by someone else (static:
  the scheduler drained it on its own, an admin did) included, and the max wins over the
  min there: a scheduler that drains each new node (a failing prolog) would otherwise
  have the planner replace it pass after pass, beyond any max. Jobs a launch so cut
  leaves waiting are reported "max-nodes".
* Unhealthy replacements are capped, as Cluster Autoscaler stops at 45 % unready nodes
  (``max-total-unready-percentage``, ``ok-total-unready-count``): when more nodes are
  missing from the reads than max(``Policy.unhealthy_ok_count``,
  ``Policy.unhealthy_max_fraction`` x nodes), in the cluster or in one type, the fault is
  likely the scheduler's (slurmctld cannot reach the slurmds, a munge key, a pusher that
  sends no nodes), not the nodes', and replacements could not join either: none of them
  (of that type) is terminated, each stays capacity (and is not drained either), and
  ``Plan.withheld`` says why. The rest are terminated within ``scale_down_budget``, shared
  with idle drains (oldest missing first); those beyond it are withheld the same way until a
  later pass.
* Static nodes, and nodes of no configured type, are never drained, undrained or
  terminated. Static nodes of a configured type count as its capacity (as in
  Toil, whose node counts include them).
* Nodes above a type's max are drained at once (no unneeded period, outside
  the budget: the max is a hard limit); busy ones are left alone.
* Overhead is Toil's per node type (``scaler.overhead``: GKE's progressive memory
  table plus 100 MiB, 5 GB + 5 % of disk), taken from memory and disk, never
  cores. ``Policy.node_memory_overhead`` / ``node_disk_overhead`` replace it with
  a flat amount per node.
* A running job holds its node for its remaining expected time (run time less elapsed,
  at least ``RUNNING_JOB_MIN_REMAINING``; past its estimate, see below) from now: count
  packing pins it at time 0
  (``binpack(pinned=...)``), so no queued job is planned to start before it on its room
  (else a queued job that fits one type only could be planned "now" on the node a long
  running job holds, and wait behind it past the target time with nothing launched). A
  type needs the more of that and the merged packing, less what the pin adds for its
  running jobs alone (running jobs that overfill the model of their nodes: another
  overhead, a scheduler that does not count memory). The remaining time is rounded *up*
  to whole minutes
  (``RUNNING_JOB_GRID``): never less than it has left, so capacity is never
  under-estimated; running jobs of one size then fall into fewer shapes (binpack's work
  grows with the shapes), and a pass whose running jobs moved on by a few seconds more
  often packs the very jobs of an earlier pass (remembered: ``NEEDS``). On 300 recorded
  snapshots (tests/scaler/test_planner_recorded.py) no plan asks for less than with exact
  remaining times, and all but a few are the same.
* A running job past its estimate (``running_remaining``) is taken to run as long again as
  it has overrun so far (at least ``RUNNING_JOB_MIN_REMAINING``), its overrun rounded up to
  ``OVERRUN_STEPS`` (whole minutes, each at most 2**(1/4) above the one before). Nothing is
  known of it but how late it is; a job 5 min late most likely ends soon, one 3 h late
  most likely does not (Gott's rule: as long again as it has lasted, here counted from its
  estimate). The minimum alone (the rule until Dec 2026) made a job 3 h late look a minute
  from ending on every pass, so a queued job that fits only its node's type (or whose
  cheapest fit it is) was planned on that node a minute later, pass after pass, and nothing
  was launched for it until the job really ended (hours, with the poor estimates of real
  logs). Growing with the overrun, the estimate passes the target time once the job is
  about that much late (within 2**(1/4)): then the queued job is planned past the target
  and a node is launched. So a job past its estimate keeps a queued job behind it waiting
  at most about the target time beyond that estimate (plus a boot). The geometric steps
  keep the shapes few: the estimate takes 29 values in a 6 h overrun, not 360, so
  passes of a long overrun reuse their packings (``NEEDS``).
* An estimate that has settled is stored exactly: Toil's estimate approaches the raw
  estimate geometrically and, in floats, never reaches it (with b = 0.1 and a raw
  estimate of 0 it falls by ten each pass until it underflows, some 320 passes), so the
  planner state would change every pass although the plan does not. Within ``SETTLED``
  (1e-9) of the raw estimate, the raw estimate itself is stored: this pass rounds to it
  either way, and the next pass's weighted estimate moves by less than b x 1e-9, which
  changes its rounding only if it lies that close to a half (a tie Toil would round by
  float noise). A cluster at rest then reaches a fixed point, which the simulator needs
  to skip its timer passes.
* The cost ceiling covers live nodes plus undrains plus launches, priced by
  ``NodeType.price_per_hour`` (a type without a price counts as free). It only
  trims undrains and launches: ``min_nodes`` wins over it, and existing nodes
  are not removed to meet it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from operator import attrgetter
from types import MappingProxyType

from shoal.scaler.binpack import binpack
from shoal.scaler.memo import Memo
from shoal.scaler.model import (
    AddCause,
    GiB,
    Launch,
    NodeAction,
    NodeInfo,
    NodeState,
    NodeType,
    Plan,
    PlannerState,
    Policy,
    RemoveCause,
    Snapshot,
    Unschedulable,
)
from shoal.scaler.overhead import disk_overhead, memory_overhead
from shoal.scaler.shape import Shape

__all__ = [
    "HELD_ROOM_WAIT",
    "NEEDS",
    "OVERRUN_STEPS",
    "REASON_COST_CEILING",
    "REASON_MAX_NODES",
    "REASON_UNAVAILABLE",
    "RUNNING_JOB_GRID",
    "RUNNING_JOB_MIN_REMAINING",
    "SETTLED",
    "WAITING_REASONS",
    "cost_aware",
    "plan",
    "round_half_away",
    "running_remaining",
    "smooth",
    "usable",
    "usable_shape",
]

# A running job about to end, or past its expected run time, still holds its node; assume it
# holds it at least this long more (seconds).
RUNNING_JOB_MIN_REMAINING = 60.0
# A running job's remaining time is rounded up to whole minutes (see the module docstring).
RUNNING_JOB_GRID = 60.0
# A running job past its estimate: its overrun so far rounded up to the next of these
# (seconds): whole minutes, each step up to 2**(1/4) times the one before (1, 2, 3, ... 8, 10,
# 12, 14, 16, 20, 23, 27, 32, 39 ... minutes), up to some 2 years.
OVERRUN_STEPS = tuple(
    sorted({math.ceil(2 ** (k / 4)) * RUNNING_JOB_GRID for k in range(4 * 20 + 1)})
)
# Cost packing: a queued job waits at most this long (seconds; and the target time) for room
# on a node running jobs keep anyway, rather than have a node bought for it (_onto_held).
HELD_ROOM_WAIT = 600.0
# A betaInertia estimate this close to the raw estimate is stored as the raw estimate.
SETTLED = 1e-9

REASON_MAX_NODES = "max-nodes"
REASON_COST_CEILING = "cost-ceiling"
REASON_UNAVAILABLE = "unavailable"  # every type that fits is in backoff and cannot grow
# Reasons of jobs that fit a node type but wait (a limit, or capacity): they are not
# unschedulable in the sense of "can never fit", which names the failing dimensions.
WAITING_REASONS = (REASON_MAX_NODES, REASON_COST_CEILING, REASON_UNAVAILABLE)

Jobs = dict[Shape, int]
# Jobs that wait or fit nowhere: (per-node shape, reasons, node count) -> jobs
Waiting = dict[tuple[Shape, tuple[str, ...], int], int]

# Nodes of one shape a set of jobs needs, as binpack counts them, remembered across passes:
# a pass whose demand did not change (a timer pass; a type whose jobs did not change) packs
# nothing again. Same answers, so the same plans; bounded in entries and in the job groups
# their keys hold, so its memory is too.
NEEDS: Memo[int] = Memo(256, budget=20_000)


def round_half_away(number: float) -> int:
    """Round to the nearest integer, ties away from zero (Toil's ``_round``)."""
    rounded = math.floor(abs(number) + 0.5)
    return int(rounded if number >= 0 else -rounded)


def smooth(raw: int, estimate: float, beta: float) -> float:
    """One betaInertia step from the last pass's ``estimate`` towards ``raw`` (settled within
    ``SETTLED``: see the module docstring). The plan reads the result only through
    ``round_half_away`` (the state keeps it whole): the replay engine relies on that to
    skip the timer passes of an estimate that settles without changing its rounding."""
    weighted = (1 - beta) * raw + beta * estimate
    return float(raw) if abs(weighted - raw) <= SETTLED else weighted


def usable_shape(node_type: NodeType, policy: Policy) -> Shape:
    """What a node of this type offers jobs: its shape less the OS and agent overhead
    (Toil's reservation for its size, or the policy's flat amounts when set)."""
    return usable(node_type.shape, policy)


def usable(s: Shape, policy: Policy) -> Shape:
    """``usable_shape`` of a node of shape ``s``."""
    memory = policy.node_memory_overhead
    disk = policy.node_disk_overhead
    return Shape(
        s.wallTime,
        max(0.0, s.memory - (memory_overhead(s.memory) if memory is None else memory)),
        s.cores,
        max(0.0, s.disk - (disk_overhead(s.disk) if disk is None else disk)),
        s.preemptible,
    )


def cost_aware(policy: Policy) -> bool:
    """Whether the planner packs for cost: "cost" or "auto", and a price on every type."""
    priced = all(t.price_per_hour is not None for t in policy.node_types)
    return policy.packing in ("cost", "auto") and priced


def _type_order(t: NodeType) -> tuple:
    # Toil's Shape order, ascending: preemptible first, then memory, cores, disk, wallTime.
    s = t.shape
    return (not s.preemptible, s.memory, s.cores, s.disk, s.wallTime, t.name)


def _job_order(s: Shape) -> tuple:
    # Largest first (Toil packs jobs in descending Shape order).
    return (not s.preemptible, s.memory, s.cores, s.disk, s.wallTime)


# -- step 1: observe ----------------------------------------------------------------------


@dataclass(slots=True)
class _View:
    types: list[NodeType]  # in preference order
    usable: Mapping[str, Shape]
    live: dict[str, list[NodeInfo]]  # booting + ready, not timed out
    draining: list[NodeInfo]
    drained: dict[str, int]  # draining nodes per type, anyone's drain: they count toward max
    reusable: dict[str, list[NodeInfo]]  # draining autoscaled nodes a type may take back
    join_timeouts: list[NodeInfo]
    unhealthy: list[NodeInfo]  # joined, then missing for the unhealthy timeout; idle
    withheld: list[NodeAction]  # unhealthy nodes not replaced now (capped): live, and why
    busy: set[str]
    blocked: dict[str, float]  # type -> time the earliest of its offerings frees up
    now: float
    cost: bool  # cost packing
    # per job resources: the types they fit, in preference order, and why none does
    _fits: dict[tuple[float, float, float, bool], tuple[list[NodeType], tuple[str, ...]]] = field(
        default_factory=dict
    )

    def current(self, name: str) -> int:
        return len(self.live[name])

    def fitting(self, shape: Shape) -> list[NodeType]:
        """The types ``shape`` fits, in preference order."""
        return self._fit(shape)[0]

    def why_not(self, shape: Shape) -> tuple[str, ...]:
        """For a shape that fits no type, the dimensions it fails on the closest type."""
        return self._fit(shape)[1]

    def _fit(self, shape: Shape) -> tuple[list[NodeType], tuple[str, ...]]:
        # asked once per resources a pass: fits_in reads no wall time, and a real log's
        # queue holds thousands of shapes (and gangs) alike but for it
        resources = (shape.memory, shape.cores, shape.disk, shape.preemptible)
        fit = self._fits.get(resources)
        if fit is None:
            fits = [t for t in self.types if not shape.fits_in(self.usable[t.name])]
            fit = self._fits[resources] = (fits, () if fits else _fewest_failures(shape, self))
        return fit

    def room(self, t: NodeType) -> int:
        """Nodes the type may launch under its max: every draining node counts toward it,
        someone else's drain included (a launch comes after taking back all of shoal's own)."""
        return max(0, t.max_nodes - self.current(t.name) - self.drained[t.name])


# the last policy's usable shape per type: a pass made them anew though the daemon plans with
# one policy object for pass after pass (a Policy is frozen; the policy is held, so no other
# object takes its id); read-only once made
_LAST_USABLE: tuple[Policy, Mapping[str, Shape]] | None = None


def _usable_shapes(policy: Policy, types: list[NodeType]) -> Mapping[str, Shape]:
    """Each type's ``usable_shape`` under ``policy``, in the order of ``types`` (the
    policy's node types, in the view's order)."""
    global _LAST_USABLE
    last = _LAST_USABLE
    if last is not None and last[0] is policy:
        return last[1]
    made = MappingProxyType({t.name: usable_shape(t, policy) for t in types})
    _LAST_USABLE = (policy, made)
    return made


_node_id = attrgetter("id")


def _observe(snapshot: Snapshot, policy: Policy, now: float) -> _View:
    types = sorted(policy.node_types, key=_type_order)
    names = {t.name for t in types}
    live: dict[str, list[NodeInfo]] = {t.name: [] for t in types}
    reusable: dict[str, list[NodeInfo]] = {t.name: [] for t in types}
    draining: list[NodeInfo] = []
    drained = {t.name: 0 for t in types}
    timeouts: list[NodeInfo] = []
    busy = {job.node_id for job in snapshot.demand.running}
    unhealthy: list[NodeInfo] = []
    for node in sorted(snapshot.nodes, key=_node_id):
        if node.node_type not in names:
            continue
        if node.state is NodeState.DRAINING:
            draining.append(node)
            drained[node.node_type] += 1
            if not node.static:
                reusable[node.node_type].append(node)
        elif node.static or node.id in busy:
            live[node.node_type].append(node)  # never removed: see the module docstring
        elif (
            node.state is NodeState.BOOTING
            and node.joined_at is None
            and now - node.launched_at > policy.join_timeout
        ):
            timeouts.append(node)
        elif (
            node.missing_since is not None and now - node.missing_since >= policy.unhealthy_timeout
        ):
            unhealthy.append(node)
        else:
            live[node.node_type].append(node)
    unhealthy, withheld = _cap_unhealthy(unhealthy, live, policy)
    if withheld:
        by_id = {n.id: n for n in snapshot.nodes}
        for action in withheld:  # not replaced now: capacity, as a missing node is until then
            live[action.node_type].append(by_id[action.node_id])
    by_name = {t.name: t for t in types}
    for name, nodes in reusable.items():  # idle first, then the most paid-for time left
        nodes.sort(key=lambda n: (n.id in busy, -_billing(n, by_name[name], now)[0], n.id))
    blocked: dict[str, float] = {}
    for t in types if snapshot.unavailable else ():  # (none backed off: none blocked)
        untils = [snapshot.unavailable.get(o) for o in t.offerings()]
        if untils and all(u is not None and u > now for u in untils):
            blocked[t.name] = min(u for u in untils if u is not None)
    return _View(
        types=types,
        usable=_usable_shapes(policy, types),
        live=live,
        draining=draining,
        drained=drained,
        reusable=reusable,
        join_timeouts=timeouts,
        unhealthy=unhealthy,
        withheld=withheld,
        busy=busy,
        blocked=blocked,
        now=now,
        cost=cost_aware(policy),
    )


def _cap_unhealthy(
    unhealthy: list[NodeInfo], live: Mapping[str, list[NodeInfo]], policy: Policy
) -> tuple[list[NodeInfo], list[NodeAction]]:
    """Which unhealthy nodes to replace now, and the others with why not (see the module
    docstring): none when too many nodes are missing, in the cluster or in their type;
    of the rest, the longest missing within ``scale_down_budget``."""
    if not unhealthy:
        return [], []
    nodes = [n for group in live.values() for n in group] + unhealthy

    def too_many(group: Sequence[NodeInfo]) -> str | None:
        missing = sum(1 for n in group if n.missing_since is not None)
        limit = max(policy.unhealthy_ok_count, policy.unhealthy_max_fraction * len(group))
        if missing <= limit:
            return None
        return (
            f"{missing} of {len(group)} nodes are missing from the scheduler's reads, more "
            f"than max({policy.unhealthy_ok_count}, {policy.unhealthy_max_fraction:.0%}): "
            "likely the scheduler's fault, not the nodes'; replacing none"
        )

    withheld: list[NodeAction] = []
    kept: list[NodeInfo] = []
    cluster = too_many(nodes)
    for node in unhealthy:
        why = cluster
        if why is None:
            group = [n for n in nodes if n.node_type == node.node_type]
            why = too_many(group)
            why = None if why is None else f"of {node.node_type}, {why}"
        if why is None:
            kept.append(node)
        else:
            withheld.append(NodeAction(node.id, node.node_type, RemoveCause.UNHEALTHY, why))
    kept.sort(key=lambda n: (n.missing_since, n.id))
    budget = max(1, math.floor(policy.scale_down_budget * len(nodes)))
    for node in kept[budget:]:
        withheld.append(
            NodeAction(
                node.id,
                node.node_type,
                RemoveCause.UNHEALTHY,
                f"beyond scale_down_budget ({budget} of {len(nodes)} nodes per pass)",
            )
        )
    return kept[:budget], withheld


# -- step 2: assign -----------------------------------------------------------------------


@dataclass(slots=True)
class _TypeDemand:
    running: Jobs = field(default_factory=dict)
    queued: Jobs = field(default_factory=dict)  # after pack: the jobs this type serves
    fallback_from: set[str] = field(default_factory=set)
    stranded: Jobs = field(default_factory=dict)  # spot jobs nothing can take: compensated
    raw: int = 0  # nodes all the type's jobs need (Toil's estimate, before any limit)
    need: int = 0  # nodes the served jobs need
    deficit: int = 0  # spot, in backoff: nodes wanted (within max) and not there
    compensation: int = 0  # on demand: nodes added for other types' deficits
    compensated: list[str] = field(default_factory=list)  # the spot types compensated
    hint: tuple[Jobs, int] | None = None  # the cost packer's count for exactly these jobs
    # cost packing: jobs waiting "max-nodes" that fit this type, in its ``raw`` (reported
    # once, by _assign_by_cost)
    past_max: Jobs = field(default_factory=dict)
    # of those, the ones reported "cost-ceiling" instead (_past_max_held_by_the_ceiling)
    past_ceiling: Jobs = field(default_factory=dict)
    # cost packing: each busy node's running jobs (as in ``running``, and whether past their
    # estimate) for _onto_held
    on_nodes: dict[str, list[tuple[Shape, bool]]] = field(default_factory=dict)
    # gangs (multi-node jobs) placed on this type, one (per-node shape, nodes) each: on
    # free live nodes, and to launch (all or nothing; see _place_gangs)
    gangs_live: list[tuple[Shape, int]] = field(default_factory=list)
    gangs: list[tuple[Shape, int]] = field(default_factory=list)
    gang_raw: int = 0  # the gangs' nodes in ``raw``
    gangs_cut: bool = False  # a limit cut a gang to launch

    @property
    def gang_nodes(self) -> int:
        return self.gang_live + self.gang_launch

    @property
    def gang_live(self) -> int:  # free live nodes gangs take
        return sum(n for _, n in self.gangs_live)

    @property
    def gang_launch(self) -> int:
        return sum(n for _, n in self.gangs)


def _add(jobs: Jobs, shape: Shape, count: int) -> None:
    if count > 0:
        jobs[shape] = jobs.get(shape, 0) + count


def _fewest_failures(shape: Shape, view: _View) -> tuple[str, ...]:
    best: list[str] | None = None
    for t in view.types:
        failing = shape.fits_in(view.usable[t.name])
        if best is None or len(failing) < len(best):
            best = failing
    return tuple(best or ("no node types",))


@lru_cache(maxsize=4096)
def _holding(s: Shape, remaining: float) -> Shape:
    """A running job of shape ``s`` as the packer sees it: ``remaining`` seconds long. The
    same few are made pass after pass, so they are made once."""
    return Shape(remaining, s.memory, s.cores, s.disk, s.preemptible)


def running_remaining(wall: float, elapsed: float) -> float:
    """How long (seconds) a running job ``elapsed`` s into its expected ``wall`` s is taken to
    hold its node (see the module docstring): what it has left, else as long again as it has
    overrun so far, rounded up to ``OVERRUN_STEPS``; at least ``RUNNING_JOB_MIN_REMAINING``,
    on ``RUNNING_JOB_GRID``."""
    left = wall - elapsed
    if left > 0:
        return math.ceil(max(left, RUNNING_JOB_MIN_REMAINING) / RUNNING_JOB_GRID) * RUNNING_JOB_GRID
    over = -left
    if not math.isfinite(over):  # an elapsed time that is no number: an end nobody knows
        return OVERRUN_STEPS[-1]
    step = bisect.bisect_left(OVERRUN_STEPS, over)
    if step < len(OVERRUN_STEPS):
        return OVERRUN_STEPS[step]
    return math.ceil(over / RUNNING_JOB_GRID) * RUNNING_JOB_GRID  # (beyond some 2 years)


def _assign(
    snapshot: Snapshot,
    view: _View,
    policy: Policy,
    unschedulable: Waiting,
    reserved: Mapping[str, int],
    gang_waits: Mapping[tuple[Shape, int], float] = MappingProxyType({}),
    waits: dict[tuple[Shape, int], float] | None = None,
) -> tuple[dict[str, _TypeDemand], str]:
    """Each job to a type; returns the demand per type and, in cost packing, which
    packing was used (for the launch messages). ``reserved``: live nodes per type that
    preemptible compensation holds, which queued jobs do not count as room. ``gang_waits``
    and ``waits``: the gangs' waits for busy nodes, the last pass's and this pass's
    (``_place_gangs``)."""
    demand = {t.name: _TypeDemand() for t in view.types}
    where = {n.id: n.node_type for nodes in view.live.values() for n in nodes}
    # a gang's jobs on its N nodes come one after another with one shape and elapsed time
    # (and so do a node's equal jobs started together): held is worked out once for them
    last_shape: Shape | None = None
    last_elapsed = 0.0
    held: Shape  # made at the first job (no shape is None)
    cost = view.cost
    for job in snapshot.demand.running:
        node_type = where.get(job.node_id)
        if node_type is None:
            continue  # on a draining, timed-out or unmanaged node: not our demand
        s, elapsed = job.shape, job.elapsed
        if s is not last_shape or elapsed != last_elapsed:
            held = _holding(s, running_remaining(s.wallTime, elapsed))
            last_shape, last_elapsed = s, elapsed
        d = demand[node_type]
        running = d.running
        running[held] = running.get(held, 0) + 1  # (``_add``, inline: once a running job)
        if cost:
            on_node = d.on_nodes.setdefault(job.node_id, [])
            on_node.append((held, elapsed >= s.wallTime))  # past its estimate: _onto_held
    queued: Jobs = {}
    gangs: dict[tuple[Shape, int], int] = {}
    for q in snapshot.demand.queued:
        if q.node_count > 1:
            gangs[q.shape, q.node_count] = gangs.get((q.shape, q.node_count), 0) + q.count
        else:
            _add(queued, q.shape, q.count)
    if gangs:
        taken = _place_gangs(gangs, view, policy, demand, unschedulable, queued, gang_waits, waits)
        reserved = {t.name: reserved.get(t.name, 0) + taken[t.name] for t in view.types}
    note = ""
    if view.cost:
        queued, note = _assign_by_cost(queued, view, policy, demand, reserved, unschedulable)
    for shape, count in queued.items():
        fits = view.fitting(shape)
        if fits:
            _add(demand[fits[0].name].queued, shape, count)
        else:
            key = (shape, view.why_not(shape), 1)
            unschedulable[key] = unschedulable.get(key, 0) + count
    return demand, note


def _price(t: NodeType) -> float:
    return t.price_per_hour or 0.0  # a type without a price cannot be held to the ceiling


def _place_gangs(
    gangs: Mapping[tuple[Shape, int], int],
    view: _View,
    policy: Policy,
    demand: dict[str, _TypeDemand],
    unschedulable: Waiting,
    singles: Jobs,
    gang_waits: Mapping[tuple[Shape, int], float] = MappingProxyType({}),
    waits: dict[tuple[Shape, int], float] | None = None,
) -> dict[str, int]:
    """Place each gang (a job on N nodes at once) on N nodes of ONE type, before any
    1-node job: N free live nodes of a type that fits (idle, booting or ready; in the
    types' order) if some type has that many, in cost packing else free and busy nodes
    whose running jobs end soon (``_freed_soon``), else N new nodes of the first type that
    fits and can launch (in count packing Toil's order, in cost packing the cheapest),
    as far as its max leaves room beside all its live and draining nodes (free nodes too
    few for a gang are no part of it: they are drained as unneeded, as any idle node, and
    make room for it). A gang has its nodes to itself: the room it leaves on them is not
    offered to 1-node jobs (so the plan never counts on room a gang may take). Returns
    the live nodes gangs take per type, which are then no room for 1-node jobs.
    ``singles``: the queued 1-node jobs (``_freed_soon``).

    A gang waits for busy nodes only until ``wait`` after the pass it began to
    (``gang_waits``, ``PlannerState.gang_waits``: when each gang's wait ends; this pass's
    go to ``waits``, for the gangs that wait or are queued past it). ``_freed_soon`` sees
    one pass: running jobs whose end keeps moving (a demand API that reports them always
    5 min from ending) had a gang wait for them, launching nothing, for hours. Once its
    wait is over a gang gets new nodes, and its entry stays while it finds no free ones
    (on free nodes, such as its booting ones, it drops it). Gangs alike are one entry."""
    free = {t.name: sum(1 for n in view.live[t.name] if n.id not in view.busy) for t in view.types}
    room = {t.name: view.room(t) for t in view.types}  # the view does not change here
    taken = {t.name: 0 for t in view.types}  # free nodes gangs take
    grown = {t.name: 0 for t in view.types}  # new nodes for gangs
    # where new nodes go: Toil's order, or the cheapest first (a stable sort: ties keep it)
    growable = sorted(view.types, key=_price) if view.cost else view.types
    # A gang that fits no type, or is wider than every type's free nodes and room, is
    # reported at once: it changes nothing, so where it stands in the order does not
    # matter (the plan sorts what it reports), and a queue of thousands of them (a real
    # log's jobs wider than the cluster may grow) is neither sorted nor placed (which types
    # a shape fits: ``view.fitting``, asked once per resources a pass).
    # (in cost packing a gang may also wait for busy nodes, ``_freed_soon``: all live ones)
    live = {t.name: len(view.live[t.name]) if view.cost else free[t.name] for t in view.types}
    widest = max((max(live[name], room[name]) for name in free), default=0)
    wait = min(policy.target_time, HELD_ROOM_WAIT)
    # types a queued 1-node job fits: it takes a node freed there before the gang's others
    contested = {
        t.name
        for t in view.types
        if view.cost and any(not j.fits_in(view.usable[t.name]) for j in singles)
    }
    placeable: list[tuple[tuple[Shape, int], int, list[NodeType]]] = []
    max_nodes = (REASON_MAX_NODES,)
    for (shape, n), count in gangs.items():
        fits = view.fitting(shape)
        if not fits:
            key = (shape, view.why_not(shape), n)
            unschedulable[key] = unschedulable.get(key, 0) + count
        elif n > widest:  # no n free nodes, no room for n: as below, "max-nodes"
            key = (shape, max_nodes, n)
            unschedulable[key] = unschedulable.get(key, 0) + count
        else:
            placeable.append(((shape, n), count, fits))
    placeable.sort(key=lambda it: (_job_order(it[0][0]), it[0][1]), reverse=True)
    for (shape, n), count, fits in placeable:
        # The ``count`` identical gangs are placed as one at a time would place them, in
        # runs: one at a time, each goes to the first type (in ``fits``) with n free nodes
        # left, as long as it has them (the types before it have fewer, and placing takes
        # none of theirs); with none, to the first growable type within its max, as long
        # as it has room (the types before it stay out of room or blocked). So a run
        # takes as many as fit on one type in one step; once one cannot be placed, none
        # of the rest can (nothing changed), and they are reported together.
        while count:
            here = next((t for t in fits if free[t.name] - taken[t.name] >= n), None)
            until = gang_waits.get((shape, n))
            if here is None and view.cost and until is not None and until <= view.now:
                if waits is not None:  # waited its whole wait for busy nodes: no more
                    waits[shape, n] = until
            elif here is None and view.cost:
                here = next(
                    (
                        t
                        for t in fits
                        if _freed_soon(t, n, free, taken, demand, wait, t.name in contested)
                    ),
                    None,
                )
                if here is not None and waits is not None:  # waits for busy nodes
                    waits[shape, n] = view.now + wait if until is None else until
            if here is not None:
                k = min(count, (free[here.name] - taken[here.name]) // n)
                taken[here.name] += k * n
                demand[here.name].gangs_live.extend([(shape, n)] * k)
                count -= k
                continue
            within = [t for t in fits if grown[t.name] + n <= room[t.name]]
            here = next((t for t in growable if t in within and t.name not in view.blocked), None)
            if here is None:
                reason = REASON_UNAVAILABLE if within else REASON_MAX_NODES
                _report(unschedulable, {shape: count}, reason, n)
                break
            k = min(count, (room[here.name] - grown[here.name]) // n)
            grown[here.name] += k * n
            demand[here.name].gangs.extend([(shape, n)] * k)
            count -= k
            if fits[0] is not here and fits[0].name in view.blocked:
                demand[here.name].fallback_from.add(fits[0].name)
    return taken


def _freed_soon(
    t: NodeType,
    n: int,
    free: dict[str, int],
    taken: Mapping[str, int],
    demand: dict[str, _TypeDemand],
    wait: float,
    contested: bool,
) -> bool:
    """(``_place_gangs``, cost packing) Whether a gang of ``n`` nodes of ``t`` can wait for
    live nodes rather than new ones: its free nodes not yet taken, then busy nodes whose
    running jobs all end (none past its estimate) within ``wait``, earliest first. If so,
    those busy nodes are the gang's: their running jobs leave the type's demand (the gang
    holds the nodes after them, to itself, as it holds free ones) and they count as free
    nodes from then on, which the caller takes, so 1-node jobs count on no room there.

    A gang frees its nodes together, and the next gang of its shape fits them all at once:
    on a log of back-to-back wide jobs, nodes launched for the queued gang joined after it
    had started on the nodes the running one freed, and never ran a job.

    But a node freed before the others goes to a queued 1-node job that fits it (``contested``:
    one is queued) where the scheduler keeps no reservation (the simulated one, Toil's): with
    1-node jobs coming, the gang never saw its nodes free at once, and waited past the wait
    (760-1100 s for nodes freed within 600 s, replayed). So with such a job queued, the gang
    waits only for busy nodes that all end at one time (a gang's do; the earliest such n)
    and no free node (a free node's 1-node job would be running there, unless it is
    booting: it joins apart).

    The wait is in all, not per pass: ``_place_gangs`` asks this only until the gang has
    waited ``wait`` for busy nodes (``PlannerState.gang_waits``)."""
    d = demand[t.name]
    idle = free[t.name] - taken[t.name]
    ends = sorted(
        (max(s.wallTime for s, _ in jobs), node)
        for node, jobs in d.on_nodes.items()
        if not any(over for _, over in jobs)
    )
    ending = [(end, node) for end, node in ends if end <= wait]
    within = [node for _, node in ending]
    if contested:  # freed one by one, 1-node jobs take them first: the earliest n ending at once
        together: dict[float, list[str]] = {}
        for end, node in ending:
            together.setdefault(end, []).append(node)
        within = [] if idle else next((g for g in together.values() if len(g) >= n), [])
    soon = within[: max(0, n - idle)]
    if idle + len(soon) < n:
        return False
    for node in soon:
        for s, _ in d.on_nodes.pop(node):
            d.running[s] -= 1
            if not d.running[s]:
                del d.running[s]
    free[t.name] += len(soon)
    return True


def _onto_held(
    queued: Jobs, view: _View, policy: Policy, demand: dict[str, _TypeDemand]
) -> tuple[dict[str, Jobs], Jobs]:
    """Queued jobs that fit in the room of nodes running jobs keep up anyway, per type, and
    the others; run before any new node is priced.

    A node stays up until its running jobs end whatever the plan, so room on it beside and
    after them costs nothing more, as long as the queued job ends by then. Per type (Toil's
    order), a queued job is offered if it fits the room of some busy node within
    ``HELD_ROOM_WAIT`` (and the target time), and every busy node whose room it fits that
    soon stays up until it would end there (``_kept_until_done``: per node, not the type's
    longest job, since the scheduler may start it on any node with room, and a node whose
    last job ends in 5 min is not kept up for a 3-hour one). Of those, the largest prefix
    (Toil's order) is taken that both fit on no more nodes than the running jobs alone hold:
    in count packing with the running jobs pinned at time 0 (so none is planned ahead of a
    running job) within that wait, and in ``_need``, the count ``_pack`` then uses for the
    type (running and queued jobs merged, to the target time), so taking the room never
    makes the type launch (nor, at its max, leaves a job "max-nodes" that the cost packer
    would have put on a type with room).

    A running job past its estimate has no known end: it holds its room past the wait and
    keeps its node up for no time at all. (Packing takes it to run as long again as it has
    overrun, ``running_remaining``: a job a few minutes late would look a few minutes from
    freeing its room, and the queued job would wait for it, pass after pass, until the
    overrun passed the wait. When that rule was a flat minute, it waited for as long as the
    job overran.) This way its room is counted on only once it has ended (a later pass sees
    it free). A job still within its estimate is counted as ending by it (rounded
    up to the minute): at worst the queued job waits for it until it is past its estimate,
    a bound that moves no further, so neither can starve the queued job.

    A longer wait for such room is not taken: measured on bench/policy.py's stand-in,
    waiting up to the target time (1 h when measured) for it kept large nodes longer and
    cost 2 % more (bench/README.md)."""
    shares: dict[str, Jobs] = {t.name: {} for t in view.types}
    left = dict(queued)
    horizon = min(policy.target_time, HELD_ROOM_WAIT)
    for t in view.types:
        d = demand[t.name]
        if not d.running or not left:
            continue
        node = view.usable[t.name]
        rooms = _rooms(d.on_nodes.values(), node, horizon)
        offered = {
            job: n
            for job, n in left.items()
            if n > 0 and not job.fits_in(node) and _kept_until_done(job, rooms)
        }
        if not offered:
            continue
        held_past = horizon + RUNNING_JOB_GRID  # a job past its estimate: over the whole wait
        pinned: Jobs = {}
        for jobs in d.on_nodes.values():
            for s, over in jobs:
                _add(pinned, _holding(s, held_past) if over else s, 1)
        held = _count({}, pinned, node, horizon)
        if not 0 < held <= view.current(t.name):
            continue  # (more than its live nodes: the model overfills them, no room in it)
        groups = sorted(offered.items(), key=lambda it: _job_order(it[0]), reverse=True)
        fits = partial(_within_held, d.running, pinned, node, policy, horizon, held)
        taken = _largest_prefix(groups, fits)  # the largest prefix that needs no more nodes
        for job, count in taken:
            _add(shares[t.name], job, count)
            left[job] -= count
    return shares, {job: n for job, n in left.items() if n > 0}


def _within_held(
    running: Jobs,
    pinned: Jobs,
    node: Shape,
    policy: Policy,
    horizon: float,
    held: int,
    prefix: list[tuple[Shape, int]],
) -> bool:
    """(``_onto_held``) Whether queued ``prefix`` fits on the ``held`` nodes running jobs keep:
    with them pinned at 0 within ``horizon``, and in the count ``_pack`` then uses."""
    return (
        _count(dict(prefix), pinned, node, horizon) <= held
        and _need(running, prefix, node, policy) <= held
    )


# A busy node for _onto_held: how long its running jobs keep it up, and its free room
# (memory, cores, disk) from each time one of them ends within the wait: (from, room).
_Room = tuple[float, list[tuple[float, tuple[float, float, float]]]]


def _rooms(on_nodes: Iterable[list[tuple[Shape, bool]]], node: Shape, wait: float) -> list[_Room]:
    out = []
    for jobs in on_nodes:
        ends = {0.0, *(s.wallTime for s, over in jobs if not over and s.wallTime <= wait)}
        free = []
        for at in sorted(ends):
            on = [s for s, over in jobs if over or s.wallTime > at]
            room = (
                node.memory - sum(s.memory for s in on),
                node.cores - sum(s.cores for s in on),
                node.disk - sum(s.disk for s in on),
            )
            free.append((at, room))
        kept = max((s.wallTime for s, over in jobs if not over), default=0.0)
        out.append((kept, free))
    return out


def _kept_until_done(job: Shape, rooms: Sequence[_Room]) -> bool:
    """Whether ``job`` fits the room of some busy node within the wait, and every such node
    stays up (for its running jobs) until ``job`` would end there."""
    starts = False
    for kept, free in rooms:
        for at, (memory, cores, disk) in free:
            if job.memory <= memory and job.cores <= cores and job.disk <= disk:
                if at + job.wallTime > kept:
                    return False
                starts = True
                break
    return starts


def _assign_by_cost(
    queued: Jobs,
    view: _View,
    policy: Policy,
    demand: dict[str, _TypeDemand],
    reserved: Mapping[str, int],
    unschedulable: Waiting,
) -> tuple[Jobs, str]:
    """Queued jobs to the room of nodes running jobs keep anyway (``_onto_held``), the rest
    to the cheapest mix of types that can grow, within their max; then live nodes that mix
    leaves idle take jobs from types that would launch. Returns what fits no type that can
    grow, for Toil's order, and which packing was used.

    Only that surplus is offered, so the step is stable: once the launches are booting,
    the next pass computes the same mix, finds no type short, and launches nothing.

    Jobs past every max (the packer's ``left``, and what a type's own count does not hold
    within its max) go, in order, to idle live room of types in backoff that fit them (they
    cannot launch, their idle nodes run jobs), then to types that can still grow (the
    cheapest first; one in backoff onto its draining nodes), as the planner counts their
    nodes, before live nodes take jobs of types that would launch; the rest are reported
    "max-nodes" here and counted in the raw need of every type that can launch and fits
    them. Before, they went to Toil's first type that fits, its queue and its raw need
    alone: they never reached idle nodes of a type in backoff, pushed out there jobs the
    packer had fitted, left the capped type's raw need (smoothing kept it below its max) and
    types the count left below their max (recorded seed 289: 19 of 20 nodes while 141 jobs
    waited; tests/scaler/test_planner_left.py)."""
    owner: dict[Shape, NodeType] = {}
    for t in view.types:  # two types of one usable shape: the cheaper one (then the first)
        s = view.usable[t.name]
        if t.name not in view.blocked and (s not in owner or _price(t) < _price(owner[s])):
            owner[s] = t
    if not queued or not owner:
        return queued, ""
    shares, queued = _onto_held(queued, view, policy, demand)
    limits = {
        s: max(
            0,
            t.max_nodes - _need(demand[t.name].running, (), s, policy) - demand[t.name].gang_nodes,
        )
        for s, t in owner.items()
    }
    packing = binpack(
        queued,
        list(owner),
        policy.target_time,
        # a large node stays up for its last job: weighed as a premium per core
        prices={s: _price(t) * (1 + policy.node_size_premium * s.cores) for s, t in owner.items()},
        max_nodes=limits,
        time_limit=policy.solver_time_limit,
    )
    beyond = dict(packing.left)  # past every max (and, below, past a type's own count)
    left = dict(queued)  # what fits no type that can launch: to Toil's order
    for jobs in (beyond, *packing.assignment.values()):
        for job, count in jobs.items():
            left[job] -= count
    for shape, jobs in packing.assignment.items():
        for job, count in jobs.items():
            _add(shares[owner[shape].name], job, count)
    for shape, t in owner.items():
        if not demand[t.name].running:
            demand[t.name].hint = (dict(shares[t.name]), packing.counts.get(shape, 0))

    def need(t: NodeType) -> int:
        d = demand[t.name]
        return _need(d.running, shares[t.name].items(), view.usable[t.name], policy, d.hint)

    def room(t: NodeType) -> int:  # live nodes free for queued jobs, within the max
        free = view.current(t.name) - reserved.get(t.name, 0)
        return max(0, min(free, t.max_nodes - demand[t.name].gang_nodes))

    def reach(t: NodeType) -> int:
        """Nodes the type may have for queued jobs, within its max: its live ones, its
        draining ones taken back, and launches (none in backoff), less its gangs' nodes."""
        launches = 0 if t.name in view.blocked else view.room(t)
        nodes = view.current(t.name) + len(view.reusable[t.name]) + launches
        return min(t.max_nodes, nodes) - demand[t.name].gang_nodes

    def take(t: NodeType, sources: Sequence[Jobs], cap: int, full: bool = False) -> bool:
        """Move to ``t`` the jobs of ``sources`` (taken from them in order) that fit it
        and that its nodes, within ``cap``, hold beside its own; whether it took any.
        ``full``: its count is at ``cap``; unless the first job ``_serve`` offers holds
        beside its own (one packing, not ``_serve``'s search), none is taken."""
        usable = view.usable[t.name]
        offered: Jobs = {}
        for jobs in sources:
            for job, count in jobs.items():
                if not job.fits_in(usable):
                    _add(offered, job, count)
        if not offered:
            return False
        held = dict(demand[t.name].running)
        for job, count in shares[t.name].items():
            _add(held, job, count)
        if full and _need(held, [(max(offered, key=_job_order), 1)], usable, policy) > cap:
            return False
        served, _, _ = _serve(_TypeDemand(running=held, queued=offered), usable, cap, policy)
        for job, count in served.items():
            _add(shares[t.name], job, count)
            for jobs in sources:
                moved = min(count, jobs.get(job, 0))
                if moved:
                    jobs[job] -= moved
                    count -= moved
        return bool(served)

    def trim() -> None:
        """A type that can launch keeps the jobs its own count (``_pack``'s) holds within
        ``reach``; the rest is past its max too. The packer's mix of job groups on a node
        is not the count's, and the count is not monotone (fewer jobs may need more)."""
        for t in growable:
            if shares[t.name] and need(t) > reach(t):
                d = demand[t.name]
                mine = _TypeDemand(running=d.running, queued=shares[t.name], hint=d.hint)
                shares[t.name], over, _ = _serve(mine, view.usable[t.name], reach(t), policy)
                for job, count in over.items():
                    _add(beyond, job, count)

    def grow() -> None:
        """Jobs past every max to types that can still grow within their max, the cheapest
        first (as ``_pack`` counts them: the packer's limit, the max less what the running
        jobs need alone, may be below that; a type of the cheaper one's usable shape is not
        packed at all; a type in backoff grows only onto its draining nodes, taken back). A
        type at its max may still hold jobs beside its own; one below it is asked again
        while it takes some: the count is not monotone, so ``_serve``'s largest prefix may
        leave room."""
        for t in by_price:
            cap, count = reach(t), need(t)
            while any(beyond.values()) and count <= cap and take(t, [beyond], cap, count == cap):
                if count == cap:
                    break
                count = need(t)

    by_price = sorted(view.types, key=_price)
    growable = [t for t in by_price if t.name not in view.blocked]
    trim()
    # Idle live nodes of a type that cannot launch (in backoff: they run jobs) take the jobs
    # past every max first; a type that can launch takes them in ``grow``, within its reach,
    # not its room: its room counts the nodes booting for them since the pass before, so
    # taking them here packed them otherwise on the next pass, and the count is not monotone
    # (recorded seed 586: 3 more launched). Booting nodes change only which types are short.
    for t in view.types:
        if t not in growable and any(beyond.values()) and room(t) > need(t):
            take(t, [beyond], room(t))
    grow()
    # Then live nodes the mix leaves idle take jobs of types that would launch.
    short = [t for t in view.types if need(t) > room(t)]
    for t in view.types:
        if short and room(t) > need(t):
            take(t, [shares[o.name] for o in short], room(t))
    trim()  # (a short type that gave jobs away may need more nodes now)
    grow()
    # The rest waits "max-nodes", in the raw need of every type that can launch and fits it
    # (all are at their max, as far as their count says): so smoothing heads each there.
    beyond = {job: n for job, n in beyond.items() if n > 0}
    _report(unschedulable, beyond, REASON_MAX_NODES)
    for t in growable:
        usable = view.usable[t.name]
        demand[t.name].past_max = {j: n for j, n in beyond.items() if not j.fits_in(usable)}
    for t in view.types:
        for job, count in shares[t.name].items():
            _add(demand[t.name].queued, job, count)
            # the type Toil's order would give it is in backoff: this is its fallback
            first = next((o for o in view.types if not job.fits_in(view.usable[o.name])), t)
            if count and first is not t and first.name in view.blocked:
                demand[t.name].fallback_from.add(first.name)
    return {s: n for s, n in left.items() if n > 0}, packing.method


# -- step 3: pack -------------------------------------------------------------------------


def _need(
    running: Jobs,
    queued: Iterable[tuple[Shape, int]],
    node: Shape,
    policy: Policy,
    hint: tuple[Jobs, int] | None = None,
    cap: int | None = None,
) -> int:
    """Nodes of shape ``node`` the running and ``queued`` jobs need. With ``cap`` (``_serve``
    asks only whether the need is over it): the need when it is at most ``cap``, else some
    number over ``cap``, found with fewer packings (see below)."""
    waiting: Jobs = {}
    for shape, count in queued:
        _add(waiting, shape, count)
    jobs = dict(running)
    for shape, count in waiting.items():
        _add(jobs, shape, count)
    if not jobs:
        return 0
    target = policy.target_time
    need = _count(jobs, {}, node, target)
    if cap is not None and need > cap and not cost_aware(policy):
        # Count packing's need is the max of this and the pinned count below, so it is over
        # the cap already; the pinned packing would not change that. (A cost-aware need is a
        # min with the priced packing's count: no such exit.)
        return int(need)
    if running and waiting and not cost_aware(policy):
        # Pinned (binpack's ``pinned``): no queued job planned ahead of a running one. Only
        # what the pin adds for the queued jobs counts: what it adds for the running jobs
        # alone (they fit their real nodes, not the model's: another overhead, a scheduler
        # that does not count memory) is no node anybody waits for. That part is >= 0 and
        # subtracted, so it can matter only when the pinned count is over the merged one:
        # only then are the running jobs packed alone (twice), most passes they are not.
        pinned = _count(waiting, running, node, target)
        if pinned > need:
            model = _count({}, running, node, target) - _count(running, {}, node, target)
            need = max(need, pinned - max(0, model))
    if not cost_aware(policy):
        return int(need)
    if hint is not None and hint[0] == jobs:  # the cost packer's count for these very jobs
        return int(min(need, hint[1]))
    if _Floor(jobs, node, target).over((), need - 1):
        return int(need)  # count packing is at the floor: the priced one cannot be below it

    # the priced heuristic mixes job shapes on a node (its result may follow the jobs' order)
    mixed = NEEDS.get(
        (binpack, tuple(jobs.items()), node, target, "mixed"),
        lambda: binpack(jobs, [node], target, prices={node: 1.0}, time_limit=0).counts.get(node, 0),
        weight=len(jobs) + 1,
    )
    return int(min(need, mixed))


def _count(jobs: Jobs, pinned: Jobs, node: Shape, target: float) -> int:
    """Nodes of shape ``node`` count packing needs for ``jobs`` beside the ``pinned`` ones
    (running: they start at 0), remembered in ``NEEDS``."""
    # Count packing sorts the jobs itself, so their order is not part of the key. The key
    # holds the packer too: one swapped in (a test's recording wrapper) is always called.
    return int(
        NEEDS.get(
            (binpack, frozenset(jobs.items()), frozenset(pinned.items()), node, target, "count"),
            lambda: binpack(jobs, [node], target_time=target, pinned=pinned).counts.get(node, 0),
            weight=len(jobs) + len(pinned) + 1,
        )
    )


def _prefix(groups: Sequence[tuple[Shape, int]], k: int) -> list[tuple[Shape, int]]:
    out = []
    for shape, count in groups:
        if k <= 0:
            break
        out.append((shape, min(count, k)))
        k -= count
    return out


def _largest_prefix(
    groups: Sequence[tuple[Shape, int]], fits: Callable[[list[tuple[Shape, int]]], bool]
) -> list[tuple[Shape, int]]:
    """The longest prefix of ``groups``, counted in jobs, that ``fits`` (a binary search:
    ``fits`` is taken to hold for every prefix of one it holds for)."""
    lo, hi = 0, sum(count for _, count in groups)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(_prefix(groups, mid)):
            lo = mid
        else:
            hi = mid - 1
    return _prefix(groups, lo)


def _serve(d: _TypeDemand, node: Shape, cap: int, policy: Policy) -> tuple[Jobs, Jobs, int]:
    """Split a type's queued jobs into (served, overflow) so the served ones need <= cap nodes."""
    groups = sorted(d.queued.items(), key=lambda item: _job_order(item[0]), reverse=True)
    need = _need(d.running, groups, node, policy, d.hint, cap)
    if need <= cap:
        return dict(groups), {}, need
    floor = _Floor(d.running, node, policy.target_time)
    fits = _largest_prefix(  # the largest prefix in cap nodes (running jobs always held)
        groups,
        lambda prefix: (
            not floor.over(prefix, cap) and _need(d.running, prefix, node, policy, cap=cap) <= cap
        ),
    )
    served: Jobs = {}
    for shape, count in fits:
        _add(served, shape, count)
    overflow = {s: c - served.get(s, 0) for s, c in groups if c - served.get(s, 0) > 0}
    return served, overflow, _need(d.running, served.items(), node, policy)


FLOOR_MARGIN = 1.0  # seconds past the target time a job must run to count in _Floor


class _Floor:
    """A lower bound on the nodes of shape ``node`` that any packing of some jobs needs.

    Every job starts by the target time, so the jobs that run longer than the target all
    run at that moment, side by side: in each resource, their sum over the node's room is
    a floor for every packer binpack runs (jobs that do not fit the node are left out, as
    binpack leaves them out). ``_serve`` asks it before packing a prefix: a prefix whose
    floor is over the cap needs more nodes than the cap whatever the packing, so the
    binary search takes the same step without packing it.

    The packers compare with a tolerance (a start may be a hair past the target, a node a
    hair over full), so only jobs at least ``FLOOR_MARGIN`` s longer than the target count,
    and the sums are taken a millionth short."""

    __slots__ = ("cores", "disk", "memory", "node", "target")

    def __init__(self, running: Jobs, node: Shape, target: float) -> None:
        self.node = node
        self.target = target
        self.memory, self.cores, self.disk = self._sums(running.items())

    def _sums(self, jobs: Iterable[tuple[Shape, int]]) -> tuple[float, float, float]:
        memory = cores = disk = 0.0
        node, target = self.node, self.target
        for job, count in jobs:
            if job.wallTime >= target + FLOOR_MARGIN and not job.fits_in(node):
                memory += job.memory * count
                cores += job.cores * count
                disk += job.disk * count
        return memory, cores, disk

    def over(self, queued: Iterable[tuple[Shape, int]], cap: int) -> bool:
        """Whether the running jobs and ``queued`` need more than ``cap`` nodes by the floor."""
        memory, cores, disk = self._sums(queued)
        node = self.node
        for total, room in (
            (self.memory + memory, node.memory),
            (self.cores + cores, node.cores),
            (self.disk + disk, node.disk),
        ):
            if room > 0 and total / room * (1 - 1e-6) > cap:
                return True
        return False


def _report(unschedulable: Waiting, jobs: Jobs, reason: str, nodes: int = 1) -> None:
    for shape, count in jobs.items():
        key = (shape, (reason,), nodes)
        unschedulable[key] = unschedulable.get(key, 0) + count


def _pack(
    view: _View,
    policy: Policy,
    demand: dict[str, _TypeDemand],
    unschedulable: Waiting,
) -> None:
    for i, t in enumerate(view.types):
        d = demand[t.name]
        usable = view.usable[t.name]
        everything = dict(d.queued)
        gang = d.gang_nodes  # placed first, within the max (_place_gangs)
        served, beyond, d.need = _serve(d, usable, t.max_nodes - gang, policy)
        for shape, count in d.past_max.items():
            _add(everything, shape, count)
        # Toil's estimate packs every job, max or not; the max clamps it after smoothing.
        over = beyond or d.past_max
        d.raw = _need(d.running, everything.items(), usable, policy) if over else d.need
        d.need += gang
        d.raw += gang
        d.gang_raw = gang
        _report(unschedulable, beyond, REASON_MAX_NODES)  # Toil's max: no spill
        d.queued = served
        if t.name not in view.blocked:
            continue
        # Cannot launch: what the live and draining nodes hold stays, the rest moves on.
        room = view.current(t.name) + len(view.reusable[t.name])
        served, overflow, d.need = _serve(d, usable, min(room, t.max_nodes) - gang, policy)
        d.need += gang
        d.queued = served
        later = view.types[i + 1 :]
        moved: Jobs = {}
        for shape, count in sorted(overflow.items(), key=lambda it: _job_order(it[0])):
            same = [o for o in later if o.preemptible == t.preemptible]
            target = next((o for o in same if not shape.fits_in(view.usable[o.name])), None)
            if target is not None:
                _add(demand[target.name].queued, shape, count)
                demand[target.name].fallback_from.add(t.name)
                _add(moved, shape, count)
            elif t.preemptible:
                _add(d.stranded, shape, count)
            else:
                _report(unschedulable, {shape: count}, REASON_UNAVAILABLE)
        if moved:  # jobs handed to a fallback type are its demand now, not this type's
            kept = dict(served)
            for shape, count in overflow.items():
                _add(kept, shape, count - moved.get(shape, 0))
            d.raw = _need(d.running, kept.items(), usable, policy) + gang


def _serve_within(
    view: _View, policy: Policy, t: NodeType, d: _TypeDemand, cap: int, out: Waiting, reason: str
) -> None:
    """Keep the type's gangs, then its queued jobs, that ``cap`` nodes serve; report the
    rest in ``out`` as waiting for ``reason``. A gang to launch needs new nodes: the live
    ones within ``cap`` are too few for it (else it was placed there)."""
    new = cap - view.current(t.name)
    cap -= d.gang_live  # on live nodes: within any cap of live + more
    kept: list[tuple[Shape, int]] = []
    for shape, n in d.gangs:
        if n <= min(cap, new):
            kept.append((shape, n))
            cap -= n
            new -= n
        else:
            _report(out, {shape: 1}, reason, n)
            d.gangs_cut = True
    d.gangs = kept
    served, overflow, d.need = _serve(d, view.usable[t.name], max(0, cap), policy)
    d.need += d.gang_nodes
    d.queued = served
    _report(out, overflow, reason)


# -- steps 4 to 6: smooth, compensate, limit ----------------------------------------------


@dataclass(slots=True)
class _Target:
    smoothed: int
    target: int
    launch: int
    notes: list[str]
    undrain: list[NodeInfo] = field(default_factory=list)
    owed: list[tuple[NodeType, Jobs]] = field(default_factory=list)  # spot jobs compensated

    @property
    def adds(self) -> int:
        return self.launch + len(self.undrain)


def _twin(spot: NodeType, view: _View, policy: Policy, jobs: Jobs) -> NodeType | None:
    """The on-demand type that compensates ``spot``: the same instance types (Toil), or,
    with ``compensate_other_types``, the first on-demand type that fits all ``jobs``."""
    on_demand = [o for o in view.types if not o.preemptible]
    for o in on_demand:
        if set(o.instance_types) == set(spot.instance_types):
            return o
    for o in on_demand:
        if set(o.instance_types) & set(spot.instance_types):
            return o
    if not policy.compensate_other_types:
        return None
    usable = view.usable
    return next((o for o in on_demand if all(not j.fits_in(usable[o.name]) for j in jobs)), None)


def _clamp(t: NodeType, n: int) -> int:
    return max(t.min_nodes, min(t.max_nodes, n))


def _smooth_and_limit(
    view: _View,
    policy: Policy,
    state: PlannerState,
    demand: dict[str, _TypeDemand],
    unschedulable: Waiting,
) -> tuple[dict[str, _Target], dict[str, float]]:
    b = policy.beta_inertia
    c = policy.preemptible_compensation
    estimates: dict[str, float] = {}
    out: dict[str, _Target] = {}
    # who compensates each spot type's missing jobs: (spot type, its missing jobs)
    owed: dict[str, list[tuple[NodeType, Jobs]]] = {t.name: [] for t in view.types}
    for t in view.types:  # spot types come first, so their deficits are known in time
        d = demand[t.name]
        weighted = smooth(d.raw, state.estimates.get(t.name, 0.0), b)
        estimates[t.name] = weighted
        smoothed = round_half_away(weighted)
        notes: list[str] = []
        if smoothed != d.raw:
            notes.append(f"smoothed from {d.raw} to {smoothed} by betaInertia {b:g}")
        current = view.current(t.name)
        if t.preemptible and t.name in view.blocked:
            d.deficit = max(0, _clamp(t, smoothed) - current - len(view.reusable[t.name]))
            missing, _, _ = _serve(
                _TypeDemand(queued=d.stranded), view.usable[t.name], d.deficit, policy
            )
            twin = _twin(t, view, policy, missing) if c > 0 and d.deficit else None
            if twin is not None:
                owed[twin.name].append((t, missing))
        estimate = smoothed
        for spot, missing in owed[t.name]:
            same = set(spot.instance_types) & set(t.instance_types)
            if same:  # Toil: as many nodes of the same instance type as are missing
                nodes = demand[spot.name].deficit
            else:  # the extension: as many as the missing nodes' jobs need of this type
                nodes = _need({}, missing.items(), view.usable[t.name], policy)
            d.compensation += round_half_away(nodes * c)
            d.compensated.append(spot.name)
        if d.compensation:
            notes.append(
                f"{d.compensation} more for {sum(demand[s].deficit for s in d.compensated)} "
                f"missing spot nodes of {', '.join(d.compensated)} "
                f"(preemptibleCompensation {c:g})"
            )
            estimate += d.compensation
        target = _clamp(t, estimate)
        if target < estimate:
            notes.append(f"capped to max {t.max_nodes}")
        elif target > estimate:
            notes.append(f"raised to min {t.min_nodes}")
        gang = min(d.gang_launch, target)  # a gang to launch gets new nodes, free ones or not
        want = max(0, target - gang - current) + gang
        undrain = view.reusable[t.name][: max(0, want - d.gang_launch)]  # gangs: new nodes
        launch = want - len(undrain)
        if d.gang_nodes:  # the gangs' nodes on top of the nodes they cannot have (no more adds)
            kept = _kept_beside_gangs(view, t, d)
            floor = min(t.max_nodes, kept + d.gang_live + gang)
            if floor > target:
                notes.append(f"target {floor}: the gangs' nodes on top of {kept} busy ones")
                target = floor
        if launch > view.room(t):
            notes.append(
                f"launching {view.room(t)}, not {launch}: {view.drained[t.name]} draining "
                f"(drained by others included) count toward max {t.max_nodes}"
            )
            launch = view.room(t)
            cap = current + len(undrain) + launch
            _serve_within(view, policy, t, d, cap, unschedulable, REASON_MAX_NODES)
        if launch and t.name in view.blocked:
            notes.append(
                f"not launching {launch}: all offerings in backoff for another "
                f"{_duration(view.blocked[t.name] - view.now)}"
            )
            launch = 0
        out[t.name] = _Target(smoothed, target, launch, notes, undrain, owed[t.name])
    return out, estimates


def _kept_beside_gangs(view: _View, t: NodeType, d: _TypeDemand) -> int:
    """Live nodes of ``t`` running jobs hold that no gang takes (``_freed_soon`` takes busy
    nodes only once every free one is taken). A type's target holds them beside the gangs'
    nodes: the 1-node jobs' need may count fewer (count packing without queued jobs, cost
    packing always, pack running jobs one after another, as if they were not all running
    now on nodes of their own), and the gangs' free and new nodes would look like its
    surplus: the plan launched new ones above its target, with cause "min-nodes", and
    drained free ones a gang was to run on."""
    live = view.live[t.name]
    busy = sum(1 for n in live if n.id in view.busy)
    taken_busy = max(0, d.gang_live - (len(live) - busy))
    return busy - taken_busy


def _report_stranded(
    view: _View,
    policy: Policy,
    demand: dict[str, _TypeDemand],
    targets: dict[str, _Target],
    unschedulable: Waiting,
) -> None:
    """Spot jobs no type takes: the compensation nodes that are really added (after the
    limits and the cost ceiling) serve some; the rest wait for spot ("unavailable")."""
    for t in view.types:
        tt = targets[t.name]
        usable = view.usable[t.name]
        extra = max(0, view.current(t.name) + tt.adds - _clamp(t, tt.smoothed))
        for spot, missing in tt.owed:
            served, _, _ = _serve(_TypeDemand(queued=missing), usable, extra, policy)
            extra -= _need({}, served.items(), usable, policy)
            for shape, count in served.items():
                demand[spot.name].stranded[shape] -= count
    for t in view.types:
        _report(
            unschedulable,
            {s: n for s, n in demand[t.name].stranded.items() if n > 0},
            REASON_UNAVAILABLE,
        )


# -- step 7: cost ceiling -----------------------------------------------------------------


def _cost_ceiling(
    view: _View,
    policy: Policy,
    demand: dict[str, _TypeDemand],
    targets: dict[str, _Target],
    unschedulable: Waiting,
) -> None:
    ceiling = policy.cost_ceiling_per_hour
    if ceiling is None:
        return
    projected = sum(_price(t) * (view.current(t.name) + targets[t.name].adds) for t in view.types)
    cut_types: set[str] = set()
    for t in reversed(view.types):  # least preferred (largest) type gives way first
        tt = targets[t.name]
        floor = max(0, t.min_nodes - view.current(t.name))  # min_nodes wins over the ceiling
        cut = 0
        while projected > ceiling + 1e-9 and tt.adds > floor and _price(t) > 0:
            if tt.launch:
                tt.launch -= 1
            else:
                tt.undrain.pop()
            projected -= _price(t)
            cut += 1
        if not cut:
            continue
        tt.notes.append(f"{cut} fewer to stay within the cost ceiling of ${ceiling:g}/h")
        cap = view.current(t.name) + tt.adds
        _serve_within(view, policy, t, demand[t.name], cap, unschedulable, REASON_COST_CEILING)
        cut_types.add(t.name)
    _past_max_held_by_the_ceiling(view, demand, cut_types, unschedulable)


def _past_max_held_by_the_ceiling(
    view: _View, demand: dict[str, _TypeDemand], cut: set[str], unschedulable: Waiting
) -> None:
    """Jobs past every max that only types the cost ceiling cut could take (every type that
    fits them and can launch was cut) wait for the ceiling, not a max: a larger max runs
    none of them. Where a type the ceiling left alone fits them, a larger max would
    (review11), so they stay "max-nodes". Those that move go to every such type's
    ``past_ceiling``, so no launch message says they wait past every max."""
    fitting: dict[Shape, list[str]] = {}  # job shape -> the types whose past_max holds it
    for t in view.types:
        for shape in demand[t.name].past_max:
            fitting.setdefault(shape, []).append(t.name)
    for shape, names in fitting.items():
        if not cut.issuperset(names):
            continue
        key = (shape, (REASON_MAX_NODES,), 1)
        moved = min(demand[names[0]].past_max[shape], unschedulable.get(key, 0))
        if moved <= 0:
            continue
        unschedulable[key] -= moved
        if not unschedulable[key]:
            del unschedulable[key]
        _report(unschedulable, {shape: moved}, REASON_COST_CEILING)
        for name in names:
            _add(demand[name].past_ceiling, shape, moved)


def _whole_gangs(
    view: _View,
    demand: dict[str, _TypeDemand],
    targets: dict[str, _Target],
    planned: Mapping[str, int],
) -> None:
    """A launch holds every gang it serves whole: one that smoothing, the max or the cost
    ceiling left short of a gang's nodes launches that gang not at all (the gangs come
    first, then 1-node jobs; the gangs a limit cut are reported there). ``planned``: the
    nodes of gangs to launch per type that the targets hold (before the cost ceiling)."""
    for t in view.types:
        d, tt = demand[t.name], targets[t.name]
        if tt.launch >= d.gang_launch == planned[t.name] and not d.gangs_cut:
            continue
        kept: list[tuple[Shape, int]] = []
        nodes = 0
        for shape, n in d.gangs:
            if nodes + n <= tt.launch:
                kept.append((shape, n))
                nodes += n
        # what is left of the launch serves 1-node jobs only as far as they need new nodes
        singles = d.need - d.gang_launch - view.current(t.name) - len(tt.undrain)
        launch = nodes + max(0, min(tt.launch - nodes, singles))
        if launch < tt.launch:
            tt.notes.append(
                f"launching {launch}, not {tt.launch}: a gang's nodes are launched all or none"
            )
        rest = d.need - d.gang_launch + nodes  # 1-node jobs' need, gangs kept
        d.gangs = kept
        tt.launch = launch
        cut = planned[t.name] - nodes
        if cut > 0:  # the target no longer holds their new nodes (_cut_gangs_target)
            tt.target = _cut_gangs_target(view, t, d, tt.target, cut, rest)


def _cut_gangs_target(
    view: _View, t: NodeType, d: _TypeDemand, target: int, cut: int, rest: int
) -> int:
    """A type's target once ``cut`` nodes of gangs to launch are not launched: it held them
    (their need, the floor of ``_smooth_and_limit``), so live nodes too few for a gang
    were never surplus; with the cost ceiling cutting the gang, those idle nodes stayed up
    for ever, their price keeping the gang under the ceiling. It still covers ``rest``
    (the 1-node jobs' need and the gangs kept), the gangs' nodes on top of the busy ones,
    and the min."""
    floor = min(t.max_nodes, _kept_beside_gangs(view, t, d) + d.gang_nodes)
    return min(target, max(t.min_nodes, floor, target - cut, rest))


# -- step 8: scale down -------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _billing(node: NodeInfo, t: NodeType, now: float) -> tuple[float, str]:
    """Seconds left in the node's current billing interval, and a phrase for messages."""
    interval = t.shape.wallTime
    if interval <= 0:
        return 0.0, ""
    into = (now - node.launched_at) % interval
    unit = "billing hour" if interval == 3600 else f"{_duration(interval)} billing interval"
    return interval - into, f"{_duration(into)} into its {unit}"


def _scale_down(
    view: _View,
    policy: Policy,
    state: PlannerState,
    targets: dict[str, _Target],
) -> tuple[list[NodeAction], list[NodeAction], dict[str, float]]:
    now = view.now
    drains: list[NodeAction] = []
    terminations: list[NodeAction] = []
    for node in view.join_timeouts:
        terminations.append(
            NodeAction(
                node.id,
                node.node_type,
                RemoveCause.JOIN_TIMEOUT,
                f"booting for {_duration(now - node.launched_at)} without joining "
                f"(join timeout {_duration(policy.join_timeout)}); "
                f"offering {node.instance_type}/{node.zone} should back off",
            )
        )
    for node in view.unhealthy:
        assert node.missing_since is not None
        terminations.append(
            NodeAction(
                node.id,
                node.node_type,
                RemoveCause.UNHEALTHY,
                f"joined, then missing from the scheduler's reads for "
                f"{_duration(now - node.missing_since)} (unhealthy timeout "
                f"{_duration(policy.unhealthy_timeout)}); runs nothing",
            )
        )
    taken_back = {n.id for tt in targets.values() for n in tt.undrain}
    for node in view.draining:
        if node.static or node.id in view.busy or node.id in taken_back:
            continue
        if node.drain_unconfirmed:  # the mark alone: the scheduler may still send it work
            continue
        terminations.append(
            NodeAction(node.id, node.node_type, RemoveCause.IDLE, "drained and now idle")
        )

    total = sum(len(nodes) for nodes in view.live.values())
    # shared with the unhealthy terminations (chosen within it by _cap_unhealthy)
    budget = max(1, math.floor(policy.scale_down_budget * (total + len(view.unhealthy))))
    budget -= len(view.unhealthy)
    withheld = {a.node_id for a in view.withheld}
    unneeded: dict[str, float] = {}
    for t in view.types:
        live = view.live[t.name]
        surplus = len(live) - targets[t.name].target
        if surplus <= 0:
            continue
        idle = [
            n
            for n in live
            if n.state is NodeState.READY
            and not n.static
            and n.id not in view.busy
            and n.id not in withheld  # missing, not replaced now: not drained either
        ]
        idle.sort(key=lambda n: (_billing(n, t, now)[0], n.id))
        excess = len(live) - t.max_nodes
        for node in idle[: max(0, excess)]:
            drains.append(
                NodeAction(
                    node.id,
                    t.name,
                    RemoveCause.ABOVE_MAX,
                    f"{len(live)} x {t.name} exceed max {t.max_nodes}; idle, "
                    f"{_billing(node, t, now)[1]}",
                )
            )
            surplus -= 1
        rest = idle[max(0, excess) :]
        for node in rest:
            unneeded[node.id] = state.unneeded_since.get(node.id, now)
        ripe = [n for n in rest if now - unneeded[n.id] >= policy.scale_down_unneeded_time]
        for node in ripe[: max(0, min(surplus, budget))]:
            drains.append(
                NodeAction(
                    node.id,
                    t.name,
                    RemoveCause.IDLE,
                    f"idle for {_duration(now - unneeded[node.id])}, "
                    f"{_billing(node, t, now)[1]}; {t.name} wants "
                    f"{targets[t.name].target} of {len(live)}",
                )
            )
            del unneeded[node.id]
            budget -= 1
    return drains, terminations, unneeded


# -- the plan -----------------------------------------------------------------------------


def _cause(view: _View, t: NodeType, d: _TypeDemand, tt: _Target) -> AddCause:
    if d.fallback_from:
        return AddCause.FALLBACK
    if d.compensation:
        return AddCause.PREEMPTIBLE_COMPENSATION
    if tt.smoothed <= view.current(t.name) < t.min_nodes and not d.gangs:
        return AddCause.MIN_NODES  # the min alone asks for more
    # the jobs' need; or, beside gangs, their new nodes, and what _whole_gangs leaves 1-node
    # jobs that need new nodes (the smoothed estimate may be at the live nodes then)
    return AddCause.DEMAND


def _why(view: _View, t: NodeType, d: _TypeDemand, tt: _Target, note: str) -> list[str]:
    queued = sum(d.queued.values()) + sum(d.past_max.values())
    # counted under every type that fits them: say so (not those held by the cost ceiling)
    past = sum(d.past_max.values()) - sum(d.past_ceiling.values())
    running = sum(d.running.values())
    held = f" and {running} running" if running else ""
    shared = f" ({past} of them wait past every max)" if past else ""
    gangs = _gang_phrases(d, t)
    parts = (
        []
        if gangs and not queued + running
        else [f"{queued} queued{held} jobs need {d.raw - d.gang_raw} x {t.name}{shared}"]
    )
    parts.extend(gangs)
    if d.fallback_from:
        parts.append(
            "falling back from " + ", ".join(sorted(d.fallback_from)) + " (offerings in backoff)"
        )
    if note:
        parts.append(f"cost packing: {note}")
    parts.extend(tt.notes)
    return parts


def _gang_phrases(d: _TypeDemand, t: NodeType) -> list[str]:
    """The gangs on this type, e.g. "a 4-node job of 12 cores, 40 GiB each needs 4 x
    c5.4xlarge (one zone, all or none)"."""
    parts = []
    for where, gangs in (("free", d.gangs_live), ("new", d.gangs)):
        counts: dict[tuple[Shape, int], int] = {}
        for key in gangs:
            counts[key] = counts.get(key, 0) + 1
        for (shape, n), count in counts.items():
            size = f"{shape.cores:g} cores, {shape.memory / GiB:g} GiB each"
            jobs = f"a {n}-node job" if count == 1 else f"{count} {n}-node jobs"
            verb = "needs" if count == 1 else "need"
            tail = "one zone, all or none" if where == "new" else "free nodes"
            parts.append(f"{jobs} of {size} {verb} {n * count} x {t.name} ({tail})")
    return parts


def _actions(
    view: _View, demand: dict[str, _TypeDemand], targets: dict[str, _Target], note: str
) -> tuple[list[Launch], list[NodeAction]]:
    launches: list[Launch] = []
    undrains: list[NodeAction] = []
    for t in view.types:
        d, tt = demand[t.name], targets[t.name]
        if not tt.adds:
            continue
        cause = _cause(view, t, d, tt)
        parts = _why(view, t, d, tt, note)
        current = view.current(t.name)
        reused = len(tt.undrain)
        for node in tt.undrain:
            undrains.append(
                NodeAction(
                    node.id,
                    t.name,
                    cause,
                    "; ".join(
                        [
                            *parts,
                            f"{current} present or booting, taking back draining "
                            f"{node.id} instead of launching",
                        ]
                    ),
                )
            )
        if tt.launch:
            taking = f", taking back {reused} draining" if reused else ""
            parts.append(f"{current} present or booting{taking}, launching {tt.launch}")
            gangs = tuple(n for _, n in d.gangs)
            launches.append(Launch(t.name, tt.launch, cause, "; ".join(parts), gangs))
    return launches, undrains


def _reported(
    unschedulable: Waiting,
    last: tuple[Mapping[tuple[Shape, tuple[str, ...], int], int], tuple[Unschedulable, ...]],
) -> tuple[Unschedulable, ...]:
    """The plan's unschedulable jobs, in Toil's shape order. A queue that cannot run
    reports the same jobs pass after pass (a real log may hold thousands of shapes wider
    than the cluster may grow): when they equal the last plan's (``last``, the state's
    ``reported``), its tuple is given again (a dict compare instead of a sort and a record
    per shape)."""
    if unschedulable == last[0]:
        return last[1]
    return tuple(
        Unschedulable(shape, count, reasons, nodes)
        for (shape, reasons, nodes), count in sorted(
            unschedulable.items(), key=lambda it: (_job_order(it[0][0]), *it[0][1:])
        )
    )


def plan(snapshot: Snapshot, policy: Policy, state: PlannerState, now: float) -> Plan:
    """Decide what to launch, undrain, drain and terminate. Pure: same arguments, same
    plan, unless cost packing's solver runs out of its time (then the packing it found
    depends on how fast the machine is)."""
    view = _observe(snapshot, policy, now)
    unschedulable: Waiting = {}
    waits: dict[tuple[Shape, int], float] = {}
    demand, note = _assign(snapshot, view, policy, unschedulable, {}, state.gang_waits, waits)
    _pack(view, policy, demand, unschedulable)
    targets, estimates = _smooth_and_limit(view, policy, state, demand, unschedulable)
    reserved = {name: d.compensation for name, d in demand.items() if d.compensation}
    if view.cost and reserved:
        # Compensation nodes are added on top of a type's need, so the live ones are not
        # room for queued jobs: assign again without them (else the pass after they boot
        # puts jobs on them and launches their replacement).
        unschedulable, waits = {}, {}
        demand, note = _assign(
            snapshot, view, policy, unschedulable, reserved, state.gang_waits, waits
        )
        _pack(view, policy, demand, unschedulable)
        targets, estimates = _smooth_and_limit(view, policy, state, demand, unschedulable)
    planned = {name: d.gang_launch for name, d in demand.items()}
    _cost_ceiling(view, policy, demand, targets, unschedulable)
    _whole_gangs(view, demand, targets, planned)
    _report_stranded(view, policy, demand, targets, unschedulable)
    for t in view.types:  # what the cluster heads to: never above what it can reach
        tt = targets[t.name]
        tt.target = min(tt.target, view.current(t.name) + tt.adds)
    drains, terminations, unneeded = _scale_down(view, policy, state, targets)
    launches, undrains = _actions(view, demand, targets, note)
    reported = _reported(unschedulable, state.reported)
    return Plan(
        launches=tuple(launches),
        drains=tuple(drains),
        terminations=tuple(terminations),
        targets=MappingProxyType({t.name: targets[t.name].target for t in view.types}),
        unschedulable=reported,
        state=PlannerState(
            estimates=MappingProxyType(estimates),
            unneeded_since=MappingProxyType(unneeded),
            gang_waits=MappingProxyType(waits),
            reported=(unschedulable, reported),
        ),
        cost_per_hour=sum(_price(t) * targets[t.name].target for t in view.types),
        withheld=tuple(view.withheld),
        undrains=tuple(undrains),
    )
