"""What the planner carries between passes: a settled betaInertia estimate reaches a fixed
point, and running jobs' remaining times on a minute grid, so passes repeat their packings."""

from __future__ import annotations

import pytest
from builders import NOW, job, node, node_type, policy, queued, record_packings, running, snapshot
from shoal.scaler.model import PlannerState
from shoal.scaler.planner import RUNNING_JOB_GRID, RUNNING_JOB_MIN_REMAINING, SETTLED, plan

A = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=40)


def passes(snap, pol, state, limit=2000):
    """Plan the same snapshot until the state stops changing; returns the plans."""
    plans = []
    for _ in range(limit):
        p = plan(snap, pol, state, NOW)
        plans.append(p)
        if p.state == state:
            return plans
        state = p.state
    raise AssertionError(f"no fixed point in {limit} passes: {state}")


@pytest.mark.parametrize(
    ("beta", "start", "need", "settles_within"),
    [
        (0.1, 5.0, 0, 12),  # decays to 0: Toil's float would take ~320 passes to underflow
        (0.1, 0.0, 13, 12),  # 0.9 x 13 + 0.1 x 13 is 13.000000000000002 in floats
        (0.5, 9.0, 2, 35),
        (0.0, 4.0, 3, 2),
    ],
    ids=["decay-to-zero", "float-noise-above", "slow-inertia", "no-inertia"],
)
def test_estimate_reaches_a_fixed_point(beta, start, need, settles_within):
    nodes = [node(f"n{i}", A) for i in range(need)]
    snap = snapshot(nodes=nodes, queue=[queued(job(cores=4), need)] if need else [])
    plans = passes(snap, policy(A, beta_inertia=beta), PlannerState(estimates={"a": start}))
    assert len(plans) <= settles_within
    assert plans[-1].state.estimates["a"] == float(need)  # exactly, not within a tolerance
    assert plans[-1].targets["a"] == need


@pytest.mark.parametrize(
    "offset",
    [0.0, 0.4 * SETTLED, -0.9 * SETTLED, 3e-12],
    ids=["exact", "just-above", "just-below", "float-noise"],
)
def test_an_estimate_within_settled_of_the_raw_one_is_stored_as_it(offset):
    pol = policy(A, beta_inertia=0.5)
    snap = snapshot(queue=[queued(job(cores=4), 3)])
    # (1 - 0.5) x 3 + 0.5 x previous = 3 + offset
    p = plan(snap, pol, PlannerState(estimates={"a": 3.0 + 2 * offset}), NOW)
    assert p.state.estimates["a"] == 3.0
    assert p.targets["a"] == 3


@pytest.mark.parametrize(
    "offset", [3 * SETTLED, -3 * SETTLED, 0.2], ids=["above", "below", "far-above"]
)
def test_an_estimate_further_away_is_kept_as_toil_computes_it(offset):
    pol = policy(A, beta_inertia=0.5)
    snap = snapshot(queue=[queued(job(cores=4), 3)])
    previous = 3.0 + 2 * offset
    p = plan(snap, pol, PlannerState(estimates={"a": previous}), NOW)
    assert p.state.estimates["a"] == 0.5 * 3 + 0.5 * previous
    assert p.targets["a"] == 3


# -- running jobs: remaining time rounded up to whole minutes ------------------------------


@pytest.mark.parametrize(
    ("wall", "elapsed", "held"),
    [
        (7200, 6000, 1200),  # whole minutes stay as they are
        (600, 0, 600),  # just started: its whole wall time
        (7200, 6000.5, 1200),  # 1199.5 s left: a whole minute up
        (7200, 5999.5, 1260),  # 1200.5 s left
        (3600.2, 0, 3660),
        (600, 630, RUNNING_JOB_MIN_REMAINING),  # 30 s late: the minimum, a whole minute
        (600, 900, 300),  # 5 min late: as long again (tests/scaler/test_planner_overrun.py)
    ],
    ids=["whole", "just-started", "just-under", "just-over", "fraction", "late", "overran"],
)
def test_running_jobs_remaining_time_is_rounded_up_to_a_minute(monkeypatch, wall, elapsed, held):
    """A running job holds its node for its remaining time, packed with the queued jobs."""
    seen = record_packings(monkeypatch)
    snap = snapshot(
        nodes=[node("n1", A)],
        queue=[queued(job(wall=300), 1)],
        runs=[running(job(cores=2, wall=wall), "n1", elapsed)],
    )
    plan(snap, policy(A), PlannerState(), NOW)
    # merged first; then the running job alone and beside the queued one, pinned (_need)
    assert seen[0] == {job(cores=2, wall=held): 1, job(wall=300): 1}
    assert all(set(jobs) <= set(seen[0]) for jobs in seen)
    assert all(shape.wallTime % RUNNING_JOB_GRID == 0 for shape in seen[0])  # the minimum too


def test_running_jobs_a_few_seconds_apart_share_a_shape(monkeypatch):
    seen = record_packings(monkeypatch)
    runs = [running(job(wall=5000), "n1", elapsed=e) for e in (100, 101.5, 110, 139.9)]
    plan(snapshot(nodes=[node("n1", A)], runs=runs), policy(A), PlannerState(), NOW)
    assert seen == [{job(wall=4920): 4}]


@pytest.mark.parametrize("packing", ["count", "auto"])
def test_a_queued_job_is_not_planned_ahead_of_a_running_one(packing):
    """Chaos seed 5797: a 2-core job has just started on the only node of the type a
    memory-heavy 1-core job fits, and runs past the target time. Merged with the queued job,
    the packer put the queued job first and the running one after it (by the target), so
    one node "held" both and nothing was launched: the queued job waited the running one out
    (24 min against a 15-min target). The running job holds the node from now: a second
    node is launched (count packing; cost packing keeps its own, unpinned packing)."""
    r5 = node_type("r5", cores=2, mem_gib=16, disk_gib=20, price=0.126)
    snap = snapshot(
        nodes=[node("n1", r5)],
        queue=[queued(job(cores=1, mem_gib=10, wall=800), 1)],
        runs=[running(job(cores=2, mem_gib=2.5, wall=1454), "n1", elapsed=0.0)],
    )
    p = plan(snap, policy(r5, packing=packing, target_time=900.0), PlannerState(), NOW)
    launches = [(la.node_type, la.count) for la in p.launches]
    assert launches == ([("r5", 1)] if packing == "count" else [])
    # a running job that ends within the target leaves room for the queued one: no launch
    short = snapshot(
        nodes=[node("n1", r5)],
        queue=[queued(job(cores=1, mem_gib=10, wall=800), 1)],
        runs=[running(job(cores=2, mem_gib=2.5, wall=1454), "n1", elapsed=900.0)],
    )
    assert plan(short, policy(r5, target_time=900.0), PlannerState(), NOW).launches == ()


def test_running_jobs_that_overfill_the_model_of_their_node_launch_nothing_pinned():
    """Two running 8 GiB jobs share a 16 GiB node the model (1 GiB overhead) gives 15 GiB:
    pinned at 0 they need two nodes, a node nobody waits for. The pin counts only what it
    adds for the queued jobs, so a small queued job that the merged packing fits launches
    nothing."""
    t = node_type("m", cores=4, mem_gib=16, disk_gib=20)
    snap = snapshot(
        nodes=[node("n1", t)],
        queue=[queued(job(wall=300), 1)],
        runs=[running(job(mem_gib=8, wall=600), "n1", 0.0) for _ in range(2)],
    )
    assert plan(snap, policy(t, target_time=900.0), PlannerState(), NOW).launches == ()
