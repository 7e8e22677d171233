"""scaler.timeline: job-by-job packing on exact timelines, checked schedule by schedule."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.scaler.shape import Shape
from shoal.scaler.timeline import (
    _Node,
    billed_intervals,
    timeline_bill,
    timeline_count,
    timeline_pack,
)

GiB = 1024**3
NODE = Shape(3600, 16 * GiB, 4, 100 * GiB, False)


def job(seconds: float, memory: float, cores: float, disk: float = 0) -> Shape:
    return Shape(seconds, memory * GiB, cores, disk * GiB, False)


def check_schedule(
    schedule: list[list[tuple[Shape, float]]], node: Shape, target_time: float, booked: bool
) -> None:
    """An independent check: at every instant a job starts, the jobs running on its node
    fit the node; every start is by the target; booked nodes end within their booking."""
    for jobs in schedule:
        assert jobs, "no node is opened empty"
        for _, start in jobs:
            assert start <= target_time + 1e-9
        timed = [(j, t) for j, t in jobs if j.wallTime > 0]
        # Usage is a step function that only rises at starts, so checking starts suffices.
        for _, at in timed:
            running = [j for j, t in timed if t <= at < t + j.wallTime]
            for dim in ("memory", "cores", "disk"):
                used = sum(getattr(j, dim) for j in running)
                assert used <= getattr(node, dim) * (1 + 1e-9), (dim, at, running)
        if booked and node.wallTime > 0:
            booking = max(
                (math.ceil(j.wallTime / node.wallTime) * node.wallTime for j, t in timed if t == 0),
                default=node.wallTime,
            )
            booking = max(booking, node.wallTime)
            assert all(t + j.wallTime <= booking + 1e-6 for j, t in timed if t > 0)


def test_jobs_run_side_by_side_then_back_to_back() -> None:
    # 4 cores: 4 one-core jobs at once, then 4 more after 1800 s, all by 3600.
    schedule = timeline_pack([(job(1800, 1, 1), 12)], NODE, 3600)
    assert [len(jobs) for jobs in schedule] == [12]
    assert sorted(t for _, t in schedule[0]) == [0] * 4 + [1800] * 4 + [3600] * 4


def test_no_job_starts_after_the_target() -> None:
    assert timeline_count([(job(1800, 1, 1), 12)], NODE, 1799) == 3
    assert timeline_count([(job(1800, 1, 1), 12)], NODE, 0) == 3


def test_a_job_fits_the_gap_another_leaves() -> None:
    # A 3-core job for 3600 s leaves one core; 1-core jobs use it back to back.
    groups = [(job(3600, 4, 3), 1), (job(600, 1, 1), 7)]
    schedule = timeline_pack(groups, NODE, 3600)
    assert len(schedule) == 1
    check_schedule(schedule, NODE, 3600, booked=False)


def test_booked_nodes_take_only_what_ends_within_the_booking() -> None:
    # Free-running, the second job starts at 3600 and runs to 6600 on the same node;
    # booked for one hour, it cannot end in time there, so it opens a second node.
    groups = [(job(3600, 16, 1), 1), (job(3000, 16, 1), 1)]
    assert timeline_count(groups, NODE, 3600) == 1
    assert timeline_count(groups, NODE, 3600, booked=True) == 2
    # A job starting at 0 books as many intervals as it runs: two hours here, so the
    # second 2000 s job (2000 to 4000) still ends within the booking.
    groups = [(job(7000, 12, 1), 1), (job(2000, 4, 1), 2)]
    assert timeline_count(groups, NODE, 3600, booked=True) == 1
    groups = [(job(3000, 12, 1), 1), (job(2000, 4, 1), 2)]
    assert timeline_count(groups, NODE, 3600, booked=True) == 2


def test_zero_length_jobs_share_the_first_node() -> None:
    groups = [(job(3600, 16, 4), 3), (job(0, 16, 4), 50)]
    schedule = timeline_pack(groups, NODE, 0)
    assert len(schedule) == 3
    assert sum(1 for j, _ in schedule[0] if j.wallTime == 0) == 50


def test_zero_resource_jobs_never_open_a_second_node() -> None:
    assert timeline_count([(job(3600, 0, 0), 1000)], NODE, 0) == 1


jobs_strategy = st.lists(
    st.tuples(
        st.builds(
            job,
            st.sampled_from([0, 60, 600, 1800, 3600, 7200]),
            st.sampled_from([0, 1, 2, 4, 8, 16]),
            st.sampled_from([0, 1, 2, 4]),
            st.sampled_from([0, 10, 50]),
        ),
        st.integers(1, 30),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda g: g[0],
)


@settings(max_examples=300, deadline=None)
@given(jobs_strategy, st.sampled_from([0, 600, 3600, 7200]), st.booleans())
def test_every_schedule_is_feasible_and_places_every_job(groups, target_time, booked) -> None:
    groups = sorted(groups, key=lambda g: g[0], reverse=True)
    schedule = timeline_pack(groups, NODE, target_time, booked)
    check_schedule(schedule, NODE, target_time, booked)
    placed: dict[Shape, int] = {}
    for jobs in schedule:
        for j, _ in jobs:
            placed[j] = placed.get(j, 0) + 1
    assert placed == dict(groups)


def test_pinned_jobs_start_at_zero_and_no_job_goes_before_them() -> None:
    busy = Shape(1500, 2 * GiB, 4, GiB, False)
    heavy = Shape(500, 10 * GiB, 4, GiB, False)
    assert timeline_count([(heavy, 1), (busy, 1)], NODE, 900) == 1  # heavy at 0, busy at 500
    nodes = timeline_pack([(heavy, 1)], NODE, 900, pinned=[(busy, 1)])
    assert nodes == [[(busy, 0.0)], [(heavy, 0.0)]]


@settings(max_examples=300, deadline=None)
@given(jobs_strategy, st.sampled_from([0, 600, 3600, 7200]), st.booleans())
def test_timeline_bill_counts_what_the_schedule_bills(groups, target_time, booked) -> None:
    groups = sorted(groups, key=lambda g: g[0], reverse=True)
    pinned, queued = groups[:1], groups[1:]
    schedule = timeline_pack(queued, NODE, target_time, booked, pinned=pinned)
    billed = timeline_bill(queued, NODE, target_time, booked, pinned=pinned)
    assert billed == (billed_intervals(schedule, NODE), len(schedule))


@settings(max_examples=300, deadline=None)
@given(jobs_strategy, st.sampled_from([0, 600, 3600, 7200]), st.booleans())
def test_a_nodes_peak_is_the_most_free_where_a_job_may_start(groups, target_time, booked) -> None:
    """``take`` keeps the peak without a recount when the job's segments did not hold
    it: after every take it is still the most free in each resource over the segments
    starting by the target."""
    node = _Node(
        (NODE.memory, NODE.cores, NODE.disk), NODE.wallTime if booked else 0.0, target_time
    )
    for shape, count in sorted(groups, key=lambda g: g[0], reverse=True):
        need = (shape.memory, shape.cores, shape.disk)
        for _ in range(count):
            if shape.wallTime <= 0:
                break
            at = node.earliest(need, shape.wallTime, 0.0, target_time)
            if at is None:
                break
            node.take(shape, need, at, shape.wallTime)
            starts = [f for t, f in zip(node.times, node.free, strict=True) if t <= target_time]
            assert node.peak == tuple(max(f[i] for f in starts) for i in range(3))
