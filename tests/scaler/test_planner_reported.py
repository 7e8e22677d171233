"""The plan's unschedulable jobs: a queue that cannot run reports the same jobs pass after
pass, and the planner hands the last plan's tuple again when they are equal. What it last
reported passes in and out with the planner state (``PlannerState.reported``), so plans
with other states in between (two daemons, or a replay's variants, in one process) keep
their own."""

from __future__ import annotations

from builders import NOW, job, node_type, policy, queued, snapshot
from shoal.scaler.model import PlannerState
from shoal.scaler.planner import plan

A = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2)


def test_a_plan_reports_its_states_last_tuple_again_whatever_plans_ran_between() -> None:
    pol = policy(A)
    wide = snapshot(queue=[queued(job(cores=64), 3)])  # fits no type
    large = snapshot(queue=[queued(job(mem_gib=500), 2), queued(job(cores=16), 1)])
    a1 = plan(wide, pol, PlannerState(), NOW)
    b1 = plan(large, pol, PlannerState(), NOW)
    a2 = plan(wide, pol, a1.state, NOW)
    b2 = plan(large, pol, b1.state, NOW)
    assert a1.unschedulable and b1.unschedulable
    assert a2.unschedulable is a1.unschedulable
    assert b2.unschedulable is b1.unschedulable
    # other jobs than the state's last plan: reported afresh, not its tuple
    assert plan(large, pol, a2.state, NOW).unschedulable == b1.unschedulable
    assert plan(wide, pol, PlannerState(), NOW).unschedulable == a1.unschedulable
    # the tuple reported is no part of the state's value (a replay compares states)
    assert a2.state == PlannerState(a2.state.estimates, a2.state.unneeded_since)
