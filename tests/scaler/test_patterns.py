"""scaler.patterns: cost-aware node patterns, checked pattern by pattern."""

from __future__ import annotations

import math

import pytest
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


def groups_of(seconds: list[float], most: int) -> st.SearchStrategy[dict[Shape, int]]:
    """Job groups (shape -> count) of the given run times, up to ``most`` groups."""
    return st.dictionaries(
        st.builds(
            job,
            st.sampled_from(seconds),
            st.sampled_from([0, 0.5, 1, 2, 4, 8]),
            st.sampled_from([0, 0.5, 1, 2, 4]),
            st.sampled_from([0, 1, 5]),
        ),
        st.integers(1, 200),
        min_size=1,
        max_size=most,
    )


job_groups = groups_of([0, 60, 600, 1800, 3600], 6)


@settings(max_examples=300, deadline=None)
@given(job_groups, node_shapes, st.sampled_from([0, 600, 3600]), st.randoms())
def test_patterns_fit_their_nodes_and_serve_every_job(groups, nodes, target_time, rnd) -> None:
    groups = {j: n for j, n in groups.items() if any(not j.fits_in(s) for s in nodes)}
    prices = {s: round(rnd.uniform(0.01, 3.0), 3) for s in nodes}
    patterns = pattern_pack(groups, nodes, target_time, prices)
    check_patterns(patterns, groups, nodes, target_time)


def _fill_every_group(room, width, demand, value, needs) -> dict[int, int]:
    """``patterns._fill`` as it was before it stopped early: every start walks every group."""
    items = [g for g, c in enumerate(demand) if c and width[g]]

    def density(g: int) -> float:
        share = max((w / h for w, h in zip(needs[g], room, strict=True) if h > 0), default=0.0)
        return value[g] / max(share, 1e-9)

    dense = sorted(items, key=density, reverse=True)
    best: dict[int, int] = {}
    best_worth = 0.0
    for first in dense[:6]:
        most = min(demand[first], width[first])
        for part in sorted({max(1, int(most * k / 8)) for k in range(8, 0, -1)}):
            left = list(room)
            pattern: dict[int, int] = {}
            worth = 0.0
            for g in [first, *(g for g in dense if g != first)]:
                k = part if g == first else demand[g]
                for dim in range(3):
                    if needs[g][dim] > 0:
                        k = min(k, math.floor(left[dim] / needs[g][dim] + 1e-9))
                if k > 0:
                    pattern[g] = k
                    worth += value[g] * k
                    left = [h - k * n for h, n in zip(left, needs[g], strict=True)]
            if worth > best_worth + 1e-9:
                best, best_worth = pattern, worth
    return best


need = st.tuples(
    st.sampled_from([0.0, 0.5, 1.0, 3.0, 7.5, 16.0, 60.0]),
    st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 8.0]),
    st.sampled_from([0.0, 1.0, 10.0]),
).filter(any)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(need, st.integers(0, 40), st.floats(0.01, 5.0)), min_size=1, max_size=12),
    st.sampled_from([(64.0, 16.0, 100.0), (16.0, 8.0, 50.0), (192.0, 48.0, 500.0)]),
)
def test_a_filling_that_stops_when_nothing_more_fits_is_the_full_walks(groups, room) -> None:
    """``_fill`` stops a filling once no group left fits what is left of the node; that
    gives the filling walking every group would, on any mix."""
    check_fill(room, groups)


def check_fill(room, groups) -> None:
    """``_fill`` on ``groups`` ((need, demand, worth) each) finds what a full walk does."""
    from shoal.scaler.patterns import _fill, _shares
    from shoal.scaler.resources import columns

    needs = [n for n, _, _ in groups]
    demand = [d for _, d, _ in groups]
    value = [v for _, _, v in groups]
    width = [int(min(columns(room, n), 1000)) for n in needs]
    expected = _fill_every_group(room, width, demand, value, needs)
    assert _fill(room, width, demand, value, needs, _shares(room, needs)) == expected


def _pattern_pack_afresh(groups, nodes, target_time, prices) -> list[tuple]:
    """``pattern_pack``'s rounds as they were before it kept each bin's order and demand
    between rounds: every round computes each bin's demand from what is left and lets
    ``_fill`` sort the groups again (groups that take room and time only)."""
    from shoal.scaler.booking import bins_for, per_column
    from shoal.scaler.patterns import _fill, _shares
    from shoal.scaler.resources import columns, res

    jobs = list(groups)
    left = [groups[j] for j in jobs]
    bins = bins_for(jobs, nodes, target_time, prices)
    per = {
        (i, g): per_column(j, b.shape, b.intervals, target_time)
        for i, b in enumerate(bins)
        for g, j in enumerate(jobs)
    }
    wide = {
        (i, g): int(columns(res(b.shape), res(j))) if per[i, g] and not j.fits_in(b.shape) else 0
        for i, b in enumerate(bins)
        for g, j in enumerate(jobs)
    }
    value = [
        min(b.price / (wide[i, g] * per[i, g]) for i, b in enumerate(bins) if wide[i, g])
        for g in range(len(jobs))
    ]
    out = []
    while any(left):
        best = None
        for i, b in enumerate(bins):
            width = [wide[i, g] for g in range(len(jobs))]
            demand = [math.ceil(n / per[i, g]) if width[g] else 0 for g, n in enumerate(left)]
            worth = [value[g] * per[i, g] for g in range(len(jobs))]
            needs = [res(j) for j in jobs]
            filled = _fill(res(b.shape), width, demand, worth, needs, _shares(res(b.shape), needs))
            total = sum(value[g] * min(left[g], a * per[i, g]) for g, a in filled.items())
            score = (total / b.price, -b.price)
            if total and (best is None or score > best[0]):
                best = (score, i, filled)
        _, i, filled = best
        repeat = max(1, int(min(left[g] // (a * per[i, g]) for g, a in filled.items())))
        out.append((bins[i].shape, {jobs[g]: a for g, a in filled.items()}, repeat))
        for g, a in filled.items():
            left[g] = max(0, left[g] - repeat * a * int(per[i, g]))
    return out


@settings(max_examples=300, deadline=None)
@given(job_groups, node_shapes, st.sampled_from([0, 600, 3600]), st.randoms())
def test_patterns_are_those_of_rounds_that_sort_and_count_afresh(
    groups, nodes, target_time, rnd
) -> None:
    """Each bin's group order and demand, kept between rounds, give the patterns that
    sorting and counting every round did."""
    groups = {
        j: n
        for j, n in groups.items()
        if j.wallTime > 0
        and any((j.memory, j.cores, j.disk))
        and any(not j.fits_in(s) for s in nodes)
    }
    prices = {s: round(rnd.uniform(0.01, 3.0), 3) for s in nodes}
    got = [(p.shape, p.columns, p.repeat) for p in pattern_pack(groups, nodes, target_time, prices)]
    assert got == _pattern_pack_afresh(groups, nodes, target_time, prices)


long_groups = groups_of([0, 60, 600, 1800, 3600, 5400, 9000], 8)  # longer than a booking too


@settings(max_examples=400, deadline=None)
@given(long_groups, node_shapes, st.sampled_from([0, 600, 3600]), st.randoms())
def test_no_pattern_packing_costs_less_than_its_floor(groups, nodes, target_time, rnd) -> None:
    """``pattern_floor`` is a floor: ``pattern_pack``'s patterns never cost less (with one
    node shape, rounded up to whole bookings; binpack skips the patterns on it)."""
    from shoal.scaler.patterns import pattern_floor

    groups = {j: n for j, n in groups.items() if any(not j.fits_in(s) for s in nodes)}
    prices = {s: round(rnd.uniform(0.01, 3.0), 3) for s in nodes}
    for menu in (nodes, nodes[:1]):
        fitting = {j: n for j, n in groups.items() if any(not j.fits_in(s) for s in menu)}
        if not fitting:
            continue
        patterns = pattern_pack(fitting, menu, target_time, prices)
        booked = dict.fromkeys(menu, 0)  # as binpack prices them: intervals x price per shape
        for p in patterns:
            booked[p.shape] += p.repeat * p.intervals
        cost = sum(n * prices[s] for s, n in booked.items())
        assert pattern_floor(fitting, menu, target_time, prices) <= cost


def test_the_floor_is_what_the_best_pattern_costs_when_the_jobs_fill_nodes_exactly() -> None:
    """``pattern_floor`` on mixes whose best patterns it meets."""
    # 48 one-core hour-long jobs a 48-core node, 96 jobs: 2 nodes, and the floor says 2
    # (cores), so a packing of 2 nodes need not try patterns; 97 jobs: 3 (rounded up).
    from shoal.scaler.patterns import pattern_floor

    assert pattern_floor({job(3600, 1, 1): 96}, [BIG], 0, {BIG: 2.0}) == 4.0
    assert pattern_floor({job(3600, 1, 1): 97}, [BIG], 0, {BIG: 2.0}) == 6.0
    # five groups of one 10-minute whole-node job each: a column runs up to 4 of a group's
    # jobs by the target, but no two groups share one, so 5 node-hours, not 5/4 rounded up
    whole = {job(600 + i, 8, 48): 1 for i in range(5)}
    assert pattern_floor(whole, [BIG], 1800, {BIG: 2.0}) == 10.0
    assert sum(p.repeat for p in pattern_pack(whole, [BIG], 1800, {BIG: 2.0})) == 5
    # two shapes: no rounding, the cheaper per core-hour counts
    small = Shape(3600, 8 * GiB, 2, 100 * GiB, False)
    floor = pattern_floor({job(3600, 1, 1): 96}, [small, BIG], 0, {small: 0.05, BIG: 2.0})
    assert floor == pytest.approx(96 * 0.025, rel=1e-5) and floor < 96 * 0.025


@settings(max_examples=300, deadline=None)
@given(long_groups, node_shapes, st.sampled_from([0, 600, 3600]), st.randoms())
def test_the_heuristic_skipping_patterns_under_their_floor_packs_as_before(
    groups, nodes, target_time, rnd
) -> None:
    """binpack's priced heuristic (the solver off) packs patterns only when the greedy costs
    more than their floor: the same packing as packing them every time."""
    import sys
    from unittest import mock

    module = sys.modules["shoal.scaler.binpack"]  # the package exports the function too

    prices = {s: round(rnd.uniform(0.01, 3.0), 3) for s in nodes}
    for menu in (nodes, nodes[:1]):
        module.COST_PACKINGS.clear()
        skipping = binpack(groups, menu, target_time, prices=prices, time_limit=0)
        module.COST_PACKINGS.clear()
        with mock.patch.object(module, "pattern_floor", lambda *_: -math.inf):
            always = binpack(groups, menu, target_time, prices=prices, time_limit=0)
        assert skipping == always


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(need, st.integers(0, 40), st.floats(0.01, 5.0)), min_size=1, max_size=8),
    st.sampled_from([(64.0, 16.0, 100.0), (16.0, 8.0, 50.0)]),
    st.integers(0, 7),
    st.integers(0, 3),
)
def test_a_remembered_filling_is_the_one_its_groups_give_wherever_they_sit(
    groups, room, moved, extra
) -> None:
    """``_fill`` remembers fillings (``FILLINGS``) by the groups' needs, demands, worths and
    widths in their densest-first order, not by their indices: the same groups at other
    indices, beside groups without demand, or with one group's demand changed, get the
    filling a full walk finds for them."""
    from shoal.scaler.patterns import FILLINGS

    FILLINGS.clear()
    check_fill(room, groups)
    check_fill(room, [((1.0, 1.0, 1.0), 0, 1.0)] * extra + groups[::-1])  # moved, idle ones
    changed = list(groups)
    n, d, v = changed[moved % len(changed)]
    changed[moved % len(changed)] = (n, max(0, d - 1 - moved), v)
    check_fill(room, changed)
    check_fill(room, groups)


def test_fillings_of_many_groups_are_packed_but_not_remembered() -> None:
    """A filling of more than ``_REMEMBERED_GROUPS`` groups is not remembered (its key holds
    every group: 4,096 such keys of thousands of groups took hundreds of MB, review3), and
    packs the same patterns as the same call with an empty memo."""
    from shoal.scaler import patterns

    node = Shape(3600, 64 * GiB, 16, 100 * GiB, False)
    many = {
        Shape(600 + 60 * i, (1 + i % 7) * GiB, 1 + i % 4, GiB, False): 1 + i % 3
        for i in range(patterns._REMEMBERED_GROUPS + 8)
    }
    few = dict(list(many.items())[:4])
    patterns.FILLINGS.clear()
    first = pattern_pack(many, [node], 3600, {node: 1.0})
    widths = [len(groups) for _, groups in patterns.FILLINGS._items]
    assert widths and max(widths) <= patterns._REMEMBERED_GROUPS  # later rounds: fewer left
    assert pattern_pack(many, [node], 3600, {node: 1.0}) == first
    patterns.FILLINGS.clear()
    assert pattern_pack(many, [node], 3600, {node: 1.0}) == first
    pattern_pack(few, [node], 3600, {node: 1.0})
    assert any(len(groups) == len(few) for _, groups in patterns.FILLINGS._items)


def test_patterns_keep_to_each_shapes_max_and_serve_the_rest_on_the_next() -> None:
    # The core-heavy/memory-heavy mix wants 8 BIG nodes; BIG may have 5, so the rest goes
    # to the smaller shape, and with that at its max too the remainder is not served.
    small = Shape(3600, 64 * GiB, 16, 200 * GiB, False)
    groups = {job(3600, 2, 6): 40, job(3600, 12, 1): 120}
    prices = {small: 1.0, BIG: 2.304}
    patterns = pattern_pack(groups, [small, BIG], 0, prices, {BIG: 5})
    check_patterns(patterns, groups, [small, BIG], 0)
    used = {s: sum(p.repeat for p in patterns if p.shape == s) for s in (small, BIG)}
    assert used[BIG] == 5 and used[small] > 0
    patterns = pattern_pack(groups, [small, BIG], 0, prices, {BIG: 5, small: 2})
    assert sum(p.repeat for p in patterns if p.shape == BIG) == 5
    assert sum(p.repeat for p in patterns if p.shape == small) == 2


def test_of_two_free_shapes_the_one_needing_fewer_nodes_is_filled() -> None:
    # Free bins all score inf per dollar: the first (4 cores) took 10 nodes where 3
    # sixteen-core ones hold the same jobs.
    four = Shape(3600, 16 * GiB, 4, 100 * GiB, False)
    sixteen = Shape(3600, 64 * GiB, 16, 100 * GiB, False)
    groups = {job(3600, 2, 4): 10}
    patterns = pattern_pack(groups, [four, sixteen], 0, {four: 0.0, sixteen: 0.0})
    check_patterns(patterns, groups, [four, sixteen], 0)
    assert {p.shape for p in patterns} == {sixteen}
    assert sum(p.repeat for p in patterns) == 3
