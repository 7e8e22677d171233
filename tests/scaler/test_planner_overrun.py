"""A running job past its estimate must not stall launches for the queued jobs behind it.

Its remaining time was floored at ``RUNNING_JOB_MIN_REMAINING`` pass after pass, so a job
hours past its estimate looked a minute from ending and a queued job that fits only its
node's type was planned on that node a minute later, on every pass: nothing was launched
until the job really ended. Now it is taken to run as long again as it has overrun
(``running_remaining``), so once it is about the target time late a node is launched.
Pure planner passes, ``now`` and the running job's elapsed time moving on together."""

from __future__ import annotations

import itertools

import pytest
from builders import job, node, node_type, policy, queued, running, snapshot
from hypothesis import assume, given
from hypothesis import strategies as st
from shoal.scaler import planner
from shoal.scaler.model import PlannerState
from shoal.scaler.planner import RUNNING_JOB_GRID, RUNNING_JOB_MIN_REMAINING, plan

NOW = 1_000_000.0
A = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2)
B = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.4)
TARGET = 1800.0
# On n1 (type b): a 6-core, 12 GiB job estimated at 10 min. Queued: a 5-core job, which fits
# type b only (a has 4 cores), and not beside the running one (6 + 5 > 8 cores).
LATE = job(cores=6, mem_gib=12, wall=600)
WAITING = job(cores=5, mem_gib=6, wall=3600)


def first_launch(packing: str, passes: int = 6 * 60) -> int | None:
    """Minutes past its estimate of the running job at the first pass (one a minute, for
    ``passes`` minutes) that launches a node; None if none does."""
    for minutes in range(passes):
        t = NOW + 60 * minutes
        snap = snapshot(
            nodes=[node("n1", B, now=t)],
            queue=[queued(WAITING, 1)],
            runs=[running(LATE, "n1", elapsed=LATE.wallTime + 60 * minutes)],
        )
        p = plan(snap, policy(A, B, packing=packing, target_time=TARGET), PlannerState(), t)
        if p.launches:
            assert [(la.node_type, la.count) for la in p.launches] == [("b", 1)]
            return minutes
    return None


@pytest.mark.parametrize("packing", ["count", "cost"])
def test_a_job_far_past_its_estimate_does_not_stall_the_launch_behind_it(packing):
    # 27 min late: taken to hold n1 27 min more, the queued job starts within the 30-min
    # target there; 28 min late: 32 min (the next step), past the target, so b launches.
    # With the old floor (a minute, every pass) nothing launched in 6 hours.
    assert first_launch(packing) == 28


@pytest.mark.parametrize("packing", ["count", "cost"])
def test_a_job_still_within_its_estimate_is_waited_for(packing):
    # 20 min left on n1: the queued job starts there within the target, nothing is bought.
    snap = snapshot(
        nodes=[node("n1", B)],
        queue=[queued(WAITING, 1)],
        runs=[running(job(cores=6, mem_gib=12, wall=3600), "n1", elapsed=2400)],
    )
    p = plan(snap, policy(A, B, packing=packing, target_time=TARGET), PlannerState(), NOW)
    assert p.launches == ()


def test_a_job_a_little_late_is_waited_for():
    # 3 min late: taken to end in 3, the queued job waits for its node, nothing is bought.
    snap = snapshot(
        nodes=[node("n1", B)],
        queue=[queued(WAITING, 1)],
        runs=[running(LATE, "n1", elapsed=LATE.wallTime + 180)],
    )
    assert plan(snap, policy(A, B, target_time=TARGET), PlannerState(), NOW).launches == ()


@pytest.mark.parametrize(
    ("wall", "elapsed", "held"),
    [
        (600, 600, RUNNING_JOB_MIN_REMAINING),  # just at its estimate: the minimum
        (600, 630, RUNNING_JOB_MIN_REMAINING),  # 30 s late
        (600, 600 + 9 * 60, 10 * 60),  # 9 min late: 10 (the step above 8)
        (600, 600 + 40 * 60, 46 * 60),  # 40 min late: 46
        (3600, 3600 + 3 * 3600, 182 * 60),  # 3 h late: 3 h 2 min
    ],
)
def test_overrun_estimates(wall, elapsed, held):
    assert planner.running_remaining(wall, elapsed) == held


def test_overrun_steps_are_whole_minutes_growing_by_at_most_a_fourth_octave():
    assert planner.OVERRUN_STEPS[0] == RUNNING_JOB_MIN_REMAINING
    assert all(s % RUNNING_JOB_GRID == 0 for s in planner.OVERRUN_STEPS)
    pairs = list(itertools.pairwise(planner.OVERRUN_STEPS))
    assert all(a < b <= max(a + RUNNING_JOB_GRID, a * 2**0.25 + RUNNING_JOB_GRID) for a, b in pairs)
    assert planner.OVERRUN_STEPS[-1] >= 365 * 86400  # the fallback (whole minutes) is for odd cases


walls = st.floats(min_value=0, max_value=30 * 86400, allow_nan=False)
overruns = st.floats(min_value=0, max_value=4 * 365 * 86400, allow_nan=False)


@given(walls, overruns, overruns)
def test_an_overrun_estimate_grows_with_the_overrun_and_never_drops_below_the_old_floor(
    wall, over, more
):
    early, late = sorted((over, more))
    held = planner.running_remaining(wall, wall + early)
    assert held >= RUNNING_JOB_MIN_REMAINING  # the old rule's floor: a whole minute
    assert held >= early  # as long again as it has overrun, rounded up
    assert held % RUNNING_JOB_GRID == 0
    assert planner.running_remaining(wall, wall + late) >= held  # non-decreasing in elapsed


@given(walls, st.floats(min_value=0, max_value=30 * 86400, allow_nan=False))
def test_within_its_estimate_a_job_holds_what_it_has_left_rounded_up_to_a_minute(wall, elapsed):
    left = wall - elapsed
    assume(left > 0)
    held = planner.running_remaining(wall, elapsed)
    assert held >= max(left, RUNNING_JOB_MIN_REMAINING)
    assert held - max(left, RUNNING_JOB_MIN_REMAINING) < RUNNING_JOB_GRID
    assert held % RUNNING_JOB_GRID == 0


@pytest.mark.parametrize("elapsed", [float("inf"), float("nan")])
def test_an_overrun_that_cannot_be_counted_holds_the_node_as_long_as_the_steps_go(elapsed):
    # elapsed = inf raised OverflowError (math.ceil(inf)) and stopped the pass; NaN slipped
    # through every comparison and came out as a minute from ending (its node then "freed
    # soon" for a gang). An elapsed time that is no number is a job whose end nobody knows.
    assert planner.running_remaining(600, elapsed) == planner.OVERRUN_STEPS[-1]
