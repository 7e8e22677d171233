"""The floor ``_serve`` prunes its binary search with is below every packing binpack makes.

The planner skips packing a prefix of the queue when the floor says it needs more nodes
than the cap; that is the same step only if no packer (count packing, or the priced
heuristic that cost packing takes the minimum with) ever packs below the floor.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import node_type, policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.scaler import planner
from shoal.scaler.binpack import binpack
from shoal.scaler.planner import NEEDS, _Floor, _need
from shoal.scaler.shape import Shape

GiB = 1024**3

NODES = st.builds(
    Shape,
    wallTime=st.sampled_from([0, 600, 3600]),
    memory=st.sampled_from([2, 4, 8, 16, 32]).map(lambda g: g * GiB),
    cores=st.sampled_from([1, 2, 4, 8, 16]),
    disk=st.sampled_from([0, 10, 50, 100]).map(lambda g: g * GiB),
    preemptible=st.booleans(),
)
JOBS = st.builds(
    Shape,
    wallTime=st.one_of(
        st.sampled_from([0, 0.5, 1, 60, 600, 3599.9, 3600, 3600.5, 3601, 7200, 20000]),
        st.floats(0, 30000, allow_nan=False).map(lambda x: round(x, 1)),
    ),
    memory=st.sampled_from([0, 0.5, 1, 2, 4, 8, 20, 1 / 3]).map(lambda g: g * GiB),
    cores=st.sampled_from([0, 0.5, 1, 2, 3, 4, 8, 1 / 3]),
    disk=st.sampled_from([0, 1, 5, 20]).map(lambda g: g * GiB),
    preemptible=st.booleans(),
)


def floor(jobs: dict[Shape, int], node: Shape, target: float) -> int:
    bound = _Floor({}, node, target)
    cap = 0
    while bound.over(jobs.items(), cap):
        cap += 1
    return cap


@settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    node=NODES,
    target=st.sampled_from([0, 60, 600, 3600, 7200]),
    jobs=st.dictionaries(JOBS, st.sampled_from([1, 2, 3, 7, 40, 300]), min_size=1, max_size=10),
    running=st.dictionaries(JOBS, st.just(1), max_size=10),
)
def test_no_packing_is_below_the_floor(node, target, jobs, running) -> None:
    everything = dict(jobs)
    for job, count in running.items():
        everything[job] = everything.get(job, 0) + count
    bound = _Floor(running, node, target)
    counted = binpack(everything, [node], target).counts[node]
    mixed = binpack(everything, [node], target, prices={node: 1.0}, time_limit=0).counts[node]
    least = min(counted, mixed)
    assert not bound.over(jobs.items(), least), (least, floor(everything, node, target))


def test_the_floor_counts_only_long_jobs_that_fit() -> None:
    node = Shape(3600, 16 * GiB, 8, 100 * GiB, False)
    long = Shape(7200, 1 * GiB, 2, 0, False)  # 4 a node at the target time
    short = Shape(1800, 1 * GiB, 2, 0, False)  # may run before or after the long ones
    too_big = Shape(7200, 1 * GiB, 16, 0, False)  # fits no node: binpack leaves it out
    spot_only = Shape(7200, 1 * GiB, 2, 0, False)
    assert floor({long: 9}, node, 3600) == 3
    assert floor({long: 9, short: 100, too_big: 5}, node, 3600) == 3
    assert floor({long: 9}, node, 7200) == 0  # at a 2 h target they may run one after another
    spot = Shape(3600, 16 * GiB, 8, 100 * GiB, True)
    assert floor({spot_only: 9}, spot, 3600) == 0  # on-demand jobs do not fit a spot node


COST = policy(node_type(price=0.2), packing="cost")


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    node=NODES,
    target=st.sampled_from([0, 60, 600, 1800, 3600]),
    queued=st.dictionaries(JOBS, st.sampled_from([1, 2, 3, 7, 40]), max_size=8),
    running=st.dictionaries(JOBS, st.just(1), max_size=10),
)
def test_a_cost_aware_need_is_the_lesser_of_both_packings(node, target, queued, running) -> None:
    """``_need`` skips the priced heuristic when count packing is at the floor; it gives
    what taking the lesser of both packings does."""
    NEEDS.clear()
    jobs = dict(running)
    for job, count in queued.items():
        jobs[job] = jobs.get(job, 0) + count
    knobs = replace(COST, target_time=target)
    counted = binpack(jobs, [node], target).counts.get(node, 0) if jobs else 0
    mixed = binpack(jobs, [node], target, prices={node: 1.0}, time_limit=0).counts.get(node, 0)
    assert _need(running, queued.items(), node, knobs) == min(counted, mixed)


def test_no_priced_packing_when_count_packing_is_at_the_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nine 2-hour 2-core jobs at a 1-hour target all run at the target time: 3 nodes of 8
    cores by the floor, which count packing meets; the priced heuristic is not run."""
    NEEDS.clear()
    priced: list[object] = []
    real = planner.binpack

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("prices") is not None:
            priced.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(planner, "binpack", spy)
    node = Shape(3600, 16 * GiB, 8, 100 * GiB, False)
    long = Shape(7200, 1 * GiB, 2, 0, False)
    knobs = replace(COST, target_time=3600)
    assert _need({long: 4}, [(long, 5)], node, knobs) == 3
    assert priced == []
