"""The running jobs ``_assign`` hands each type: a differential against one job at a time.

``_assign`` works a running job's held shape out once for a run of jobs with the same
``Shape`` object and elapsed time (a gang's jobs on its N nodes come one after another so),
instead of once per job (speed4: ~108 running jobs a pass on SDSC-BLUE, 13 distinct). The
reference here takes every job on its own, as ``_assign`` did before; both must give each
type the same held shapes, counts and order, and cost packing the same jobs per node."""

from __future__ import annotations

import math

from builders import NOW, job, node, node_type, policy, running, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.scaler import planner
from shoal.scaler.model import NodeState

A = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2)
B = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.4)
NODES = (
    node("a1", A),
    node("a2", A),
    node("b1", B),
    node("b2", B),
    node("d1", B, NodeState.DRAINING),  # draining: its jobs are not the type's demand
)
# equal shapes as distinct objects too: the shortcut must not take one for the other
SMALL, LONG = job(cores=1, wall=600), job(cores=2, wall=7200)
SHAPES = (SMALL, LONG, job(cores=1, wall=600), job(cores=2, wall=7200))
IDS = (*(n.id for n in NODES), "gone")  # "gone": a node not listed
ELAPSED = (0.0, 59.0, 60.0, 601.0, 5000.0, 9000.0, math.inf, math.nan)

runs = st.lists(
    st.tuples(
        st.sampled_from(SHAPES),
        st.integers(0, len(IDS) - 1),
        st.sampled_from(ELAPSED),
        st.integers(1, 4),  # a gang's jobs, on nodes one after another
    ),
    max_size=12,
)


def one_at_a_time(snap, view):
    """Each type's held running jobs and cost packing's per-node list, a job at a time."""
    where = {n.id: n.node_type for nodes in view.live.values() for n in nodes}
    held: dict[str, dict] = {t.name: {} for t in view.types}
    on_nodes: dict[str, dict] = {t.name: {} for t in view.types}
    for j in snap.demand.running:
        if j.node_id in where:
            h = planner._holding(j.shape, planner.running_remaining(j.shape.wallTime, j.elapsed))
            held[where[j.node_id]][h] = held[where[j.node_id]].get(h, 0) + 1
            on = on_nodes[where[j.node_id]].setdefault(j.node_id, [])
            on.append((h, j.elapsed >= j.shape.wallTime))
    return held, on_nodes


@settings(max_examples=300, deadline=None)
@given(runs=runs, packing=st.sampled_from(("count", "cost")))
def test_running_jobs_held_as_one_at_a_time(runs, packing):
    jobs = [
        running(shape, IDS[(first + k) % len(IDS)], elapsed)
        for shape, first, elapsed, width in runs
        for k in range(width)
    ]
    snap = snapshot(NODES, (), jobs)
    pol = policy(A, B, packing=packing)
    view = planner._observe(snap, pol, NOW)
    demand, _ = planner._assign(snap, view, pol, {}, {})
    held, on_nodes = one_at_a_time(snap, view)
    for t in view.types:
        got = demand[t.name]
        assert list(got.running.items()) == list(held[t.name].items())
        assert all(a is b for a, b in zip(got.running, held[t.name], strict=True))
        if packing == "cost":
            assert got.on_nodes == on_nodes[t.name]
