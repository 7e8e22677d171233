"""Unhealthy replacements are capped (issue 17 review, 2): one partition between the
scheduler and its nodes (a security group change, a munge key mismatch, a pusher that
sends ``nodes: []``) must not replace the whole fleet, as Cluster Autoscaler stops at 45 %
unready nodes (``max-total-unready-percentage``, ``ok-total-unready-count`` 3)."""

from __future__ import annotations

from dataclasses import replace

from builders import NOW, job, node, node_type, policy, queued, snapshot, unneeded
from shoal.scaler.model import NodeInfo, PlannerState, RemoveCause
from shoal.scaler.planner import plan

A = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=40)
B = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.4)
EMPTY = PlannerState()


def missing(node_id: str, t=A, since: float = NOW - 700) -> NodeInfo:
    """A node that joined, then has been missing from the reads since ``since``."""
    return replace(node(node_id, t), joined_at=NOW - 5000, missing_since=since)


def held(p) -> dict[str, str]:
    return {a.node_id: a.message for a in p.withheld}


def test_a_partition_of_the_whole_fleet_replaces_nothing():
    """Every node missing past the unhealthy timeout (slurmctld cannot reach any slurmd):
    none is terminated, none replaced, and the plan says why."""
    nodes = [missing(f"n{i}") for i in range(10)]
    p = plan(snapshot(nodes=nodes), policy(A, scale_down_budget=1.0), EMPTY, NOW)
    assert p.terminations == () and p.launches == () and p.drains == ()
    assert set(held(p)) == {n.id for n in nodes}
    assert all("10 of 10 nodes are missing" in m for m in held(p).values())
    assert {a.cause for a in p.withheld} == {RemoveCause.UNHEALTHY}


def test_few_missing_nodes_are_replaced_up_to_the_ok_count():
    """Three missing of four (75 %) is within ok count 3: replaced, as Cluster Autoscaler
    tolerates ok-total-unready-count whatever the fraction."""
    nodes = [missing(f"n{i}") for i in range(3)] + [node("ok", A)]
    snap = snapshot(nodes=nodes, queue=[queued(job(cores=4, mem_gib=8), 4)])
    p = plan(snap, policy(A, scale_down_budget=1.0), EMPTY, NOW)
    assert sorted(t.node_id for t in p.terminations) == ["n0", "n1", "n2"]
    assert p.withheld == ()


def test_above_the_fraction_a_type_holds_even_if_the_cluster_is_fine():
    """5 of 6 nodes of type b missing (a bad image for b): b's are held, while the cluster
    as a whole (5 of 26 missing) is healthy."""
    nodes = [missing(f"b{i}", B) for i in range(5)] + [node("b5", B)]
    nodes += [node(f"a{i}", A) for i in range(20)]
    queue = [queued(job(cores=4, mem_gib=8), 20), queued(job(cores=8, mem_gib=16), 6)]
    p = plan(snapshot(nodes=nodes, queue=queue), policy(A, B, scale_down_budget=1.0), EMPTY, NOW)
    assert p.terminations == ()
    assert set(held(p)) == {f"b{i}" for i in range(5)}
    assert all(m.startswith("of b, 5 of 6 nodes are missing") for m in held(p).values())
    assert p.launches == ()  # held nodes stay capacity: nothing is launched in their place


def test_the_missing_count_includes_nodes_not_yet_past_the_timeout():
    """4 of 8 missing (50 % > 45 %), only one of them past unhealthy_timeout: held; the
    others going missing at once says the scheduler, not the node, is at fault."""
    nodes = [missing("old")] + [missing(f"m{i}", since=NOW - 60) for i in range(3)]
    nodes += [node(f"n{i}", A) for i in range(4)]
    p = plan(snapshot(nodes=nodes), policy(A, scale_down_budget=1.0), EMPTY, NOW)
    assert p.terminations == () and set(held(p)) == {"old"}


def test_unhealthy_terminations_are_within_the_scale_down_budget():
    """3 missing of 20 (within the cap), budget 10 %: 2 per pass, the longest missing first;
    the third stays capacity, and idle drains get what budget is left (none)."""
    nodes = [missing("m0", since=NOW - 900), missing("m1", since=NOW - 800)]
    nodes += [missing("m2", since=NOW - 700)] + [node(f"n{i}", A) for i in range(17)]
    state = unneeded(*(f"n{i}" for i in range(17)), since=NOW - 3600)
    queue = [queued(job(cores=4, mem_gib=8), 10)]
    p = plan(snapshot(nodes=nodes, queue=queue), policy(A, scale_down_budget=0.1), state, NOW)
    assert [t.node_id for t in p.terminations] == ["m0", "m1"]
    assert set(held(p)) == {"m2"} and "scale_down_budget" in held(p)["m2"]
    assert p.drains == ()
