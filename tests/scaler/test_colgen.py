"""scaler.colgen and binpack's cost packing: the packings are real, limits hold, costs are
near the configuration-LP bound, and the solver's budget and fallbacks behave as said.

Each packing is checked independently of the solver: a filling must fit its node in every
dimension, every job must be served once, and no node shape may exceed its limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fresh_python import fresh_python
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.scaler.binpack import binpack
from shoal.scaler.booking import bins_for, per_column
from shoal.scaler.colgen import configuration_bound, solve
from shoal.scaler.shape import Shape

GiB = 1024**3
SMALL = Shape(3600, 8 * GiB, 2, 100 * GiB, False)  # $0.10
BIG = Shape(3600, 32 * GiB, 8, 100 * GiB, False)  # $0.36: cheaper per core


def job(cores: float, mem: float, seconds: float = 600) -> Shape:
    return Shape(seconds, mem * GiB, cores, 1 * GiB, False)


def check(solution, groups: dict[Shape, int], target: float, limits=None) -> None:
    served: dict[Shape, int] = {}
    nodes: dict[Shape, int] = {}
    for filling in solution.fillings:
        shape = filling.bin.shape
        for dim in ("memory", "cores", "disk"):
            used = sum(getattr(g, dim) * c for g, c in filling.columns.items())
            assert used <= getattr(shape, dim) * (1 + 1e-9), (dim, filling)
        nodes[shape] = nodes.get(shape, 0) + filling.repeat
    for bin_, share in solution.jobs.items():
        capacity: dict[Shape, float] = {}
        for f in solution.fillings:
            if f.bin == bin_:
                for g, c in f.columns.items():
                    per = per_column(g, bin_.shape, bin_.intervals, target)
                    capacity[g] = capacity.get(g, 0) + c * per * f.repeat
        for g, n in share.items():
            assert n <= capacity[g], (g, n, capacity[g])
            served[g] = served.get(g, 0) + n
    for g, n in groups.items():
        assert served.get(g, 0) + solution.left.get(g, 0) == n
    for shape, most in (limits or {}).items():
        assert nodes.get(shape, 0) <= most
    cost = sum(f.repeat * f.bin.price for f in solution.fillings)
    assert cost == pytest.approx(solution.cost)


def test_mixed_groups_share_nodes_at_the_bound() -> None:
    # Memory-heavy and core-heavy jobs fill BIG nodes together: 4 x (4 x 1c6G + 4 x 1c2G)...
    groups = {job(1, 6): 16, job(1, 2): 16}
    prices = {SMALL: 0.10, BIG: 0.36}
    solution = solve(groups, [SMALL, BIG], 0, prices, time_limit=5)
    check(solution, groups, 0)
    assert solution.status == "optimal"
    bound = configuration_bound(groups, [SMALL, BIG], 0, prices)
    assert solution.bound == pytest.approx(bound, rel=3e-3)
    assert bound <= solution.cost <= bound * 1.01 + 0.1


def test_node_limit_spills_jobs_to_the_next_best_shape() -> None:
    groups = {job(1, 1): 40}
    prices = {SMALL: 0.10, BIG: 0.36}
    free = solve(groups, [SMALL, BIG], 0, prices, time_limit=5)
    assert {f.bin.shape: f.repeat for f in free.fillings} == {BIG: 5}
    limited = solve(groups, [SMALL, BIG], 0, prices, max_nodes={BIG: 3}, time_limit=5)
    check(limited, groups, 0, {BIG: 3})
    assert {f.bin.shape: f.repeat for f in limited.fillings} == {BIG: 3, SMALL: 8}
    assert limited.left == {}


def test_jobs_no_shape_holds_within_its_limit_are_left() -> None:
    groups = {job(8, 30): 5}  # only BIG holds one, at most 2 of them
    solution = solve(groups, [SMALL, BIG], 0, {SMALL: 0.1, BIG: 0.36}, max_nodes={BIG: 2})
    check(solution, groups, 0, {BIG: 2})
    assert solution.left == {job(8, 30): 3}


def test_a_packing_with_jobs_left_claims_no_gap_to_the_bound() -> None:
    # The bound prices the jobs left beyond max-nodes as well: a packing that leaves some
    # costs less than it, and a "gap" against it would be negative nonsense.
    groups = {job(8, 30): 5}
    full = binpack(groups, [SMALL, BIG], 0, prices={SMALL: 0.1, BIG: 0.36}, time_limit=5)
    assert full.method.startswith("solver (HiGHS), ") and "above the LP bound" in full.method
    gap = float(full.method.split(", ")[1].split("%")[0])
    assert 0 <= gap < 1
    capped = binpack(
        groups, [SMALL, BIG], 0, prices={SMALL: 0.1, BIG: 0.36}, max_nodes={BIG: 2}, time_limit=5
    )
    assert capped.method == "solver (HiGHS)"
    assert sum(capped.left.values()) == 3


def test_billing_intervals_are_booked_and_priced() -> None:
    # 300 s jobs, target 1 h: a node booked for one hour runs 12 back to back, for two 13
    # (the 13th starts at 3600); one-hour bookings are cheaper per job.
    micro = Shape(3600, 1 * GiB, 1, 8 * GiB, False)
    groups = {job(1, 0.5, seconds=300): 1000}
    assert [b.intervals for b in bins_for(list(groups), [micro], 3600, {micro: 1.0})] == [1, 2]
    solution = solve(groups, [micro], 3600, {micro: 1.0}, time_limit=5)
    check(solution, groups, 3600)
    assert solution.cost == 84  # Toil's testHighTargetTime count, in billed hours
    assert binpack(groups, [micro], 3600, prices={micro: 1.0}).cost({micro: 1.0}) == 84


def test_no_time_means_the_heuristic_and_the_packing_says_which() -> None:
    groups = {job(1, 6): 16, job(1, 2): 16}
    prices = {SMALL: 0.10, BIG: 0.36}
    off = binpack(groups, [SMALL, BIG], 0, prices=prices, time_limit=0)
    assert off.method == "heuristic (solver off)"
    on = binpack(groups, [SMALL, BIG], 0, prices=prices)
    assert on.method.startswith("solver (HiGHS)")
    assert on.cost(prices) <= off.cost(prices) + 1e-9


def test_a_starved_solver_keeps_the_cheaper_of_its_best_and_the_heuristic() -> None:
    groups = {job(c, m): 30 for c in (0.5, 1, 2, 3) for m in (1, 3, 5, 7)}
    nodes = [SMALL, BIG, Shape(3600, 64 * GiB, 16, 100 * GiB, False)]
    prices = dict(zip(nodes, (0.10, 0.36, 0.70), strict=True))
    starved = binpack(groups, nodes, 0, prices=prices, time_limit=1e-6)
    assert "limit" in starved.method or "found nothing" in starved.method
    # never worse than packing blind to prices, and every job placed
    assert starved.cost(prices) <= binpack(groups, nodes, 0).cost(prices)
    assert sum(n for share in starved.assignment.values() for n in share.values()) == sum(
        groups.values()
    )


mixes = st.dictionaries(
    st.builds(
        job,
        st.sampled_from([0.5, 1, 2, 3, 6]),
        st.sampled_from([0.5, 1, 3, 6, 12, 24]),
        st.sampled_from([300, 600, 3600, 7200]),
    ),
    st.integers(1, 80),
    min_size=1,
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(mixes, st.sampled_from([0, 1800, 3600]), st.sampled_from([None, 2, 5]))
def test_solutions_are_real_packings_within_limits(groups, target, limit) -> None:
    prices = {SMALL: 0.10, BIG: 0.36}
    limits = {BIG: limit} if limit is not None else None
    servable = {g: n for g, n in groups.items() if any(not g.fits_in(s) for s in prices)}
    if not servable:
        return
    solution = solve(servable, list(prices), target, prices, max_nodes=limits, time_limit=5)
    check(solution, servable, target, limits)
    if limits is None:
        assert solution.left == {}
        assert solution.bound is None or solution.bound <= solution.cost + 1e-6


def test_a_bound_below_one_node_claims_no_gap() -> None:
    # One 1-minute job on hourly nodes: the LP bound is a sixtieth of a node, and "5900%
    # above" it would say nothing about the packing. Sixty such jobs fill the node exactly.
    short = Shape(60, 1 << 30, 1, 0, False)
    one = binpack({short: 1}, [SMALL, BIG], 3600, prices={SMALL: 0.1, BIG: 0.36}, time_limit=5)
    assert one.method == "solver (HiGHS)" and one.counts[SMALL] == 1
    many = binpack({short: 240}, [SMALL, BIG], 3600, prices={SMALL: 0.1, BIG: 0.36}, time_limit=5)
    assert many.method.startswith("solver (HiGHS), ") and "above the LP bound" in many.method


def test_the_solver_loads_only_with_the_first_cost_packing() -> None:
    """numpy and highspy (~20 MB of a daemon's resident memory) are not imported by the daemon
    or by count packing; the first cost packing imports them."""
    script = (
        "import sys\n"
        "import shoal.daemon.service\n"
        "from shoal.scaler.binpack import binpack\n"
        "from shoal.scaler.shape import Shape\n"
        "node, job = Shape(3600, 4, 8 << 30, 0, False), Shape(600, 1, 1 << 30, 0, False)\n"
        "binpack({job: 8}, [node], 3600)\n"
        "before = {'numpy', 'highspy'} & set(sys.modules)\n"
        "binpack({job: 8}, [node], 3600, prices={node: 0.2})\n"
        "after = {'numpy', 'highspy'} <= set(sys.modules)\n"
        "print(sorted(before), after)\n"
    )
    out = fresh_python(script)
    assert out.stdout.split() == ["[]", "True"], out.stderr


# A mix the solver cannot finish within its default work: bench/cost_gap.py's first 50 job
# shapes x 10 node shapes.
_HARD_MIX = (
    "import sys\n"
    "sys.path.insert(0, {bench!r})\n"
    "from cost_gap import large\n"
    "groups, nodes, prices = large(1)[0]\n"
)
_PACK_HARD_MIX = _HARD_MIX + (
    "import json, threading\n"
    "from shoal.scaler.binpack import binpack\n"
    "def spin():\n"  # a busy thread: the packing gets about half the interpreter
    "    while True:\n"
    "        sum(range(1000))\n"
    "threading.Thread(target=spin, daemon=True).start()\n"
    "p = binpack(groups, nodes, 0, prices=prices)\n"
    "print(json.dumps([p.method, sorted(map(str, p.counts.items()))]))\n"
)
BENCH = str(Path(__file__).resolve().parents[2] / "bench")


def test_the_same_mix_gives_the_same_packing_whatever_the_load() -> None:
    """The solver's limit is work (simplex iterations, branch-and-bound nodes, rounds), not
    time: a mix it cannot finish is packed the same, to the node, in this process and in
    another one slowed by a busy thread."""
    mix: dict = {}
    exec(_HARD_MIX.format(bench=BENCH), mix)
    groups, nodes, prices = mix["groups"], mix["nodes"], mix["prices"]
    packings = [binpack(groups, nodes, 0, prices=prices) for _ in range(2)]
    assert "limit" in packings[0].method  # the limit, not the optimum, ends this solve
    assert packings[0] == packings[1]
    out = fresh_python(_PACK_HARD_MIX.format(bench=BENCH))
    assert out.returncode == 0, out.stderr
    method, counts = json.loads(out.stdout)
    assert (method, counts) == (packings[0].method, sorted(map(str, packings[0].counts.items())))


def test_a_repeated_cost_packing_is_remembered_not_solved_again(monkeypatch) -> None:
    """A pass whose queue and limits did not change since an earlier one gets the earlier
    packing without a solve (``binpack.COST_PACKINGS``); each caller gets its own copy; a
    change to any input (here a node limit) solves again."""
    import shoal.scaler.colgen as colgen
    from shoal.scaler.binpack import COST_PACKINGS

    COST_PACKINGS.clear()
    calls = []
    real = colgen.solve

    def counting(*args, **kwargs):
        calls.append(kwargs.get("max_nodes"))
        return real(*args, **kwargs)

    monkeypatch.setattr(colgen, "solve", counting)
    groups = {job(1, 3): 20, job(3, 1): 12}
    prices = {SMALL: 0.10, BIG: 0.36}
    first = binpack(groups, [SMALL, BIG], 3600, prices=prices, max_nodes={BIG: 5})
    first.assignment.clear()  # the caller's copy: the remembered packing is untouched
    first.counts.clear()
    again = binpack(dict(groups), [BIG, SMALL], 3600, prices=dict(prices), max_nodes={BIG: 5})
    assert len(calls) == 1
    assert again.assignment and sum(again.counts.values()) > 0
    COST_PACKINGS.clear()
    assert binpack(groups, [SMALL, BIG], 3600, prices=prices, max_nodes={BIG: 5}) == again
    assert len(calls) == 2
    binpack(groups, [SMALL, BIG], 3600, prices=prices, max_nodes={BIG: 4})
    assert len(calls) == 3


def test_seeding_in_one_call_builds_the_master_adding_one_by_one_would() -> None:
    """``_Model.seed`` adds its fillings in one call: the master LP (costs, bounds, matrix)
    and the fillings' order are those of adding each with ``_Model.add``."""
    from shoal.scaler.colgen import _Model

    groups = {job(c, m, s): 7 for c, m, s in ((1, 3, 600), (3, 1, 1800), (0.5, 7, 5400))}
    nodes = [SMALL, BIG]
    prices = {SMALL: 0.10, BIG: 0.36}
    bins = bins_for(list(groups), nodes, 3600, prices)
    seeded, added = (_Model(groups, bins, 3600, {BIG: 3}) for _ in range(2))
    seeded.seed()
    for b in range(len(bins)):
        for g in range(len(groups)):
            if added.upper[b, g]:
                a = [0] * len(groups)
                a[g] = int(added.upper[b, g])
                added.add(b, a)
    assert len(seeded.columns) > len(bins)  # several groups per bin
    assert seeded.columns == added.columns
    one, other = seeded.master.getLp(), added.master.getLp()
    for name in ("col_cost_", "col_lower_", "col_upper_", "row_lower_", "row_upper_"):
        assert list(getattr(one, name)) == list(getattr(other, name)), name
    for name in ("start_", "index_", "value_"):
        assert list(getattr(one.a_matrix_, name)) == list(getattr(other.a_matrix_, name)), name
