"""Property tests: the plan's invariants hold over thousands of random small clusters."""

from __future__ import annotations

from dataclasses import replace

from builders import NOW, GiB, job, node, node_type
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.scaler.model import (
    Demand,
    NodeState,
    PlannerState,
    Policy,
    QueuedJobs,
    RemoveCause,
    RunningJob,
    Snapshot,
)
from shoal.scaler.planner import plan, usable_shape

PALETTE = (
    node_type("small", 2, 5, 12, price=0.1),
    node_type("medium", 4, 9, 20, price=0.2),
    node_type("large", 8, 17, 36, price=0.45),
    node_type("medium:0.08", 4, 9, 20, price=0.08, spot=True, instance_types=["medium"]),
    node_type("large:0.2", 8, 17, 36, price=0.2, spot=True, instance_types=["large"]),
)
JOBS = st.builds(
    job,
    cores=st.sampled_from([0.5, 1, 2, 4, 6, 10]),
    mem_gib=st.sampled_from([0.5, 1, 4, 7, 12, 40]),
    disk_gib=st.sampled_from([1, 10, 30]),
    wall=st.sampled_from([60, 600, 3000, 7200]),
    preemptible=st.booleans(),
)
SETTINGS = settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@st.composite
def scenarios(draw, beta=None):
    picked = draw(st.lists(st.sampled_from(PALETTE), min_size=1, max_size=4, unique=True))
    types = []
    for t in picked:
        lo = draw(st.integers(0, 2))
        types.append(replace(t, min_nodes=lo, max_nodes=draw(st.integers(lo, 5))))
    nodes = []
    for i in range(draw(st.integers(0, 8))):
        t = draw(st.sampled_from(types))
        n = node(
            f"n{i}",
            t,
            draw(st.sampled_from(list(NodeState))),
            age=draw(st.sampled_from([0, 300, 1000, 3000, 5000])),
            static=draw(st.booleans()) and draw(st.booleans()),
        )
        if n.state is not NodeState.BOOTING or draw(st.booleans()):  # seen joined
            missing = draw(st.sampled_from([None, None, 0, 300, 600, 1000]))
            n = replace(
                n,
                joined_at=n.launched_at,
                missing_since=None if missing is None else NOW - missing,
            )
        nodes.append(n)
    busy = draw(st.lists(st.sampled_from(nodes), unique=True)) if nodes else []
    running = tuple(
        RunningJob(draw(JOBS), n.id, draw(st.sampled_from([0, 100, 5000]))) for n in busy
    )
    queued = tuple(
        QueuedJobs(draw(JOBS), draw(st.integers(0, 12))) for _ in range(draw(st.integers(0, 3)))
    )
    blocked = draw(st.lists(st.sampled_from(types), unique=True))
    unavailable = {o: NOW + 60 for t in blocked for o in t.offerings()}
    policy = Policy(
        node_types=tuple(types),
        beta_inertia=draw(st.sampled_from([0.0, 0.1, 0.5, 0.8])) if beta is None else beta,
        preemptible_compensation=draw(st.sampled_from([0.0, 0.5, 1.0])),
        scale_down_budget=draw(st.sampled_from([0.1, 0.5, 1.0])),
        cost_ceiling_per_hour=draw(st.one_of(st.none(), st.sampled_from([0.0, 0.3, 1.0, 2.5]))),
        compensate_other_types=draw(st.booleans()),
        # None: Toil's reservation per node size (the default); else flat per node
        node_memory_overhead=draw(st.sampled_from([None, 1 * GiB])),
        node_disk_overhead=draw(st.sampled_from([None, 4 * GiB])),
        packing=draw(st.sampled_from(["count", "cost", "auto"])),
        # 0: the heuristic; 10 s: the solver always finishes on inputs this small, so
        # the plan does not depend on the machine's speed (the determinism checks)
        solver_time_limit=draw(st.sampled_from([0.0, 10.0])),
    )
    state = PlannerState(
        estimates={t.name: draw(st.sampled_from([0.0, 1.0, 3.4])) for t in types},
        unneeded_since={
            n.id: NOW - draw(st.sampled_from([0, 300, 3600])) for n in nodes if draw(st.booleans())
        },
    )
    snapshot = Snapshot(Demand(queued, running), tuple(nodes), unavailable)
    return snapshot, policy, state


def removable(n, snapshot, policy):
    """Whether the plan may remove ``n`` at once (a join timeout or unhealthy): neither
    static nor running a job, and never seen joined past the join timeout or missing past
    the unhealthy timeout."""
    if n.static or n.id in {j.node_id for j in snapshot.demand.running}:
        return False
    never_joined = n.state is NodeState.BOOTING and n.joined_at is None
    return (never_joined and NOW - n.launched_at > policy.join_timeout) or (
        n.missing_since is not None and NOW - n.missing_since >= policy.unhealthy_timeout
    )


def live_counts(snapshot, policy, p):
    """Nodes per type the plan counts as capacity: not draining, not removable at once,
    unless the plan holds its removal back (``Plan.withheld``: too many missing, or beyond the
    budget), which keeps it as capacity."""
    held = {a.node_id for a in p.withheld}
    counts = {t.name: 0 for t in policy.node_types}
    for n in snapshot.nodes:
        timed_out = removable(n, snapshot, policy) and n.id not in held
        if n.node_type in counts and n.state is not NodeState.DRAINING and not timed_out:
            counts[n.node_type] += 1
    return counts


def blocked(snapshot, t):
    return all(snapshot.unavailable.get(o, 0) > NOW for o in t.offerings())


@SETTINGS
@given(scenarios())
def test_never_removes_busy_booting_static_or_foreign_nodes(scenario):
    snapshot, policy, state = scenario
    p = plan(snapshot, policy, state, NOW)
    by_id = {n.id: n for n in snapshot.nodes}
    busy = {j.node_id for j in snapshot.demand.running}
    removed = [*p.drains, *p.terminations]
    assert len({a.node_id for a in removed}) == len(removed)
    for action in removed:
        n = by_id[action.node_id]
        assert not n.static and n.node_type == action.node_type
        assert n.id not in busy  # whatever its state or timers
        if action.cause in (RemoveCause.JOIN_TIMEOUT, RemoveCause.UNHEALTHY):
            assert n.state is not NodeState.DRAINING and removable(n, snapshot, policy)
        if action.cause is RemoveCause.JOIN_TIMEOUT:
            assert n.state is NodeState.BOOTING and n.joined_at is None
        if n.state is NodeState.BOOTING:
            assert action.cause in (RemoveCause.JOIN_TIMEOUT, RemoveCause.UNHEALTHY)
    for d in p.drains:
        assert by_id[d.node_id].state is NodeState.READY
    for t in p.terminations:
        assert by_id[t.node_id].state is not NodeState.READY or t.cause is RemoveCause.UNHEALTHY
    # Only draining autoscaled nodes of a configured type are taken back, each once, and
    # never also terminated; and only while their type launches nothing instead.
    taken = [u.node_id for u in p.undrains]
    assert len(set(taken)) == len(taken)
    assert not set(taken) & {a.node_id for a in removed}
    for u in p.undrains:
        n = by_id[u.node_id]
        assert n.state is NodeState.DRAINING and not n.static and n.node_type == u.node_type
        assert u.message and not isinstance(u.cause, RemoveCause)
        left = [m for m in snapshot.nodes if m.node_type == n.node_type and m.id not in taken]
        assert not any(launch.node_type == n.node_type for launch in p.launches) or not any(
            m.state is NodeState.DRAINING and not m.static for m in left
        )
    # Unhealthy nodes are terminated or held back, never both, and none is held unless
    # the missing nodes are too many (in the cluster or its type) or the budget is spent.
    held = {a.node_id: a for a in p.withheld}
    assert not set(held) & {a.node_id for a in removed}
    unhealthy = [t for t in p.terminations if t.cause is RemoveCause.UNHEALTHY]
    for n in snapshot.nodes:
        joined_missing = n.missing_since is not None and n.state is not NodeState.DRAINING
        if joined_missing and removable(n, snapshot, policy) and n.node_type in p.targets:
            assert n.id in held or any(t.node_id == n.id for t in unhealthy)
    if held and unhealthy:  # some were replaced: the others only for the budget or their type
        assert all(
            "scale_down_budget" in a.message or a.message.startswith("of ") for a in held.values()
        )
    assert plan(snapshot, policy, state, NOW) == p  # deterministic


@SETTINGS
@given(scenarios())
def test_limits_and_cost_ceiling(scenario):
    snapshot, policy, state = scenario
    p = plan(snapshot, policy, state, NOW)
    live = live_counts(snapshot, policy, p)
    launched = {t.name: 0 for t in policy.node_types}
    for launch in p.launches:
        assert launch.count > 0 and launch.message
        launched[launch.node_type] += launch.count
    for undrain in p.undrains:  # a node taken back counts as one more, as a launch does
        launched[undrain.node_type] += 1
    min_cost = 0.0
    for t in policy.node_types:
        after = live[t.name] + launched[t.name]
        draining = [
            n for n in snapshot.nodes if n.node_type == t.name and n.state is NodeState.DRAINING
        ]
        # draining nodes shoal cannot take back (someone else's drain) count toward the max,
        # which wins over the min: else a node the scheduler drains at once is replaced forever
        cap = t.max_nodes - sum(1 for n in draining if n.static)
        if launched[t.name]:
            assert after <= t.max_nodes  # never launches beyond a max
        if any(launch.node_type == t.name for launch in p.launches):
            assert not blocked(snapshot, t)  # never launches into backoff
            assert (
                live[t.name]
                + len(draining)
                + launched[t.name]
                - len([u for u in p.undrains if u.node_type == t.name])
                <= t.max_nodes
            )  # every draining node counts toward the max
        if not blocked(snapshot, t):
            assert after >= min(t.min_nodes, cap)  # never undercuts a min
        assert min(t.min_nodes, cap) <= p.targets[t.name] or blocked(snapshot, t)
        drained = sum(1 for d in p.drains if d.node_type == t.name)
        assert live[t.name] - drained >= min(t.min_nodes, live[t.name])  # drains keep the min
        min_cost += max(0, t.min_nodes - live[t.name]) * t.price_per_hour
    if policy.cost_ceiling_per_hour is not None and p.launches:
        cost_now = sum(live[t.name] * t.price_per_hour for t in policy.node_types)
        cost_after = cost_now + sum(launched[t.name] * t.price_per_hour for t in policy.node_types)
        assert cost_after <= max(policy.cost_ceiling_per_hour, cost_now + min_cost) + 1e-9
        assert p.cost_per_hour <= max(policy.cost_ceiling_per_hour, cost_now + min_cost) + 1e-9


@SETTINGS
@given(scenarios(beta=0.0))
def test_every_queued_job_is_placed_or_reported_and_booting_prevents_relaunch(scenario):
    snapshot, policy, state = scenario
    p = plan(snapshot, policy, state, NOW)
    queued: dict = {}
    for q in snapshot.demand.queued:
        queued[q.shape] = queued.get(q.shape, 0) + q.count
    reported: dict = {}
    for u in p.unschedulable:
        assert u.count > 0 and u.reasons
        reported[u.shape] = reported.get(u.shape, 0) + u.count
    live = live_counts(snapshot, policy, p)
    for shape, count in queued.items():
        fitting = [t for t in policy.node_types if not shape.fits_in(usable_shape(t, policy))]
        assert reported.get(shape, 0) <= count
        if not fitting and count:
            assert reported[shape] == count  # fits nowhere: all reported
        elif reported.get(shape, 0) < count:  # the rest has somewhere to go
            assert any(p.targets[t.name] > 0 or live[t.name] > 0 for t in fitting)

    # Launched nodes, present as booting, are capacity: the same pass again launches nothing.
    booting = tuple(
        replace(
            node(
                f"new-{launch.node_type}-{i}",
                next(t for t in policy.node_types if t.name == launch.node_type),
                NodeState.BOOTING,
                age=0,
            ),
        )
        for launch in p.launches
        for i in range(launch.count)
    )
    again = plan(replace(snapshot, nodes=snapshot.nodes + booting), policy, state, NOW)
    # ... except to replace a node it removes only now: the booting nodes make the cluster
    # larger, and with it the scale-down budget that held an unhealthy replacement back
    newly_out: dict[str, int] = {}
    first_out = {a.node_id for a in p.terminations}
    for a in again.terminations:
        if a.node_id not in first_out:
            newly_out[a.node_type] = newly_out.get(a.node_type, 0) + 1
    for launch in again.launches:
        assert launch.count <= newly_out.get(launch.node_type, 0), launch
