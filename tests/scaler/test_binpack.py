"""binpack: time-aware packing rules, cost-aware choice, and properties over random inputs."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.scaler.binpack import binpack, jobs_per_node
from shoal.scaler.shape import Shape

GiB = 1024**3
NODE = Shape(3600, 16 * GiB, 4, 100 * GiB, False)  # a 4-core, 16 GiB on-demand node
SPOT = Shape(3600, 16 * GiB, 4, 100 * GiB, True)


def job(seconds: float = 600, mem: float = 1, cores: float = 1, disk: float = 1, pre=False):
    return Shape(seconds, mem * GiB, cores, disk * GiB, pre)


@pytest.mark.parametrize(
    ("jobs", "target_time", "nodes"),
    [
        ({job(600, cores=4): 1}, 3600, 1),
        ({job(600, cores=1): 4}, 0, 1),  # side by side
        ({job(600, cores=1): 5}, 0, 2),
        ({job(1800, cores=4): 3}, 3600, 1),  # one after another: starts at 0, 1800, 3600
        ({job(1800, cores=4): 4}, 3600, 2),
        ({job(1800, cores=4): 2}, 0, 2),  # target 0: nothing may wait
        ({job(600, cores=1): 28}, 3600, 1),  # 4 columns x 7 starts (0..3600 by 600)
        ({job(600, cores=1): 29}, 3600, 2),
        ({job(7200, cores=4): 1}, 3600, 1),  # longer than the billing hour: still one node
        ({job(7200, cores=4): 2}, 3600, 2),  # the first holds the node past the target
        ({job(0, cores=4): 1000}, 0, 1),  # zero-length jobs give the node back at once
        ({Shape(600, 0, 0, 0, False): 10_000}, 0, 1),  # zero-resource jobs take nothing
        ({job(600, mem=16, cores=1): 2}, 0, 2),  # memory is the binding dimension
        ({job(600, cores=1): 2, job(600, cores=2): 1}, 0, 1),  # different shapes share a node
    ],
    ids=[
        "one-full",
        "side-by-side",
        "side-by-side-overflow",
        "sequential",
        "sequential-overflow",
        "target-zero",
        "columns-times-starts",
        "columns-times-starts-overflow",
        "longer-than-interval",
        "long-job-holds-node",
        "zero-length",
        "zero-resource",
        "memory-binds",
        "mixed-shapes",
    ],
)
def test_counts(jobs: dict[Shape, int], target_time: float, nodes: int) -> None:
    packing = binpack(jobs, [NODE], target_time=target_time)
    assert packing.counts == {NODE: nodes}
    assert packing.unschedulable == {}


def test_iterable_and_mapping_agree() -> None:
    jobs = [job(600, cores=1)] * 9 + [job(1800, cores=2)] * 3
    grouped = {job(600, cores=1): 9, job(1800, cores=2): 3}
    assert binpack(jobs, [NODE]).counts == binpack(grouped, [NODE]).counts


def test_preemptible_job_prefers_preemptible_node_and_may_use_on_demand() -> None:
    spot_job = job(600, cores=4, pre=True)
    assert binpack({spot_job: 2}, [NODE, SPOT], 0).counts == {SPOT: 2, NODE: 0}
    assert binpack({spot_job: 2}, [NODE], 0).counts == {NODE: 2}


def test_non_preemptible_job_never_on_preemptible_node() -> None:
    packing = binpack({job(600, cores=1): 3}, [SPOT], 0)
    assert packing.counts == {SPOT: 0}
    assert packing.unschedulable == {job(600, cores=1): ["preemptible"]}


def test_unschedulable_reports_the_failing_dimensions() -> None:
    huge = job(600, mem=64, cores=2, disk=500)
    packing = binpack({huge: 5, job(600): 1}, [NODE], 0)
    assert packing.unschedulable == {huge: ["memory", "disk"]}
    assert packing.counts == {NODE: 1}


def test_unschedulable_uses_the_closest_node_shape() -> None:
    small = Shape(3600, 2 * GiB, 1, 10 * GiB, False)
    packing = binpack({job(600, mem=32, cores=4): 1}, [small, NODE], 0)
    assert packing.unschedulable == {job(600, mem=32, cores=4): ["memory"]}


def test_goes_to_the_first_node_shape_that_fits_as_toil_does() -> None:
    small = Shape(3600, 4 * GiB, 2, 100 * GiB, False)
    packing = binpack({job(600, cores=2): 2, job(600, cores=4): 1}, [NODE, small], 0)
    assert packing.counts == {small: 2, NODE: 1}


def test_prices_choose_the_cheaper_mix() -> None:
    small = Shape(3600, 4 * GiB, 1, 100 * GiB, False)
    jobs = {job(600, mem=1, cores=1): 40}
    # 4-core nodes at $0.30 beat 1-core nodes at $0.10 (0.075 vs 0.10 per job).
    packing = binpack(jobs, [small, NODE], 0, prices={small: 0.10, NODE: 0.30})
    assert packing.counts == {small: 0, NODE: 10}
    assert packing.cost({small: 0.10, NODE: 0.30}) == pytest.approx(3.0)
    # Count-minimising (no prices) takes the first shape that fits: 40 small nodes.
    assert binpack(jobs, [small, NODE], 0).counts == {small: 40, NODE: 0}


def test_prices_put_a_small_tail_on_a_small_node() -> None:
    small = Shape(3600, 4 * GiB, 1, 100 * GiB, False)
    jobs = {job(600, mem=1, cores=1): 41}
    packing = binpack(jobs, [small, NODE], 0, prices={small: 0.10, NODE: 0.30})
    assert packing.counts == {small: 1, NODE: 10}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no price"):
        binpack({job(): 1}, [NODE, SPOT], prices={NODE: 1.0})
    with pytest.raises(ValueError, match="target_time"):
        binpack({job(): 1}, [NODE], target_time=-1)
    with pytest.raises(ValueError, match="negative job count"):
        binpack({job(): -1}, [NODE])


def test_jobs_per_node() -> None:
    assert jobs_per_node(job(600, cores=1), NODE, 3600) == 4 * 7
    assert jobs_per_node(job(600, cores=1), NODE, 0) == 4
    assert jobs_per_node(job(0, cores=1), NODE, 0) == math.inf
    assert jobs_per_node(job(600, mem=32), NODE, 0) == 0


# -- properties ----------------------------------------------------------------------------

node_shapes = st.lists(
    st.builds(
        Shape,
        st.just(3600),
        st.sampled_from([2, 4, 8, 16, 32]).map(lambda g: g * GiB),
        st.sampled_from([1, 2, 4, 8]),
        st.sampled_from([10, 50, 100]).map(lambda g: g * GiB),
        st.booleans(),
    ),
    min_size=1,
    max_size=4,
    unique=True,
)
job_groups = st.dictionaries(
    st.builds(
        Shape,
        st.sampled_from([0, 60, 600, 1800, 3600, 7200]),
        st.sampled_from([0, 0.5, 1, 2, 4, 8, 40]).map(lambda g: g * GiB),
        st.sampled_from([0, 1, 2, 4, 16]),
        st.sampled_from([0, 1, 5, 20]).map(lambda g: g * GiB),
        st.booleans(),
    ),
    st.integers(1, 60),
    min_size=1,
    max_size=6,
)


def _first_fit(job_shape: Shape, nodes: list[Shape]) -> Shape | None:
    return next((n for n in sorted(nodes) if not job_shape.fits_in(n)), None)


@settings(max_examples=400, deadline=None)
@given(job_groups, node_shapes, st.sampled_from([0, 600, 3600]))
def test_every_job_is_placed_or_reported(jobs, nodes, target_time) -> None:
    packing = binpack(jobs, nodes, target_time)
    assert set(packing.counts) == set(nodes)
    for shape in jobs:
        fits_somewhere = _first_fit(shape, nodes) is not None
        assert (shape in packing.unschedulable) != fits_somewhere
        if not fits_somewhere:
            # The reasons are real failures against some node shape.
            reasons = packing.unschedulable[shape]
            assert reasons and any(shape.fits_in(n) == reasons for n in nodes)
    # A node shape is used only if some job goes to it first.
    wanted = {_first_fit(s, nodes) for s in jobs} - {None}
    assert all(packing.counts[n] == 0 for n in nodes if n not in wanted)


@settings(max_examples=400, deadline=None)
@given(job_groups, node_shapes)
def test_capacity_is_respected_with_everything_at_once(jobs, nodes) -> None:
    """With target 0 every job of non-zero length runs at once: the node count is at least
    the resource bound, and at most one node per job."""
    packing = binpack(jobs, nodes, 0)
    for node in nodes:
        mine = {s: n for s, n in jobs.items() if _first_fit(s, nodes) == node}
        for dim in ("memory", "cores", "disk"):
            need = sum(getattr(s, dim) * n for s, n in mine.items() if s.wallTime > 0)
            have = getattr(node, dim)
            if have:
                assert packing.counts[node] >= math.ceil(need / have - 1e-9)
        assert packing.counts[node] <= sum(mine.values())


@settings(max_examples=200, deadline=None)
@given(job_groups, node_shapes, st.sampled_from([0, 600, 3600]))
def test_more_time_never_needs_more_nodes_than_none(jobs, nodes, target_time) -> None:
    assert binpack(jobs, nodes, target_time).total <= binpack(jobs, nodes, 0).total


@settings(max_examples=200, deadline=None)
@given(job_groups, node_shapes)
def test_priced_packing_serves_the_same_jobs(jobs, nodes) -> None:
    prices = {n: 0.01 * (1 + i) for i, n in enumerate(nodes)}
    priced = binpack(jobs, nodes, 0, prices=prices)
    plain = binpack(jobs, nodes, 0)
    assert priced.unschedulable == plain.unschedulable
    assert (priced.total == 0) == (plain.total == 0)


@settings(max_examples=200, deadline=None)
@given(job_groups, node_shapes, st.sampled_from([0, 600, 3600]), st.booleans())
def test_assignment_places_every_schedulable_job_once(jobs, nodes, target_time, priced) -> None:
    prices = {n: 0.01 * (1 + i) for i, n in enumerate(nodes)} if priced else None
    packing = binpack(jobs, nodes, target_time, prices=prices)
    placed: dict[Shape, int] = {}
    for node, share in packing.assignment.items():
        assert packing.counts[node] > 0
        for shape, count in share.items():
            assert not shape.fits_in(node) and count > 0
            placed[shape] = placed.get(shape, 0) + count
    assert placed == {s: n for s, n in jobs.items() if s not in packing.unschedulable}


@pytest.mark.parametrize("running", [1, 1001], ids=["timeline-and-lanes", "lanes-only"])
def test_pinned_jobs_start_at_zero_and_no_job_goes_before_them(running: int) -> None:
    """Running jobs (``pinned``) hold their room from 0. Merged with the queued jobs, the
    packer runs the bigger queued job first and a running one after it, by the target: one
    node fewer than the cluster really needs (chaos seed 5797). With 1002 jobs, beyond
    ``TIMELINE_LIMIT``, the lane packers alone answer."""
    busy = Shape(1500, 2.5 * GiB, 4, GiB, False)  # all the node's cores, past the target
    heavy = Shape(500, 10 * GiB, 4, GiB, False)  # packed first (more memory), ends by 900 s
    merged = binpack({busy: running, heavy: 1}, [NODE], target_time=900).counts[NODE]
    pinned = binpack({heavy: 1}, [NODE], target_time=900, pinned={busy: running})
    assert merged == running  # the queued job at 0, a running one after it at 500 s
    assert pinned.counts[NODE] == running + 1
    assert pinned.assignment[NODE] == {busy: running, heavy: 1}
    with pytest.raises(ValueError, match="pinned"):
        binpack({heavy: 1}, [NODE], 900, prices={NODE: 1.0}, pinned={busy: 1})


@settings(max_examples=200, deadline=None)
@given(job_groups, node_shapes, st.sampled_from([0, 600, 3600]), st.randoms())
def test_the_greedy_packs_each_distinct_group_order_once(jobs, nodes, target_time, rnd) -> None:
    """``_cheapest_order`` packs every order it tries once, however many of its keys give
    that order, and keeps the cheapest of the packings of all of them."""
    import importlib
    from unittest import mock

    module = importlib.import_module("shoal.scaler.binpack")  # the module, not the function

    prices = {s: round(rnd.uniform(0.01, 3.0), 3) for s in nodes}
    real = module._pack
    with mock.patch.object(module, "_pack", side_effect=real) as pack:
        got = module._cheapest_order(jobs, sorted(nodes), target_time, prices)
    orders = [tuple(c.args[5]) for c in pack.call_args_list]
    assert len(orders) == len(set(orders))
    each = [real(jobs, sorted(nodes), target_time, prices, module.WIDTH, list(o)) for o in orders]
    best = min(each, key=lambda p: (p.cost(prices), p.total))
    assert (got.counts, got.intervals, got.assignment) == (
        best.counts,
        best.intervals,
        best.assignment,
    )
    if len(jobs) == 1:
        assert len(orders) == 1


def test_cost_packing_with_a_free_node_type_places_every_job():
    # A type priced 0 (config allows it: on-premises nodes) gave its jobs no value in the
    # node patterns, so none was ever served and the heuristic asserted (review3).
    free, paid = Shape(3600, 8, 8, 10, False), Shape(3600, 16, 16, 10, False)
    small, wide = Shape(1800, 3, 1, 0, False), Shape(600, 12, 2, 0, False)
    prices = {free: 0.0, paid: 1.0}
    packing = binpack({small: 7, wide: 3}, [free, paid], 3600, prices, time_limit=0)
    placed = Counter()
    for jobs in packing.assignment.values():
        placed.update(jobs)
    assert placed == {small: 7, wide: 3}
    assert packing.counts[paid] == 1  # the wide jobs need it; nothing more is paid for
    assert packing.cost(prices) == 1.0
    # all free: the whole menu is free, the packing still places every job
    packing = binpack({small: 7}, [free], 3600, {free: 0.0}, time_limit=0)
    assert sum(packing.assignment[free].values()) == 7 and packing.counts[free] == 2


def test_the_solvers_optimum_loses_to_the_greedy_when_two_groups_share_a_column_in_time():
    # The solver's fillings run one job group per column; six 10-core and six 12-core
    # 5-minute jobs run one after another on a single 16-core node within the hour, which
    # only the greedy's lanes find. The solver's optimum (two nodes) was kept (review4).
    node = Shape(3600, 64 * GiB, 16, 100 * GiB, False)
    a, b = Shape(300, GiB, 10, GiB, False), Shape(300, GiB, 12, GiB, False)
    packing = binpack({a: 6, b: 6}, [node], 3600, {node: 1.0})
    assert packing.counts[node] == 1 and packing.cost({node: 1.0}) == 1.0
    assert packing.method == "heuristic (cheaper than the solver's optimum over its fillings)"
    assert packing.assignment == {node: {a: 6, b: 6}}


def test_the_heuristic_spills_past_a_max_to_the_next_cheapest_type():
    # With the solver off, every job went to the type cheapest per job, its max or not, and
    # the planner left those beyond it "max-nodes" (review4). Now each type opens nodes up
    # to its max and passes the rest on to the next cheapest that fits.
    small = Shape(3600, 16 * GiB, 4, 100 * GiB, False)  # 1 job at a time: $0.20 a job
    mid = Shape(3600, 32 * GiB, 8, 100 * GiB, False)  # 2: $0.225 a job
    big = Shape(3600, 64 * GiB, 16, 100 * GiB, False)  # 4: $0.25 a job
    prices = {small: 0.2, mid: 0.45, big: 1.0}
    four = Shape(3600, 2 * GiB, 4, GiB, False)
    packing = binpack(
        {four: 13}, [small, mid, big], 0, prices, max_nodes={small: 3, mid: 2}, time_limit=0
    )
    assert packing.method == "heuristic (solver off)"
    assert packing.counts == {small: 3, mid: 2, big: 2}  # 3 + 4 + 6 jobs
    assert packing.assignment == {small: {four: 3}, mid: {four: 4}, big: {four: 6}}
    assert packing.left == {}
    # every type at its max: what none holds is left, as the solver leaves it
    packing = binpack(
        {four: 13}, [small, mid, big], 0, prices, max_nodes={small: 3, mid: 2, big: 1}, time_limit=0
    )
    assert packing.counts == {small: 3, mid: 2, big: 1}
    assert packing.left == {four: 2}
    assert sum(n for jobs in packing.assignment.values() for n in jobs.values()) == 11


@pytest.mark.parametrize("time_limit", [0, 1.0], ids=["heuristic", "solver"])
def test_at_a_max_with_nowhere_to_spill_nodes_are_booked_to_serve_the_most(time_limit):
    # Half-hour jobs: a node booked for one hour runs 8 x 2 of them, for two hours 8 x 3.
    # One hour is cheaper per job, but with 2 nodes at most and no other type, two-hour
    # bookings serve 48 jobs, not 32, as the solver (a job left costs more than any node).
    node = Shape(3600, 16 * GiB, 8, 100 * GiB, False)
    half = Shape(1800, 2 * GiB, 1, GiB, False)
    packing = binpack(
        {half: 100}, [node], 3600, {node: 1.0}, max_nodes={node: 2}, time_limit=time_limit
    )
    assert packing.counts == {node: 2} and packing.intervals == {node: 4}
    assert packing.left == {half: 52} and packing.assignment == {node: {half: 48}}


@pytest.mark.parametrize("time_limit", [0, 1.0], ids=["heuristic", "solver"])
def test_jobs_of_no_resources_get_no_node_past_a_max_of_0(time_limit):
    # The solver packs only jobs that take room and time; those that take none went to a
    # node it opened, or else to the cheapest type, past its max of 0 (bench/README.md).
    node = Shape(3600, 16 * GiB, 8, 100 * GiB, False)
    nothing, some = Shape(600, 0, 0, 0, False), Shape(7200, GiB, 1, GiB, False)
    packing = binpack(
        {nothing: 5, some: 1}, [node], 3600, {node: 1.0}, max_nodes={node: 0}, time_limit=time_limit
    )
    assert packing.counts.get(node, 0) == 0
    assert packing.left == {nothing: 5, some: 1}


@settings(max_examples=300, deadline=None)
@given(
    job_groups,
    node_shapes,
    st.sampled_from([0, 600, 3600]),
    st.randoms(use_true_random=False),
)
def test_the_heuristic_keeps_to_the_max_and_leaves_a_job_only_when_every_type_is_full(
    jobs, nodes, target_time, rnd
) -> None:
    prices = {s: round(rnd.uniform(0.01, 3.0), 3) for s in nodes}
    limits = {s: rnd.randint(0, 4) for s in nodes if rnd.random() < 0.7}
    packing = binpack(jobs, nodes, target_time, prices, max_nodes=limits, time_limit=0)
    assert all(packing.counts[s] <= n for s, n in limits.items())
    placed = Counter()
    for node, share in packing.assignment.items():
        assert packing.counts[node] > 0
        for shape, count in share.items():
            assert not shape.fits_in(node)
            placed[shape] += count
    placed.update(packing.left)
    assert placed == {s: n for s, n in jobs.items() if s not in packing.unschedulable}
    for shape in packing.left:  # no job waits while a type that fits it has room
        fitting = [s for s in nodes if not shape.fits_in(s)]
        assert fitting and all(s in limits and packing.counts[s] >= limits[s] for s in fitting)


@pytest.mark.parametrize("time_limit", [0, 0.2], ids=["heuristic", "solver"])
def test_two_free_types_tie_on_cost_and_the_one_needing_fewer_nodes_wins(time_limit):
    # Both free: every packing costs 0, and the first type (10 four-core nodes) was taken
    # where 3 sixteen-core nodes hold the same jobs (review4).
    four = Shape(3600, 16 * GiB, 4, 100 * GiB, False)
    sixteen = Shape(3600, 64 * GiB, 16, 100 * GiB, False)
    work = Shape(3600, 2 * GiB, 4, GiB, False)
    prices = {four: 0.0, sixteen: 0.0}
    packing = binpack({work: 10}, [four, sixteen], 0, prices, time_limit=time_limit)
    assert packing.counts == {four: 0, sixteen: 3}
    assert packing.cost(prices) == 0.0 and packing.left == {}
    if time_limit:  # the solver's optimum is the first type's: the greedy wins the tie
        assert packing.method == (
            "heuristic (as cheap as the solver's optimum over its fillings, on fewer nodes)"
        )


@pytest.mark.parametrize("limit", [0.0, 10.0], ids=["heuristic", "solver"])
@pytest.mark.parametrize("capped", [True, False], ids=["max", "no-max"])
def test_a_job_worth_nothing_in_any_filling_does_not_break_cost_packing(limit, capped):
    # A 1-byte job of no cores is worth less than the float slack in every node pattern, so
    # no filling served it and pattern_pack asserted "every group fits some node shape"
    # (review6). It stops now, and what the patterns leave the greedy serves: no job is
    # lost, with a max or without (where the patterns were taken to serve every job).
    a = Shape(1800, 16 * GiB, 8, 0, False)
    b = Shape(3600, 7, 3, 0, False)
    c = Shape(3600, 32 * GiB, 32, 0, True)
    jobs = {Shape(3700, 8 * GiB, 2, 0, True): 3, Shape(60, 1, 0, 0, False): 12}
    caps = {a: 3, c: 6} if capped else None
    p = binpack(jobs, [a, b, c], 3600, {a: 0.5, b: 2, c: 1.0}, max_nodes=caps, time_limit=limit)
    placed = Counter(p.left)
    for share in p.assignment.values():
        placed.update(share)
    assert placed == Counter(jobs)
    assert p.left == {}


# review9: a job a hair (1e-9 to 3.6e-6 s) past a whole number of hours was booked one
# hour short (a relative tolerance) and then fit no booking (an absolute one): binpack
# divided by zero, so no pass could plan while such a job (a pushed float wall time) queued.
HAIR = [0.0, 5e-10, 1e-9, 1.5e-9, 1e-8, 1e-7, 1e-6, 3.6e-6, 1e-5]


@pytest.mark.parametrize("hair", HAIR)
@pytest.mark.parametrize("prices", [None, 1.0], ids=["count", "cost"])
def test_a_job_a_hair_past_whole_hours_is_booked_for_the_hours_it_needs(hair, prices):
    node = Shape(3600, 16, 8, 0, False)
    job = Shape(36000 + hair, 1, 1, 0, False)
    packing = binpack({job: 3}, [node], 1800, None if prices is None else {node: prices})
    assert packing.counts == {node: 1}
    # 10 hours hold it when it ends within the fits' slack (1e-9 s) of them, else 11
    assert packing.intervals == {node: 10 if hair <= 1e-9 else 11}


@settings(max_examples=300, deadline=None)
@given(
    k=st.integers(1, 48),
    hair=st.sampled_from([-1e-6, -1e-9, 0.0, *HAIR]),
    # (a run of k intervals also holds a job up to EPS x its length past it, in
    # resources.sequential: at 1 s intervals that slack is EPS itself, a float's rounding)
    interval=st.sampled_from([60.0, 600.0, 3600.0]),
)
def test_the_first_booking_always_holds_its_job(k, hair, interval):
    from shoal.scaler.booking import first_booking, per_column

    node = Shape(interval, 16, 8, 0, False)
    job = Shape(k * interval + hair, 1, 1, 0, False)
    first = first_booking(job, node)
    assert per_column(job, node, first, target_time=0.0) >= 1
    assert first == 1 or per_column(job, node, first - 1, target_time=0.0) == 0
