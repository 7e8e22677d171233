"""scaler.patterns: cost-aware node patterns, checked pattern by pattern."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.scaler.binpack import binpack
from shoal.scaler.patterns import Pattern, pattern_pack
from shoal.scaler.shape import Shape

GiB = 1024**3
BIG = Shape(3600, 192 * GiB, 48, 500 * GiB, False)


def job(seconds: float, memory: float, cores: float, disk: float = 1) -> Shape:
    return Shape(seconds, memory * GiB, cores, disk * GiB, False)


def check_patterns(
    patterns: list[Pattern], groups: dict[Shape, int], nodes: list[Shape], target_time: float
) -> None:
    """Each pattern fits its node; together they run every job, each starting by the target."""
    served = dict.fromkeys(groups, 0.0)
    for p in patterns:
        assert p.shape in nodes and p.repeat >= 1 and p.columns
        # A zero-length job holds its node for an instant only: it needs a node it fits.
        timed = {j: a for j, a in p.columns.items() if j.wallTime > 0}
        for dim in ("memory", "cores", "disk"):
            used = sum(getattr(j, dim) * a for j, a in timed.items())
            assert used <= getattr(p.shape, dim) * (1 + 1e-9), (dim, p)
        for j, a in p.columns.items():
            assert not j.fits_in(p.shape)
            takes_room = any((j.memory, j.cores, j.disk))
            per_column = target_time // j.wallTime + 1 if j in timed and takes_room else math.inf
            served[j] += p.repeat * a * per_column
    for j, n in groups.items():
        assert served[j] >= n, (j, served[j], n)


def test_core_heavy_and_memory_heavy_jobs_share_nodes() -> None:
    # Alone, 40 six-core jobs need 5 nodes (cores) and 120 12-GiB jobs 8 (memory): 13.
    # Five of one and fifteen of the other fill a node in both (45 cores, 190 GiB): 8.
    groups = {job(3600, 2, 6): 40, job(3600, 12, 1): 120}
    patterns = pattern_pack(groups, [BIG], 0, {BIG: 2.304})
    check_patterns(patterns, groups, [BIG], 0)
    assert sum(p.repeat for p in patterns) == 8
    assert binpack(groups, [BIG], 0, prices={BIG: 2.304}).counts == {BIG: 8}


def test_the_cheaper_node_per_job_wins() -> None:
    small = Shape(3600, 8 * GiB, 2, 100 * GiB, False)
    groups = {job(600, 1, 1): 96}
    # 48 per big node at $2.00 beats 2 per small node at $0.10 ($0.042 vs $0.05 per job).
    patterns = pattern_pack(groups, [small, BIG], 0, {small: 0.10, BIG: 2.00})
    assert [(p.shape, p.repeat) for p in patterns] == [(BIG, 2)]


def test_jobs_that_take_no_room_or_no_time_ride_along() -> None:
    groups = {job(3600, 4, 4): 10, job(3600, 0, 0, 0): 500, job(0, 8, 8): 30}
    patterns = pattern_pack(groups, [BIG], 0, {BIG: 1.0})
    check_patterns(patterns, groups, [BIG], 0)
    assert sum(p.repeat for p in patterns) == 1


node_shapes = st.lists(
    st.builds(
        Shape,
        st.just(3600),
        st.sampled_from([2, 4, 8, 16, 32, 64]).map(lambda g: g * GiB),
        st.sampled_from([1, 2, 4, 8, 16]),
        st.sampled_from([10, 50, 100]).map(lambda g: g * GiB),
        st.just(False),
    ),
    min_size=1,
    max_size=5,
    unique=True,
)
job_groups = st.dictionaries(
    st.builds(
        job,
        st.sampled_from([0, 60, 600, 1800, 3600]),
        st.sampled_from([0, 0.5, 1, 2, 4, 8]),
        st.sampled_from([0, 0.5, 1, 2, 4]),
        st.sampled_from([0, 1, 5]),
    ),
    st.integers(1, 200),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(job_groups, node_shapes, st.sampled_from([0, 600, 3600]), st.randoms())
def test_patterns_fit_their_nodes_and_serve_every_job(groups, nodes, target_time, rnd) -> None:
    groups = {j: n for j, n in groups.items() if any(not j.fits_in(s) for s in nodes)}
    prices = {s: round(rnd.uniform(0.01, 3.0), 3) for s in nodes}
    patterns = pattern_pack(groups, nodes, target_time, prices)
    check_patterns(patterns, groups, nodes, target_time)
