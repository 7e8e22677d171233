"""Table tests for scaler.plan: one rule per case, scenarios built with tests/scaler/builders."""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import (
    NOW,
    GiB,
    backed_off,
    job,
    launched,
    node,
    node_type,
    policy,
    queued,
    running,
    snapshot,
    unneeded,
    unsched,
)
from shoal.scaler.model import AddCause, NodeState, PlannerState, Policy, RemoveCause
from shoal.scaler.overhead import disk_overhead, memory_overhead
from shoal.scaler.planner import (
    HELD_ROOM_WAIT,
    cost_aware,
    plan,
    round_half_away,
    usable_shape,
)
from shoal.scaler.shape import Shape

A = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2)
B = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.4)
SPOT = node_type("a:0.1", cores=4, mem_gib=9, disk_gib=20, price=0.1, spot=True)
EMPTY = PlannerState()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, 1), (1.5, 2), (2.5, 3), (2.4, 2), (-0.5, -1), (-2.5, -3), (0.0, 0), (7.0, 7)],
    ids=lambda v: str(v),
)
def test_round_half_away_from_zero_as_toil(value, expected):
    assert round_half_away(value) == expected


def test_overhead_is_taken_from_memory_and_disk_not_cores():
    usable = usable_shape(A, policy(A))
    assert (usable.memory, usable.disk, usable.cores) == (8 * GiB, 16 * GiB, 4)


@pytest.mark.parametrize(
    ("snap", "launches", "targets"),
    [
        pytest.param(snapshot(queue=[queued(job(), 32)]), {"a": 8}, {"a": 8, "b": 0}, id="demand"),
        pytest.param(
            snapshot(
                nodes=[node(f"n{i}", A, NodeState.BOOTING, age=30) for i in range(8)],
                queue=[queued(job(), 32)],
            ),
            {},
            {"a": 8, "b": 0},
            id="booting-nodes-are-capacity",
        ),
        pytest.param(
            snapshot(
                nodes=[node("n1", A)],
                queue=[queued(job(), 3)],
                runs=[running(job(), "n1")],
            ),
            {},
            {"a": 1, "b": 0},
            id="running-job-shares-its-node",
        ),
        pytest.param(
            snapshot(
                nodes=[node("n1", A, NodeState.DRAINING)],
                queue=[queued(job(), 3)],
                runs=[running(job(), "n1")],
            ),
            {},  # the draining node is taken back instead (Plan.undrains)
            {"a": 1, "b": 0},
            id="draining-node-is-not-capacity",
        ),
        pytest.param(
            snapshot(queue=[queued(job(cores=6, mem_gib=12), 2)]),
            {"b": 2},
            {"a": 0, "b": 2},
            id="job-goes-to-smallest-type-that-fits",
        ),
        pytest.param(
            snapshot(queue=[queued(job(mem_gib=8.5), 1)]),
            {"b": 1},
            {"a": 0, "b": 1},
            id="overhead-pushes-job-to-bigger-type",
        ),
    ],
)
def test_scale_up(snap, launches, targets):
    p = plan(snap, policy(A, B), EMPTY, NOW)
    assert launched(p) == launches
    assert dict(p.targets) == targets
    assert p.unschedulable == ()


def test_launch_message_says_why():
    p = plan(snapshot(queue=[queued(job(), 32)]), policy(A), EMPTY, NOW)
    (launch,) = p.launches
    assert launch.cause is AddCause.DEMAND
    assert "32 queued" in launch.message and "need 8 x a" in launch.message
    assert p.cost_per_hour == pytest.approx(8 * 0.2)


@pytest.mark.parametrize(
    ("beta", "previous", "need", "expected", "estimate"),
    [
        (0.5, 0.0, 8, 4, 4.0),
        (0.5, 4.0, 8, 6, 6.0),
        (0.1, 0.0, 5, 5, 4.5),  # 4.5 rounds half away from zero
        (0.5, 3.0, 0, 2, 1.5),  # the estimate decays: scale-down is smoothed too
        (0.0, 9.0, 8, 8, 8.0),
    ],
    ids=["ramp-up", "second-pass", "half-rounds-up", "decay", "no-inertia"],
)
def test_beta_inertia_smoothing(beta, previous, need, expected, estimate):
    state = PlannerState(estimates={"a": previous})
    p = plan(snapshot(queue=[queued(job(cores=4), need)]), policy(A, beta_inertia=beta), state, NOW)
    assert p.targets["a"] == expected
    assert p.state.estimates["a"] == pytest.approx(estimate)
    note = f"smoothed from {need} to {expected} by betaInertia {beta:g}"
    messages = " ".join(x.message for x in p.launches)
    if expected != need:
        assert note in messages
    else:
        assert "betaInertia" not in messages


def test_min_nodes_launches_with_cause_min_nodes():
    a = node_type("a", min_nodes=2)
    p = plan(snapshot(), policy(a), EMPTY, NOW)
    assert [(x.node_type, x.count, x.cause) for x in p.launches] == [("a", 2, AddCause.MIN_NODES)]
    assert "raised to min 2" in p.launches[0].message


def test_max_nodes_caps_and_reports_demand_it_prevents():
    a = node_type("a", max_nodes=3)
    p = plan(snapshot(queue=[queued(job(cores=4), 5)]), policy(a), EMPTY, NOW)
    assert launched(p) == {"a": 3}
    assert unsched(p) == {(job(cores=4), ("max-nodes",)): 2}


def test_job_fitting_no_type_is_reported_with_failing_dimensions():
    huge = job(cores=64, mem_gib=500)
    p = plan(snapshot(queue=[queued(huge, 3), queued(job(), 1)]), policy(A, B), EMPTY, NOW)
    assert unsched(p) == {(huge, ("memory", "cores")): 3}
    assert launched(p) == {"a": 1}


def test_backed_off_type_falls_back_to_next_shape():
    p = plan(
        snapshot(queue=[queued(job(), 8)], unavailable=backed_off(A)), policy(A, B), EMPTY, NOW
    )
    assert [(x.node_type, x.count, x.cause) for x in p.launches] == [("b", 1, AddCause.FALLBACK)]
    assert "falling back from a" in p.launches[0].message
    assert p.unschedulable == ()


def test_backed_off_type_keeps_using_its_existing_nodes():
    snap = snapshot(nodes=[node("n1", A)], queue=[queued(job(), 8)], unavailable=backed_off(A))
    p = plan(snap, policy(A, B), EMPTY, NOW)
    assert launched(p) == {"b": 1}
    assert p.targets["a"] == 1
    assert p.drains == ()


def test_expired_backoff_is_ignored():
    snap = snapshot(queue=[queued(job(), 4)], unavailable=backed_off(A, until=NOW - 1))
    assert launched(plan(snap, policy(A, B), EMPTY, NOW)) == {"a": 1}


def test_backoff_with_nowhere_to_fall_back_is_reported():
    p = plan(snapshot(queue=[queued(job(), 4)], unavailable=backed_off(A)), policy(A), EMPTY, NOW)
    assert p.launches == ()
    assert unsched(p) == {(job(), ("unavailable",)): 4}


@pytest.mark.parametrize(
    ("compensation", "on_demand", "reported"),
    [(0.0, 0, 8), (0.5, 1, 4), (1.0, 2, 0)],
    ids=["none", "half", "full"],
)
def test_preemptible_compensation(compensation, on_demand, reported):
    spot_job = job(cores=1, preemptible=True)
    p = plan(
        snapshot(queue=[queued(spot_job, 8)], unavailable=backed_off(SPOT)),
        policy(SPOT, A, preemptible_compensation=compensation),
        EMPTY,
        NOW,
    )
    assert launched(p) == ({"a": on_demand} if on_demand else {})
    if on_demand:
        assert p.launches[0].cause is AddCause.PREEMPTIBLE_COMPENSATION
    assert sum(u.count for u in p.unschedulable) == reported


def test_spot_jobs_prefer_spot_type():
    p = plan(snapshot(queue=[queued(job(preemptible=True), 4)]), policy(A, SPOT), EMPTY, NOW)
    assert launched(p) == {"a:0.1": 1}


@pytest.mark.parametrize(
    ("ceiling", "existing", "launch", "reported"),
    [(1.0, 0, 5, 12), (1.6, 0, 8, 0), (1.0, 4, 1, 12), (0.5, 4, 0, 16)],
    ids=["trims-launches", "fits", "existing-nodes-count", "already-over"],
)
def test_cost_ceiling(ceiling, existing, launch, reported):
    snap = snapshot(
        nodes=[node(f"n{i}", A) for i in range(existing)],
        queue=[queued(job(), 32 - 4 * existing)],
        runs=[running(job(cores=4), f"n{i}") for i in range(existing)],
    )
    p = plan(snap, policy(A, cost_ceiling_per_hour=ceiling), EMPTY, NOW)
    assert launched(p).get("a", 0) == launch
    assert sum(u.count for u in p.unschedulable if u.reasons == ("cost-ceiling",)) == reported
    assert p.cost_per_hour <= max(ceiling, existing * 0.2) + 1e-9
    if launch and reported:
        assert "cost ceiling" in p.launches[0].message


def test_min_nodes_wins_over_cost_ceiling():
    a = node_type("a", min_nodes=3, price=1.0)
    p = plan(snapshot(), policy(a, cost_ceiling_per_hour=1.0), EMPTY, NOW)
    assert launched(p) == {"a": 3}


# -- scale down ---------------------------------------------------------------------------


def test_idle_node_is_tracked_then_drained_after_unneeded_time():
    snap = snapshot(nodes=[node("n1", A, age=54 * 60)])
    first = plan(snap, policy(A), EMPTY, NOW)
    assert first.drains == ()
    assert dict(first.state.unneeded_since) == {"n1": NOW}
    later = plan(snap, policy(A), first.state, NOW + 600)
    (drain,) = later.drains
    assert (drain.node_id, drain.cause) == ("n1", RemoveCause.IDLE)
    assert drain.message.startswith("idle for 10m, 4m into its billing hour")
    assert later.terminations == ()
    assert "n1" not in later.state.unneeded_since


def test_needed_again_clears_unneeded_timer():
    snap = snapshot(nodes=[node("n1", A)], queue=[queued(job(), 1)])
    p = plan(snap, policy(A), unneeded("n1", since=NOW - 3600), NOW)
    assert p.drains == () and dict(p.state.unneeded_since) == {}


@pytest.mark.parametrize(
    "n1",
    [
        pytest.param(node("n1", A, NodeState.BOOTING, age=60), id="booting"),
        pytest.param(node("n1", A, static=True), id="static"),
    ],
)
def test_booting_and_static_nodes_are_never_scaled_down(n1):
    p = plan(snapshot(nodes=[n1]), policy(A), unneeded("n1", since=NOW - 3600), NOW)
    assert p.drains == () and p.terminations == ()


def test_busy_node_is_never_drained():
    snap = snapshot(nodes=[node("n1", A)], runs=[running(job(), "n1")])
    p = plan(snap, policy(A, beta_inertia=0.9), unneeded("n1", since=NOW - 3600), NOW)
    assert p.drains == () and p.terminations == ()
    assert "n1" not in p.state.unneeded_since


def test_scale_down_budget_and_billing_preference():
    # 20 idle nodes; budget 10% = 2 per pass; the two closest to the end of their hour go first
    nodes = [node(f"n{i:02d}", node_type("a"), age=3600 + 60 * i) for i in range(20)]
    state = unneeded(*(n.id for n in nodes), since=NOW - 3600)
    p = plan(snapshot(nodes=nodes), policy(node_type("a", max_nodes=20)), state, NOW)
    assert [d.node_id for d in p.drains] == ["n19", "n18"]
    assert "19m into its billing hour" in p.drains[0].message


def test_budget_is_at_least_one():
    nodes = [node("n1", A), node("n2", A)]
    p = plan(snapshot(nodes=nodes), policy(A), unneeded("n1", "n2", since=NOW - 3600), NOW)
    assert len(p.drains) == 1


def test_scale_down_stops_at_target():
    nodes = [node(f"n{i}", A) for i in range(3)]
    snap = snapshot(nodes=nodes, queue=[queued(job(cores=4), 2)])
    p = plan(snap, policy(A, scale_down_budget=1.0), unneeded("n0", "n1", "n2", since=0), NOW)
    assert len(p.drains) == 1


@pytest.mark.parametrize(
    ("busy", "terminated"),
    [(False, ["n1"]), (True, [])],
    ids=["idle-terminated", "busy-waits"],
)
def test_draining_node_terminated_once_idle(busy, terminated):
    snap = snapshot(
        nodes=[node("n1", A, NodeState.DRAINING)],
        runs=[running(job(), "n1")] if busy else [],
    )
    p = plan(snap, policy(A), EMPTY, NOW)
    assert [t.node_id for t in p.terminations] == terminated
    assert p.drains == ()


@pytest.mark.parametrize(
    ("busy", "queued_jobs", "undrained", "launches"),
    [
        (False, 2, ["n1"], {}),  # idle: taken back rather than terminated and replaced
        (True, 2, ["n1"], {}),  # busy: taken back too; its running jobs are not demand
        (False, 5, ["n1"], {"a": 1}),  # more than it holds: taken back and one launched
        (False, 0, [], {}),  # no demand: terminated once idle, as before
    ],
    ids=["idle", "busy", "and-launch", "not-needed"],
)
def test_draining_node_is_taken_back_when_demand_returns(busy, queued_jobs, undrained, launches):
    # Toil's testNoLaunchingIfDeltaAlreadyMet: un-ignore before adding.
    snap = snapshot(
        nodes=[node("n1", A, NodeState.DRAINING)],
        queue=[queued(job(), queued_jobs)] if queued_jobs else [],
        runs=[running(job(), "n1")] if busy else [],
    )
    p = plan(snap, policy(A), EMPTY, NOW)
    assert [u.node_id for u in p.undrains] == undrained
    assert launched(p) == launches
    assert all(
        u.cause is AddCause.DEMAND and "taking back draining n1" in u.message for u in p.undrains
    )
    terminated = [t.node_id for t in p.terminations]
    assert terminated == ([] if undrained or busy else ["n1"])


def test_idle_draining_nodes_are_taken_back_first():
    snap = snapshot(
        nodes=[node("n1", A, NodeState.DRAINING), node("n2", A, NodeState.DRAINING)],
        queue=[queued(job(), 4)],
        runs=[running(job(), "n1")],
    )
    p = plan(snap, policy(A), EMPTY, NOW)
    assert [u.node_id for u in p.undrains] == ["n2"]
    assert p.launches == () and p.terminations == ()  # n1 is busy: it drains on


def test_type_in_backoff_still_takes_back_its_draining_nodes():
    snap = snapshot(
        nodes=[node("n1", A, NodeState.DRAINING)],
        queue=[queued(job(), 4)],
        unavailable=backed_off(A),
    )
    p = plan(snap, policy(A, B), EMPTY, NOW)
    assert [u.node_id for u in p.undrains] == ["n1"]
    assert p.launches == ()


def test_static_draining_node_is_not_taken_back():
    snap = snapshot(
        nodes=[node("s1", A, NodeState.DRAINING, static=True)], queue=[queued(job(), 1)]
    )
    p = plan(snap, policy(A), EMPTY, NOW)
    assert p.undrains == () and launched(p) == {"a": 1}


def test_nodes_drained_by_others_count_toward_max():
    """Slurm drains each new node itself (a prolog error, "Kill task failed"): the drained
    node is static and draining, its job is requeued. Were it not counted, every pass would
    launch another up to max beside all the drained ones (a reviewer saw 7 for max 2)."""
    two = replace(A, max_nodes=2)
    drained = [node(f"s{i}", two, NodeState.DRAINING, static=True) for i in range(5)]
    p = plan(snapshot(nodes=drained, queue=[queued(job(cores=4), 2)]), policy(two), EMPTY, NOW)
    assert launched(p) == {} and p.undrains == () and p.terminations == ()
    assert unsched(p) == {(job(cores=4), ("max-nodes",)): 2}

    # max 4: one live node, one drained by others and one of shoal's own drains (taken back
    # first) leave room for one launch, not for the three the jobs need
    four = replace(A, max_nodes=4)
    nodes = [
        node("n1", four),
        node("s1", four, NodeState.DRAINING, static=True),
        node("d1", four, NodeState.DRAINING),
    ]
    p = plan(snapshot(nodes=nodes, queue=[queued(job(cores=4), 5)]), policy(four), EMPTY, NOW)
    assert [u.node_id for u in p.undrains] == ["d1"] and launched(p) == {"a": 1}
    assert "count toward max 4" in p.launches[0].message
    assert unsched(p) == {(job(cores=4), ("max-nodes",)): 2}
    assert p.targets["a"] == 3  # what it can reach: 1 live + 1 taken back + 1 launched


def test_cost_ceiling_trims_undrains_after_launches():
    snap = snapshot(
        nodes=[node("n1", A, NodeState.DRAINING), node("n2", A, NodeState.DRAINING)],
        queue=[queued(job(cores=4), 3)],
    )
    p = plan(snap, policy(A, cost_ceiling_per_hour=0.2), EMPTY, NOW)
    assert launched(p) == {} and len(p.undrains) == 1
    assert unsched(p) == {(job(cores=4), ("cost-ceiling",)): 2}


def test_join_timeout_terminates_booting_node_and_replaces_it():
    snap = snapshot(nodes=[node("n1", A, NodeState.BOOTING, age=901)], queue=[queued(job(), 1)])
    p = plan(snap, policy(A, join_timeout=900), EMPTY, NOW)
    (t,) = p.terminations
    assert (t.node_id, t.cause) == ("n1", RemoveCause.JOIN_TIMEOUT)
    assert "15m" in t.message
    assert launched(p) == {"a": 1}


def test_join_timeout_only_for_nodes_never_seen_joined():
    # a node that joined and went missing is not booting again: no join timeout
    joined = replace(node("n1", A, age=5000), joined_at=NOW - 4900, missing_since=NOW - 60)
    snap = snapshot(nodes=[joined], queue=[queued(job(), 1)])
    p = plan(snap, policy(A, join_timeout=900), EMPTY, NOW)
    assert p.terminations == () and launched(p) == {}  # still capacity
    booting = replace(node("n1", A, NodeState.BOOTING, age=5000), joined_at=NOW - 4900)
    p = plan(snapshot(nodes=[booting]), policy(A, join_timeout=900), EMPTY, NOW)
    assert p.terminations == ()


def test_a_busy_node_is_never_a_join_timeout_and_counts_as_capacity():
    snap = snapshot(
        nodes=[node("n1", A, NodeState.BOOTING, age=5000)],
        queue=[queued(job(), 1)],
        runs=[running(job(), "n1")],
    )
    p = plan(snap, policy(A, join_timeout=900), EMPTY, NOW)
    assert p.terminations == ()
    assert launched(p) == {}  # its room holds the queued job


def test_a_node_missing_past_the_unhealthy_timeout_is_replaced_if_idle():
    missing = replace(node("n1", A), joined_at=NOW - 1100, missing_since=NOW - 600)
    snap = snapshot(nodes=[missing], queue=[queued(job(), 1)])
    p = plan(snap, policy(A, unhealthy_timeout=600), EMPTY, NOW)
    (t,) = p.terminations
    assert (t.node_id, t.cause) == ("n1", RemoveCause.UNHEALTHY)
    assert "10m" in t.message
    assert launched(p) == {"a": 1}  # its replacement
    # before the timeout it is capacity (as in Cluster Autoscaler): nothing happens
    early = replace(missing, missing_since=NOW - 599)
    p = plan(snapshot(nodes=[early], queue=[queued(job(), 1)]), policy(A), EMPTY, NOW)
    assert p.is_noop


def test_a_missing_node_is_kept_while_busy_and_static_ones_always():
    missing = replace(node("n1", A), joined_at=NOW - 1e5, missing_since=NOW - 5e4)
    snap = snapshot(nodes=[missing], runs=[running(job(), "n1")])
    p = plan(snap, policy(A), EMPTY, NOW)
    assert p.terminations == () and p.drains == () and launched(p) == {}
    static = replace(missing, static=True)
    p = plan(snapshot(nodes=[static]), policy(A), EMPTY, NOW)
    assert p.terminations == ()


def test_nodes_above_max_are_drained_at_once_idle_ones_only():
    a = node_type("a", max_nodes=1)
    nodes = [node("n1", a), node("n2", a), node("n3", a)]
    snap = snapshot(nodes=nodes, runs=[running(job(), "n1")])
    p = plan(snap, policy(a), EMPTY, NOW)
    assert sorted(d.node_id for d in p.drains) == ["n2", "n3"]
    assert {d.cause for d in p.drains} == {RemoveCause.ABOVE_MAX}


def test_nodes_of_unknown_type_are_never_touched():
    stray = node("x1", node_type("other"))
    p = plan(snapshot(nodes=[stray]), policy(A), unneeded("x1", since=0), NOW)
    assert p.is_noop


def test_deterministic():
    snap = snapshot(
        nodes=[node(f"n{i}", A) for i in range(5)] + [node("b1", B, NodeState.BOOTING)],
        queue=[queued(job(), 9), queued(job(cores=6, mem_gib=12), 2)],
        runs=[running(job(), "n1")],
    )
    state = unneeded("n2", "n3", since=NOW - 700)
    assert plan(snap, policy(A, B), state, NOW) == plan(snap, policy(A, B), state, NOW)


# -- cost-aware packing (Policy.packing == "cost") ------------------------------------------

CHEAP_B = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.3)  # $0.0375 a core, A $0.05


def test_cost_packing_launches_the_cheaper_mix():
    snap = snapshot(queue=[queued(job(), 32)])
    assert launched(plan(snap, policy(A, CHEAP_B), EMPTY, NOW)) == {"a": 8}
    p = plan(snap, policy(A, CHEAP_B, packing="cost"), EMPTY, NOW)
    assert launched(p) == {"b": 4}
    assert p.cost_per_hour == pytest.approx(1.2)


@pytest.mark.parametrize(("premium", "expected"), [(0.1, {"b": 4}), (0.2, {"a": 8})])
def test_node_size_premium_weighs_large_nodes(premium, expected):
    # B is cheaper per core ($0.0375 against A's $0.05); with a premium per core on its
    # price B costs 0.3 x (1 + 8p) for 8 cores, A 0.2 x (1 + 4p) for 4: above p = 0.125
    # the 4-core type is the cheaper per core. The plan's cost is still the real prices'.
    snap = snapshot(queue=[queued(job(), 32)])
    p = plan(snap, policy(A, CHEAP_B, packing="cost", node_size_premium=premium), EMPTY, NOW)
    assert launched(p) == expected
    assert p.cost_per_hour == pytest.approx(1.2 if "b" in expected else 1.6)


def test_cost_packing_fills_live_nodes_first():
    # Two idle A nodes hold the 8 jobs: nothing is launched, though B is cheaper per job.
    snap = snapshot(nodes=[node("n1", A), node("n2", A)], queue=[queued(job(), 8)])
    p = plan(snap, policy(A, CHEAP_B, packing="cost"), EMPTY, NOW)
    assert launched(p) == {}
    assert p.targets == {"a": 2, "b": 0}


def test_cost_packing_does_not_relaunch_for_booting_nodes():
    pol = policy(A, CHEAP_B, packing="cost")
    snap = snapshot(queue=[queued(job(), 32)])
    first = plan(snap, pol, EMPTY, NOW)
    booting = [node(f"n{i}", CHEAP_B, NodeState.BOOTING, age=10) for i in range(4)]
    second = plan(snapshot(nodes=booting, queue=[queued(job(), 32)]), pol, first.state, NOW)
    assert launched(first) == {"b": 4}
    assert launched(second) == {}


def test_cost_packing_mixes_job_shapes_on_one_type():
    # 40 six-core jobs and 120 one-core 12-GiB jobs on 48-core, 192-GiB nodes: largest
    # first fills nodes' memory and strands their cores; 5 + 15 a node fills both: 8.
    big = node_type("big", cores=48, mem_gib=193, disk_gib=504, price=2.3)
    snap = snapshot(queue=[queued(job(6, 2), 40), queued(job(1, 12), 120)])
    assert launched(plan(snap, policy(big), EMPTY, NOW))["big"] > 8
    assert launched(plan(snap, policy(big, packing="cost"), EMPTY, NOW)) == {"big": 8}


def test_cost_packing_needs_a_price_on_every_type():
    unpriced_b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=None)
    snap = snapshot(queue=[queued(job(), 32)])
    assert launched(plan(snap, policy(A, unpriced_b, packing="cost"), EMPTY, NOW)) == {"a": 8}


def test_cost_packing_skips_types_in_backoff():
    snap = snapshot(queue=[queued(job(), 32)], unavailable=backed_off(CHEAP_B))
    assert launched(plan(snap, policy(A, CHEAP_B, packing="cost"), EMPTY, NOW)) == {"a": 8}


# An 8-core node that a 2-hour job keeps up anyway, and a cheaper 4-core type that the
# cheapest mix would buy for a 4-core job: $0.2 an hour against $0.5 for the big node.
HELD = node_type("held", cores=8, mem_gib=17, disk_gib=36, price=0.5)


@pytest.mark.parametrize(
    ("short_left", "queued_wall", "launches"),
    [
        (300.0, 1800.0, {}),  # the node's other half frees in 5 min: the queued job goes there
        (1200.0, 1800.0, {"a": 1}),  # in 20 min, past HELD_ROOM_WAIT: a new node
        (300.0, 3 * 3600.0, {"a": 1}),  # it would outlive the 2-hour job: no room kept for it
    ],
    ids=["room-soon", "room-too-late", "job-outlives-the-node"],
)
def test_cost_packing_puts_queued_jobs_on_nodes_kept_anyway(short_left, queued_wall, launches):
    # The big node's room behind its shorter job costs nothing more while the 2-hour job
    # keeps it up, so no node is bought for a queued job that fits there soon and ends by
    # then. (Before, the cheapest mix alone put it on a new "a" node: room on live nodes
    # was used only when a whole node stood idle.)
    assert HELD_ROOM_WAIT == 600.0
    snap = snapshot(
        nodes=[node("n1", HELD)],
        queue=[queued(job(cores=4, wall=queued_wall), 1)],
        runs=[
            running(job(cores=4, wall=7200 + 60), "n1"),
            running(job(cores=4, wall=short_left + 60), "n1"),
        ],
    )
    p = plan(snap, policy(A, HELD, packing="cost"), EMPTY, NOW)
    assert launched(p) == launches
    assert p.targets["held"] == 1


# An expensive 8-core type with running jobs, and B, an 8-core type 12 times cheaper: room on
# a "big" node is worth taking only if that node stays up anyway and no "big" node is bought.
BIG = node_type("big", cores=8, mem_gib=33, disk_gib=36, price=5.0)
BIG_AT_MAX = replace(BIG, max_nodes=2)


@pytest.mark.parametrize("big", [BIG, BIG_AT_MAX], ids=["below-max", "at-max"])
def test_held_room_is_not_taken_when_packing_the_type_then_needs_another_node(big):
    # n2's 4-core job frees room in 6 min, beside a 4-hour job that keeps n2 up: the 3-hour
    # job fits there in the pinned count. But the type's need (_pack: running and queued jobs
    # together, unpinned, to the target time) puts the 6-min job on a third node, so taking
    # the room launched a $5/h node (or, at the max, left the job "max-nodes") where the cost
    # packer buys a $0.4/h one. (found by review)
    snap = snapshot(
        nodes=[node("n1", big), node("n2", big)],
        queue=[queued(job(cores=4, wall=3 * 3600), 1)],
        runs=[
            running(job(cores=8, wall=4 * 3600 + 60), "n1"),
            running(job(cores=4, wall=4 * 3600 + 60), "n2"),
            running(job(cores=4, wall=360 + 60), "n2"),
        ],
    )
    p = plan(snap, policy(big, B, packing="cost"), EMPTY, NOW)
    assert launched(p) == {"b": 1}
    assert p.targets["big"] == 2 and not p.unschedulable


def test_held_room_must_be_on_a_node_kept_up_until_the_queued_job_ends():
    # n1 is kept 4 h by its job, but the room is on n2, whose only job ends in 6 min: a
    # 3-hour job there keeps a $5/h node up 3 h. The type's longest job (n1's) was the rule.
    # (found by review)
    snap = snapshot(
        nodes=[node("n1", BIG), node("n2", BIG)],
        queue=[queued(job(cores=4, wall=3 * 3600), 1)],
        runs=[
            running(job(cores=8, wall=4 * 3600 + 60), "n1"),
            running(job(cores=4, wall=360 + 60), "n2"),
        ],
    )
    p = plan(snap, policy(BIG, B, packing="cost"), EMPTY, NOW)
    assert launched(p) == {"b": 1}
    assert p.targets["big"] == 2


@pytest.mark.parametrize("minutes", [0, 30, 90])
def test_held_room_behind_a_job_past_its_estimate_is_not_counted_on(minutes):
    # The 10-min job has run 1 h 40 min (and more, pass after pass): its remaining time is
    # floored at RUNNING_JOB_MIN_REMAINING each pass, so its room always looked a minute away
    # and nothing was ever launched for the queued job. (found by review)
    t = NOW + 60 * minutes
    snap = snapshot(
        nodes=[node("n1", HELD, now=t)],
        queue=[queued(job(cores=4, wall=1800), 1)],
        runs=[
            running(job(cores=4, wall=3 * 3600), "n1", elapsed=600 + 60 * minutes),
            running(job(cores=4, wall=600), "n1", elapsed=6000 + 60 * minutes),
        ],
    )
    assert launched(plan(snap, policy(A, HELD, packing="cost"), EMPTY, t)) == {"a": 1}


# -- Toil parity ----------------------------------------------------------------------------


def test_inertia_smooths_the_raw_estimate_then_the_max_clamps_it():
    # 100 nodes' worth of demand, max 60: Toil reaches 60 at once (0.9 x 100 = 90, capped),
    # and remembers 90, not 54.
    a = node_type("a", max_nodes=60)
    snap = snapshot(queue=[queued(job(cores=4), 100)])
    first = plan(snap, policy(a, beta_inertia=0.1), EMPTY, NOW)
    assert first.targets["a"] == 60 and launched(first) == {"a": 60}
    assert first.state.estimates["a"] == pytest.approx(90.0)
    assert unsched(first) == {(job(cores=4), ("max-nodes",)): 40}
    # demand gone: the estimate decays from 90 (0.1 x 90 = 9), not from 54
    nodes = [node(f"n{i}", a) for i in range(60)]
    later = plan(snapshot(nodes=nodes), policy(a, beta_inertia=0.1), first.state, NOW)
    assert later.state.estimates["a"] == pytest.approx(9.0)
    assert later.targets["a"] == 9


def test_compensation_covers_only_missing_nodes_within_the_spot_max():
    # 40 spot jobs want 10 spot nodes, but the spot type's max is 5: Toil's deficit is 5.
    spot = node_type("a:0.1", price=0.1, spot=True, max_nodes=5, instance_types=["a"])
    snap = snapshot(queue=[queued(job(preemptible=True), 40)], unavailable=backed_off(spot))
    p = plan(snap, policy(spot, A, preemptible_compensation=1.0), EMPTY, NOW)
    assert launched(p) == {"a": 5}
    assert p.launches[0].cause is AddCause.PREEMPTIBLE_COMPENSATION
    assert "5 more for 5 missing spot nodes of a:0.1" in p.launches[0].message
    # 20 jobs beyond the spot max wait; the 5 on-demand nodes hold the 20 of the missing 5
    assert {u.reasons: u.count for u in p.unschedulable} == {("max-nodes",): 20}


def test_compensation_rounds_missing_nodes_half_away_from_zero():
    # Toil's testPreemptibleDeficitResponse: 5 missing x 0.5 = 2.5 -> 3 nodes.
    spot = node_type("a:0.1", price=0.1, spot=True, max_nodes=10, instance_types=["a"])
    live = [node(f"s{i}", spot) for i in range(5)]
    snap = snapshot(
        nodes=live, queue=[queued(job(preemptible=True), 200)], unavailable=backed_off(spot)
    )
    p = plan(snap, policy(spot, A, preemptible_compensation=0.5), EMPTY, NOW)
    assert launched(p) == {"a": 3}


@pytest.mark.parametrize(("other_types", "launches"), [(False, {}), (True, {"b": 1})])
def test_compensation_on_another_type_only_when_asked(other_types, launches):
    spot = node_type("a:0.1", price=0.1, spot=True, instance_types=["a"])
    snap = snapshot(queue=[queued(job(preemptible=True), 8)], unavailable=backed_off(spot))
    pol = policy(spot, B, preemptible_compensation=0.5, compensate_other_types=other_types)
    p = plan(snap, pol, EMPTY, NOW)
    assert launched(p) == launches
    assert sum(u.count for u in p.unschedulable) == (0 if other_types else 8)


def test_compensation_nodes_are_not_room_for_queued_jobs_once_they_boot():
    # Cost packing; the spot type (min 2) is backed off, so 1 on-demand "medium" compensates
    # (2 missing x 0.5). A queued job the cost mix gives to "medium" goes to the idle
    # booting "large" instead, as "medium" has no node yet. Once the compensation node
    # boots it must not take the job (it is there for the spot deficit): the next pass
    # launches nothing. (Found by hypothesis: before, it launched a second "medium".)
    spot = node_type("medium:0.08", price=0.08, spot=True, min_nodes=2, max_nodes=2,
                     instance_types=["medium"])  # fmt: skip
    medium = node_type("medium", price=0.2, max_nodes=2)
    large = node_type("large", cores=8, mem_gib=17, disk_gib=36, price=0.45, max_nodes=1)
    pol = policy(spot, medium, large, preemptible_compensation=0.5, packing="cost")
    small_job = queued(job(cores=0.5, mem_gib=0.5, wall=60), 1)
    nodes = [node("l0", large, NodeState.BOOTING, age=0)]
    first = plan(snapshot(nodes, [small_job], unavailable=backed_off(spot)), pol, EMPTY, NOW)
    assert launched(first) == {"medium": 1}
    assert first.launches[0].cause is AddCause.PREEMPTIBLE_COMPENSATION
    assert first.targets["large"] == 1  # the job's node
    nodes.append(node("m0", medium, NodeState.BOOTING, age=0))
    again = plan(snapshot(nodes, [small_job], unavailable=backed_off(spot)), pol, EMPTY, NOW)
    assert again.launches == ()
    assert again.targets == first.targets


def test_default_overhead_is_toils_reservation_per_node_size():
    # Toil's test_overhead_accounting_observed: a 62.5 GiB job never starts on a 64 GiB
    # node (Toil keeps about 5.2 GiB of it), so it goes to the 128 GiB type.
    r5_2 = node_type("r5.2xlarge", cores=8, mem_gib=64, disk_gib=50, price=0.504)
    r5_4 = node_type("r5.4xlarge", cores=16, mem_gib=128, disk_gib=50, price=1.008)
    snap = snapshot(queue=[queued(job(mem_gib=62.5), 1)])
    toil = Policy(node_types=(r5_2, r5_4), packing="count")
    assert launched(plan(snap, toil, EMPTY, NOW)) == {"r5.4xlarge": 1}
    flat = replace(toil, node_memory_overhead=GiB)  # the old flat 1 GiB: it would not fit
    assert launched(plan(snap, flat, EMPTY, NOW)) == {"r5.2xlarge": 1}
    usable = usable_shape(r5_2, toil)
    assert usable.memory == 64 * GiB - memory_overhead(64 * GiB)
    assert usable.disk == 50 * GiB - disk_overhead(50 * GiB)
    assert usable.cores == 8


@pytest.mark.parametrize(
    ("prices", "expected"),
    [((0.2, 0.3), True), ((0.2, None), False)],
    ids=["all-priced", "one-unpriced"],
)
def test_auto_packing_is_cost_when_every_type_has_a_price(prices, expected):
    a = node_type("a", price=prices[0])
    b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=prices[1])
    assert Policy(node_types=(a, b)).packing == "auto"
    assert cost_aware(Policy(node_types=(a, b))) is expected
    snap = snapshot(queue=[queued(job(), 32)])
    p = plan(snap, Policy(node_types=(a, b)), EMPTY, NOW)
    assert ("cost packing" in p.launches[0].message) is expected


def test_cost_packing_spills_past_a_max_to_the_next_best_type():
    # B is cheaper per job but may have 2 nodes: the rest goes to A, not "max-nodes".
    b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.3, max_nodes=2)
    snap = snapshot(queue=[queued(job(), 32)])
    p = plan(snap, policy(A, b, packing="cost"), EMPTY, NOW)
    assert launched(p) == {"b": 2, "a": 4}
    assert p.unschedulable == ()
    assert all("cost packing: solver (HiGHS)" in x.message for x in p.launches)
    count = plan(snap, policy(A, b), EMPTY, NOW)
    assert launched(count) == {"a": 8}


def test_a_priced_packing_as_cheap_as_the_solvers_on_fewer_nodes_does_not_replace_it():
    # review6: the greedy tied the solver's cost on fewer nodes and replaced it, and the
    # planner's recount then launched one more $5 node (c1 + d5, $26.59/h, not c1 + d4):
    # among priced packings of one cost the node count is no tie-break (only free ones)
    c = node_type("c", cores=16, mem_gib=17, disk_gib=54, price=1.589, max_nodes=3)
    c = replace(c, shape=replace(c.shape, wallTime=600))  # 10-minute billing
    d = node_type("d", cores=16, mem_gib=17, disk_gib=54, price=5.0, max_nodes=50)
    short, long = Shape(300, GiB, 8, GiB, False), Shape(3600, 8 * GiB, 8, GiB, False)
    snap = snapshot(queue=[queued(short, 60), queued(long, 6)])
    p = plan(snap, policy(c, d, packing="cost"), EMPTY, NOW)
    assert launched(p) == {"c": 1, "d": 4}
    assert p.cost_per_hour == pytest.approx(21.589)
    assert all("solver (HiGHS)" in x.message for x in p.launches)


def test_cost_packing_spills_past_a_max_with_the_solver_off():
    # The heuristic put all 32 jobs on b, the planner capped b at its max and left 16
    # "max-nodes" while a had room (review4); it now spills to a as the solver does.
    b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.3, max_nodes=2)
    snap = snapshot(queue=[queued(job(), 32)])
    p = plan(snap, policy(A, b, packing="cost", solver_time_limit=0), EMPTY, NOW)
    assert launched(p) == {"b": 2, "a": 4}
    assert p.unschedulable == ()
    assert all("cost packing: heuristic (solver off)" in x.message for x in p.launches)
    # with a at its max too, only what neither holds waits as max-nodes
    a = node_type("a", max_nodes=1)
    p = plan(snap, policy(a, b, packing="cost", solver_time_limit=0), EMPTY, NOW)
    assert launched(p) == {"b": 2, "a": 1}
    assert unsched(p) == {(job(), ("max-nodes",)): 12}
