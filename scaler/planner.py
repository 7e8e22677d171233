"""The planner: ``plan(snapshot, policy, state, now) -> Plan``, a pure function.

The body is a fixed sequence of named steps, as Ray v2's scheduler is::

    observe         classify nodes per type: live (booting + ready) capacity,
                    draining, join timeouts, busy, types whose offerings are all
                    in backoff
    assign          give each job a node type, as Toil's bin packing does: a
                    running job stays on its node's type (for its *remaining*
                    expected time); a queued job goes to the first type, in
                    Toil's shape order, whose shape after overhead fits it.
                    With ``Policy.packing == "cost"`` and a price on every
                    type, queued jobs go where ``binpack`` with prices puts
                    them (the cheapest mix of types that can grow), then live
                    nodes that mix leaves idle take jobs from types that would
                    otherwise launch
    pack            bin-pack each type's jobs (``scaler.binpack``); a type that
                    cannot grow (offerings in backoff) or is at its max serves
                    what fits and passes the rest on: backoff -> the next type
                    of the same capacity type that fits (FALLBACK), then, for
                    spot jobs, the on-demand twin for the
                    ``preemptible_compensation`` share; max -> "max-nodes"
    smooth          betaInertia: estimate = (1-b)*need + b*previous, rounded
                    half away from zero, as Toil's ``smoothEstimate``
    limit           clamp to min/max; launches = target - live nodes
    cost ceiling    trim launches (least preferred type first) until the
                    cluster's cost fits; report the demand left ("cost-ceiling")
    scale down      join timeouts; draining+idle -> terminate; idle nodes above
                    max -> drain (ABOVE_MAX); idle, ready, autoscaled nodes of a
                    type above its target, unneeded long enough -> drain (IDLE),
                    within the budget, nearest the end of their billing interval
                    first

Semantics a caller can rely on:

* Booting and ready nodes are capacity. Launches are ``target - live``, so a
  second pass over the same demand with the launched nodes present as booting
  launches nothing.
* Draining is one way (as Karpenter's disruption is): a draining node is no
  longer capacity, its running jobs are not demand, and it is terminated once
  idle. If demand returns, new nodes are launched rather than drains undone;
  this keeps the planner free of races with the executor's drain.
* Static nodes, and nodes of no configured type, are never drained or
  terminated. Static nodes of a configured type count as its capacity (as in
  Toil, whose node counts include them).
* Nodes above a type's max are drained at once (no unneeded period, outside
  the budget: the max is a hard limit); busy ones are left alone.
* Overhead is flat per node (``Policy.node_memory_overhead``, 1 GiB, and
  ``node_disk_overhead``, 4 GiB), taken from memory and disk, never cores.
  Toil reserves more on big nodes (GKE's progressive memory table plus 100 MiB,
  5 GB + 5% of disk); set the two knobs to match it where that matters.
* The cost ceiling covers live nodes plus launches, priced by
  ``NodeType.price_per_hour`` (a type without a price counts as free). It only
  trims launches: ``min_nodes`` wins over it, and existing nodes are not
  removed to meet it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from shoal.scaler.binpack import binpack
from shoal.scaler.model import (
    AddCause,
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
from shoal.scaler.shape import Shape

__all__ = ["RUNNING_JOB_MIN_REMAINING", "plan", "round_half_away", "usable_shape"]

# A running job past its expected run time still holds its node; assume it holds
# it at least this long more (seconds).
RUNNING_JOB_MIN_REMAINING = 60.0

REASON_MAX_NODES = "max-nodes"
REASON_COST_CEILING = "cost-ceiling"
REASON_UNAVAILABLE = "unavailable"  # every type that fits is in backoff and cannot grow

Jobs = dict[Shape, int]


def round_half_away(number: float) -> int:
    """Round to the nearest integer, ties away from zero (Toil's ``_round``)."""
    rounded = math.floor(abs(number) + 0.5)
    return int(rounded if number >= 0 else -rounded)


def usable_shape(node_type: NodeType, policy: Policy) -> Shape:
    """What a node of this type offers jobs: its shape less the OS and agent overhead."""
    s = node_type.shape
    return Shape(
        s.wallTime,
        max(0.0, s.memory - policy.node_memory_overhead),
        s.cores,
        max(0.0, s.disk - policy.node_disk_overhead),
        s.preemptible,
    )


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
    usable: dict[str, Shape]
    live: dict[str, list[NodeInfo]]  # booting + ready, not timed out
    draining: list[NodeInfo]
    join_timeouts: list[NodeInfo]
    busy: set[str]
    blocked: dict[str, float]  # type -> time the earliest of its offerings frees up
    now: float

    def current(self, name: str) -> int:
        return len(self.live[name])


def _observe(snapshot: Snapshot, policy: Policy, now: float) -> _View:
    types = sorted(policy.node_types, key=_type_order)
    names = {t.name for t in types}
    live: dict[str, list[NodeInfo]] = {t.name: [] for t in types}
    draining: list[NodeInfo] = []
    timeouts: list[NodeInfo] = []
    for node in sorted(snapshot.nodes, key=lambda n: n.id):
        if node.node_type not in names:
            continue
        if node.state is NodeState.DRAINING:
            draining.append(node)
        elif (
            node.state is NodeState.BOOTING
            and not node.static
            and now - node.launched_at > policy.join_timeout
        ):
            timeouts.append(node)
        else:
            live[node.node_type].append(node)
    blocked: dict[str, float] = {}
    for t in types:
        untils = [snapshot.unavailable.get(o) for o in t.offerings()]
        if untils and all(u is not None and u > now for u in untils):
            blocked[t.name] = min(u for u in untils if u is not None)
    return _View(
        types=types,
        usable={t.name: usable_shape(t, policy) for t in types},
        live=live,
        draining=draining,
        join_timeouts=timeouts,
        busy={job.node_id for job in snapshot.demand.running},
        blocked=blocked,
        now=now,
    )


# -- step 2: assign -----------------------------------------------------------------------


@dataclass(slots=True)
class _TypeDemand:
    running: Jobs = field(default_factory=dict)
    queued: Jobs = field(default_factory=dict)
    fallback_from: set[str] = field(default_factory=set)
    compensation: int = 0  # spot jobs placed here because their spot types are in backoff
    need: int = 0  # nodes the served jobs need (packed)


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


def _assign(
    snapshot: Snapshot,
    view: _View,
    policy: Policy,
    unschedulable: dict[tuple[Shape, tuple[str, ...]], int],
) -> dict[str, _TypeDemand]:
    demand = {t.name: _TypeDemand() for t in view.types}
    where = {n.id: n.node_type for nodes in view.live.values() for n in nodes}
    for job in snapshot.demand.running:
        node_type = where.get(job.node_id)
        if node_type is None:
            continue  # on a draining, timed-out or unmanaged node: not our demand
        s = job.shape
        remaining = max(s.wallTime - job.elapsed, RUNNING_JOB_MIN_REMAINING)
        _add(
            demand[node_type].running, Shape(remaining, s.memory, s.cores, s.disk, s.preemptible), 1
        )
    queued: Jobs = {}
    for q in snapshot.demand.queued:
        _add(queued, q.shape, q.count)
    if _cost_aware(view, policy):
        queued = _assign_by_cost(queued, view, policy, demand)
    for shape, count in queued.items():
        for t in view.types:
            if not shape.fits_in(view.usable[t.name]):
                _add(demand[t.name].queued, shape, count)
                break
        else:
            key = (shape, _fewest_failures(shape, view))
            unschedulable[key] = unschedulable.get(key, 0) + count
    return demand


def _cost_aware(view: _View, policy: Policy) -> bool:
    return policy.packing == "cost" and all(t.price_per_hour is not None for t in view.types)


def _assign_by_cost(
    queued: Jobs, view: _View, policy: Policy, demand: dict[str, _TypeDemand]
) -> Jobs:
    """Queued jobs to the cheapest mix of types that can grow; then live nodes that mix
    leaves idle take jobs from types that would launch. Returns what no type that can
    grow fits, for Toil's order.

    Only that surplus is offered, so the step is stable: once the launches are booting,
    the next pass computes the same mix, finds no type short, and launches nothing."""
    owner: dict[Shape, NodeType] = {}
    for t in view.types:  # two types of one usable shape: the cheaper one (then the first)
        s = view.usable[t.name]
        if t.name not in view.blocked and (s not in owner or _price(t) < _price(owner[s])):
            owner[s] = t
    if not queued or not owner:
        return queued
    packing = binpack(
        queued, list(owner), policy.target_time, prices={s: _price(t) for s, t in owner.items()}
    )
    left = dict(queued)
    shares: dict[str, Jobs] = {t.name: {} for t in view.types}
    for shape, jobs in packing.assignment.items():
        for job, count in jobs.items():
            _add(shares[owner[shape].name], job, count)
            left[job] -= count

    def need(t: NodeType) -> int:
        return _need(demand[t.name].running, shares[t.name].items(), view.usable[t.name], policy)

    short = [t for t in view.types if need(t) > view.current(t.name)]
    for t in view.types:
        if not short or not view.current(t.name) or need(t) >= view.current(t.name):
            continue
        usable = view.usable[t.name]
        offered: Jobs = {}
        for other in short:
            for job, count in shares[other.name].items():
                if not job.fits_in(usable):
                    _add(offered, job, count)
        held = dict(demand[t.name].running)
        for job, count in shares[t.name].items():
            _add(held, job, count)
        served, _, _ = _serve(
            _TypeDemand(running=held, queued=offered), usable, view.current(t.name), policy
        )
        for job, count in served.items():
            _add(shares[t.name], job, count)
            for other in short:  # taken from the short types in order
                moved = min(count, shares[other.name].get(job, 0))
                if moved:
                    shares[other.name][job] -= moved
                    count -= moved
    for t in view.types:
        for job, count in shares[t.name].items():
            _add(demand[t.name].queued, job, count)
    return {s: n for s, n in left.items() if n > 0}


# -- step 3: pack -------------------------------------------------------------------------


def _need(running: Jobs, queued: Iterable[tuple[Shape, int]], node: Shape, policy: Policy) -> int:
    jobs = dict(running)
    for shape, count in queued:
        _add(jobs, shape, count)
    if not jobs:
        return 0
    need = binpack(jobs, [node], target_time=policy.target_time).counts.get(node, 0)
    if policy.packing == "cost":  # the priced packer mixes job shapes on a node
        mixed = binpack(jobs, [node], policy.target_time, prices={node: 1.0}).counts.get(node, 0)
        need = min(need, mixed)
    return int(need)


def _prefix(groups: Sequence[tuple[Shape, int]], k: int) -> list[tuple[Shape, int]]:
    out = []
    for shape, count in groups:
        if k <= 0:
            break
        out.append((shape, min(count, k)))
        k -= count
    return out


def _serve(d: _TypeDemand, node: Shape, cap: int, policy: Policy) -> tuple[Jobs, Jobs, int]:
    """Split a type's queued jobs into (served, overflow) so the served ones need <= cap nodes."""
    groups = sorted(d.queued.items(), key=lambda item: _job_order(item[0]), reverse=True)
    total = sum(count for _, count in groups)
    need = _need(d.running, groups, node, policy)
    if need <= cap:
        return dict(groups), {}, need
    lo, hi = 0, total  # largest k whose prefix fits in cap nodes (running jobs always held)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _need(d.running, _prefix(groups, mid), node, policy) <= cap:
            lo = mid
        else:
            hi = mid - 1
    served: Jobs = {}
    for shape, count in _prefix(groups, lo):
        _add(served, shape, count)
    overflow = {s: c - served.get(s, 0) for s, c in groups if c - served.get(s, 0) > 0}
    return served, overflow, _need(d.running, served.items(), node, policy)


def _pack(
    view: _View,
    policy: Policy,
    demand: dict[str, _TypeDemand],
    unschedulable: dict[tuple[Shape, tuple[str, ...]], int],
) -> None:
    for i, t in enumerate(view.types):
        d = demand[t.name]
        blocked = t.name in view.blocked
        cap = min(view.current(t.name), t.max_nodes) if blocked else t.max_nodes
        served, overflow, d.need = _serve(d, view.usable[t.name], cap, policy)
        d.queued = served
        if not overflow:
            continue
        if not blocked or cap == t.max_nodes:
            for shape, count in overflow.items():
                key = (shape, (REASON_MAX_NODES,))
                unschedulable[key] = unschedulable.get(key, 0) + count
            continue
        later = view.types[i + 1 :]
        for shape, count in sorted(overflow.items(), key=lambda it: _job_order(it[0])):
            same = [o for o in later if o.preemptible == t.preemptible]
            target = next((o for o in same if not shape.fits_in(view.usable[o.name])), None)
            if target is not None:
                _add(demand[target.name].queued, shape, count)
                demand[target.name].fallback_from.add(t.name)
                continue
            left = count
            if t.preemptible and policy.preemptible_compensation > 0:
                twin = _on_demand_twin(t, shape, later, view)
                if twin is not None:
                    moved = min(count, round_half_away(count * policy.preemptible_compensation))
                    _add(demand[twin.name].queued, shape, moved)
                    demand[twin.name].compensation += moved
                    left -= moved
            if left:
                key = (shape, (REASON_UNAVAILABLE,))
                unschedulable[key] = unschedulable.get(key, 0) + left


def _on_demand_twin(
    spot: NodeType, shape: Shape, later: Sequence[NodeType], view: _View
) -> NodeType | None:
    fitting = [o for o in later if not o.preemptible and not shape.fits_in(view.usable[o.name])]
    for o in fitting:  # same instance types first: "the same type, on demand"
        if set(o.instance_types) == set(spot.instance_types):
            return o
    return fitting[0] if fitting else None


# -- steps 4 and 5: smooth, limit ---------------------------------------------------------


@dataclass(slots=True)
class _Target:
    smoothed: int
    target: int
    launch: int
    notes: list[str]


def _smooth_and_limit(
    view: _View, policy: Policy, state: PlannerState, demand: dict[str, _TypeDemand]
) -> tuple[dict[str, _Target], dict[str, float]]:
    b = policy.beta_inertia
    estimates: dict[str, float] = {}
    out: dict[str, _Target] = {}
    for t in view.types:
        need = demand[t.name].need
        weighted = (1 - b) * need + b * state.estimates.get(t.name, 0.0)
        estimates[t.name] = weighted
        smoothed = round_half_away(weighted)
        notes: list[str] = []
        if smoothed != need:
            notes.append(f"smoothed from {need} to {smoothed} by betaInertia {b:g}")
        target = smoothed
        if target > t.max_nodes:
            notes.append(f"capped to max {t.max_nodes}")
            target = t.max_nodes
        elif target < t.min_nodes:
            notes.append(f"raised to min {t.min_nodes}")
            target = t.min_nodes
        current = view.current(t.name)
        launch = max(0, target - current)
        if launch and t.name in view.blocked:
            notes.append(
                f"not launching {launch}: all offerings in backoff for another "
                f"{_duration(view.blocked[t.name] - view.now)}"
            )
            launch = 0
        out[t.name] = _Target(smoothed=smoothed, target=target, launch=launch, notes=notes)
    return out, estimates


# -- step 6: cost ceiling -----------------------------------------------------------------


def _price(t: NodeType) -> float:
    return t.price_per_hour or 0.0  # a type without a price cannot be held to the ceiling


def _cost_ceiling(
    view: _View,
    policy: Policy,
    demand: dict[str, _TypeDemand],
    targets: dict[str, _Target],
    unschedulable: dict[tuple[Shape, tuple[str, ...]], int],
) -> None:
    ceiling = policy.cost_ceiling_per_hour
    if ceiling is None:
        return
    projected = sum(_price(t) * (view.current(t.name) + targets[t.name].launch) for t in view.types)
    for t in reversed(view.types):  # least preferred (largest) type gives way first
        tt = targets[t.name]
        floor = max(0, t.min_nodes - view.current(t.name))  # min_nodes wins over the ceiling
        cut = 0
        while projected > ceiling + 1e-9 and tt.launch > floor and _price(t) > 0:
            tt.launch -= 1
            projected -= _price(t)
            cut += 1
        if not cut:
            continue
        tt.notes.append(f"{cut} fewer to stay within the cost ceiling of ${ceiling:g}/h")
        d = demand[t.name]
        cap = view.current(t.name) + tt.launch
        served, overflow, d.need = _serve(d, view.usable[t.name], cap, policy)
        d.queued = served
        for shape, count in overflow.items():
            key = (shape, (REASON_COST_CEILING,))
            unschedulable[key] = unschedulable.get(key, 0) + count


# -- step 7: scale down -------------------------------------------------------------------


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
    for node in view.draining:
        if node.static or node.id in view.busy:
            continue
        terminations.append(
            NodeAction(node.id, node.node_type, RemoveCause.IDLE, "drained and now idle")
        )

    total = sum(len(nodes) for nodes in view.live.values())
    budget = max(1, math.floor(policy.scale_down_budget * total))
    unneeded: dict[str, float] = {}
    for t in view.types:
        live = view.live[t.name]
        surplus = len(live) - targets[t.name].target
        if surplus <= 0:
            continue
        idle = [
            n for n in live if n.state is NodeState.READY and not n.static and n.id not in view.busy
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


def _launch(t: NodeType, view: _View, d: _TypeDemand, tt: _Target) -> Launch | None:
    if tt.launch <= 0:
        return None
    current = view.current(t.name)
    queued = sum(d.queued.values())
    running = sum(d.running.values())
    held = f" and {running} running" if running else ""
    parts = [f"{queued} queued{held} jobs need {d.need} x {t.name}"]
    if d.fallback_from:
        cause = AddCause.FALLBACK
        parts.append(
            "falling back from " + ", ".join(sorted(d.fallback_from)) + " (offerings in backoff)"
        )
    elif d.compensation:
        cause = AddCause.PREEMPTIBLE_COMPENSATION
        parts.append(f"{d.compensation} spot jobs compensated on demand (spot in backoff)")
    elif tt.smoothed > current:
        cause = AddCause.DEMAND
    else:
        cause = AddCause.MIN_NODES
    parts.extend(tt.notes)
    parts.append(f"{current} present or booting, launching {tt.launch}")
    return Launch(t.name, tt.launch, cause, "; ".join(parts))


def plan(snapshot: Snapshot, policy: Policy, state: PlannerState, now: float) -> Plan:
    """Decide what to launch, drain and terminate. Pure: same arguments, same plan."""
    unschedulable: dict[tuple[Shape, tuple[str, ...]], int] = {}
    view = _observe(snapshot, policy, now)
    demand = _assign(snapshot, view, policy, unschedulable)
    _pack(view, policy, demand, unschedulable)
    targets, estimates = _smooth_and_limit(view, policy, state, demand)
    _cost_ceiling(view, policy, demand, targets, unschedulable)
    for t in view.types:  # what the cluster heads to: never above what it can reach
        tt = targets[t.name]
        tt.target = min(tt.target, view.current(t.name) + tt.launch)
    drains, terminations, unneeded = _scale_down(view, policy, state, targets)
    launches = [
        launch
        for t in view.types
        if (launch := _launch(t, view, demand[t.name], targets[t.name])) is not None
    ]
    return Plan(
        launches=tuple(launches),
        drains=tuple(drains),
        terminations=tuple(terminations),
        targets=MappingProxyType({t.name: targets[t.name].target for t in view.types}),
        unschedulable=tuple(
            Unschedulable(shape, count, reasons)
            for (shape, reasons), count in sorted(
                unschedulable.items(), key=lambda it: (_job_order(it[0][0]), it[0][1])
            )
        ),
        state=PlannerState(
            estimates=MappingProxyType(estimates), unneeded_since=MappingProxyType(unneeded)
        ),
        cost_per_hour=sum(_price(t) * targets[t.name].target for t in view.types),
    )
