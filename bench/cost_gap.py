"""Cost packing against LP lower bounds on random job mixes, with Toil's packing beside it.

    make bench        (or: .venv/bin/python bench/cost_gap.py)

Jobs all run at once (target_time = 0), where the problem is vector bin packing
with a price per node shape. Any packing costs at least the larger of two bounds:

* pooled: whole nodes x_s of each node shape, fractional jobs of each group on
  each node shape it fits, per node shape and dimension the jobs' resources
  within x_s times its capacity (a MILP solved with HiGHS; loose
  when jobs are big relative to nodes, as a job may straddle two nodes);
* the configuration LP (Gilmore-Gomory), solved by the column generation shoal's
  own cost packer runs (``scaler.colgen.configuration_bound``), to the end.

Prints, over 200 mixes of 1-6 job shapes on 3-8 of 14 on-demand node shapes:
the mean and worst gap of ``binpack(..., prices=...)`` (the solver with its
default 200 ms of work; targets: mean <= 1 %, worst <= 5 %), of shoal's count packing
and of Toil 9.6's ``binPacking`` (price-blind, run in its own venv) priced the
same way; then the time of one cost packing at 50 job shapes x 10 node shapes
(target: median <= 200 ms) and which packer each pass used.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import highspy
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from shoal.scaler.binpack import binpack  # noqa: E402
from shoal.scaler.colgen import configuration_bound  # noqa: E402
from shoal.scaler.shape import Shape  # noqa: E402
from toil_oracle import TOIL_PYTHON, toil_binpack  # noqa: E402

GiB = 1024**3
# (cores, memory GiB, $/h): a realistic on-demand menu (c5, m5, r5 sizes).
MENU = [
    (2, 4, 0.085),
    (4, 8, 0.17),
    (8, 16, 0.34),
    (16, 32, 0.68),
    (36, 72, 1.53),
    (2, 8, 0.096),
    (4, 16, 0.192),
    (8, 32, 0.384),
    (16, 64, 0.768),
    (48, 192, 2.304),
    (2, 16, 0.126),
    (4, 32, 0.252),
    (8, 64, 0.504),
    (16, 128, 1.008),
]


def lp_bound(groups: dict[Shape, int], nodes: list[Shape], prices: dict[Shape, float]) -> float:
    pairs = [(g, s) for g in groups for s in nodes if not g.fits_in(s)]
    nx, ny = len(nodes), len(pairs)
    c = np.concatenate([[prices[s] for s in nodes], np.zeros(ny)])
    a_eq = np.zeros((len(groups), nx + ny))
    for i, g in enumerate(groups):
        for k, (gg, _) in enumerate(pairs):
            if gg == g:
                a_eq[i, nx + k] = 1
    b_eq = np.array([groups[g] for g in groups], dtype=float)
    rows = []
    for j, s in enumerate(nodes):
        for dim, unit in (("memory", GiB), ("cores", 1), ("disk", GiB)):  # GiB keeps HiGHS stable
            row = np.zeros(nx + ny)
            row[j] = -getattr(s, dim) / unit
            for k, (g, ss) in enumerate(pairs):
                if ss == s:
                    row[nx + k] = getattr(g, dim) / unit
            rows.append(row)
    # Whole nodes, fractional jobs, capacity pooled per node shape: still a lower bound
    # (any packing satisfies it), much tighter than the LP, where fractions come free.
    matrix = np.vstack([a_eq, np.array(rows)])
    lower = np.concatenate([b_eq, np.full(len(rows), -highspy.kHighsInf)])
    upper = np.concatenate([b_eq, np.zeros(len(rows))])
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = nx + ny, len(matrix)
    lp.col_cost_ = c
    lp.col_lower_ = np.zeros(nx + ny)
    lp.col_upper_ = np.full(nx + ny, highspy.kHighsInf)
    lp.row_lower_, lp.row_upper_ = lower, upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    rows_nz = [np.flatnonzero(row) for row in matrix]
    lp.a_matrix_.start_ = np.cumsum([0] + [len(nz) for nz in rows_nz]).astype(np.int32)
    lp.a_matrix_.index_ = np.concatenate(rows_nz).astype(np.int32)
    lp.a_matrix_.value_ = np.concatenate([row[nz] for row, nz in zip(matrix, rows_nz, strict=True)])
    lp.integrality_ = [highspy.HighsVarType.kInteger] * nx + [highspy.HighsVarType.kContinuous] * ny
    h = highspy._Highs()  # the core class: no banner (as scaler.colgen uses it)
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)  # HiGHS's thread pool is global; scaler.colgen uses one
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"pooled bound: {h.getModelStatus()}")
    return float(h.getInfo().objective_function_value)


def mixes(count: int, seed: int = 11) -> list[tuple[dict[Shape, int], list[Shape], dict]]:
    """Random mixes: 1-6 job shapes (5-400 jobs each) on 3-8 node shapes of the menu."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        menu = rng.sample(MENU, rng.randint(3, 8))
        nodes = [Shape(3600, m * GiB, c, 200 * GiB, False) for c, m, _ in menu]
        prices = {s: p for s, (_, _, p) in zip(nodes, menu, strict=True)}
        groups: dict[Shape, int] = {}
        for _ in range(rng.randint(1, 6)):
            shape = Shape(
                rng.choice([600, 3600]),
                rng.choice([0.5, 1, 2, 3, 4, 6, 8, 12]) * GiB,
                rng.choice([0.5, 1, 1, 2, 3, 4, 6]),
                5 * GiB,
                False,
            )
            if any(not shape.fits_in(n) for n in nodes):  # only demand the menu can serve
                groups[shape] = groups.get(shape, 0) + rng.randint(5, 400)
        if groups:
            out.append((groups, nodes, prices))
    return out


def large(count: int, seed: int = 5) -> list[tuple[dict[Shape, int], list[Shape], dict]]:
    """50 job shapes (5-400 jobs each) on 10 node shapes of the menu."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        menu = rng.sample(MENU, 10)
        nodes = [Shape(3600, m * GiB, c, 200 * GiB, False) for c, m, _ in menu]
        prices = {s: p for s, (_, _, p) in zip(nodes, menu, strict=True)}
        groups: dict[Shape, int] = {}
        while len(groups) < 50:
            shape = Shape(
                rng.choice([600, 3600]),
                rng.choice([0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24]) * rng.choice([0.9, 1, 1.1]) * GiB,
                rng.choice([0.5, 1, 2, 3, 4, 6, 8]),
                5 * GiB,
                False,
            )
            if any(not shape.fits_in(n) for n in nodes):
                groups[shape] = rng.randint(5, 400)
        out.append((groups, nodes, prices))
    return out


def toil_costs(cases: list[tuple[dict[Shape, int], list[Shape], dict]]) -> list[float] | None:
    """Toil's binPacking (price-blind) on each mix, priced per node shape."""
    if not TOIL_PYTHON.exists():
        return None

    def row(s: Shape) -> list:
        return [s.wallTime, s.memory, s.cores, s.disk, s.preemptible]

    payload = [
        {
            "nodes": [row(n) for n in nodes],
            "jobs": [row(g) for g, n in groups.items() for _ in range(n)],
            "target_time": 0,
        }
        for groups, nodes, _ in cases
    ]
    results = toil_binpack(payload)
    costs = []
    for (_, _, prices), result in zip(cases, results, strict=True):
        by_shape = {Shape(*shape): n for shape, n in result["counts"]}
        costs.append(sum(n * prices[s] for s, n in by_shape.items()))
    return costs


def gaps(costs: list[float], bounds: list[float]) -> tuple[float, float]:
    values = [c / b - 1 for c, b in zip(costs, bounds, strict=True)]
    return statistics.mean(values), max(values)


def main(instances: int = 200, timed: int = 20) -> int:
    cases = mixes(instances)
    bounds, cost, count = [], [], []
    for groups, nodes, prices in cases:
        pooled = lp_bound(groups, nodes, prices)
        bounds.append(max(pooled, configuration_bound(groups, nodes, 0, prices)))
        cost.append(binpack(groups, nodes, target_time=0, prices=prices).cost(prices))
        count.append(binpack(groups, nodes, target_time=0).cost(prices))
    mean, worst = gaps(cost, bounds)
    met = mean <= 0.01 and worst <= 0.05
    print(
        f"cost packing vs the configuration-LP bound over {len(cases)} random mixes: "
        f"mean gap {mean:.2%}, worst {worst:.2%} "
        f"(target mean <= 1%, worst <= 5%: {'met' if met else 'MISSED'})"
    )
    mean_count, worst_count = gaps(count, bounds)
    print(
        f"shoal's count packing, priced the same way: mean gap {mean_count:.2%}, "
        f"worst {worst_count:.2%}"
    )
    toil = toil_costs(cases)
    if toil is None:
        print(f"Toil's packing: skipped, the oracle is missing ({TOIL_PYTHON}; `make toil`)")
    else:
        mean_toil, worst_toil = gaps(toil, bounds)
        print(
            f"Toil 9.6's binPacking (price-blind), priced the same way: mean gap "
            f"{mean_toil:.2%}, worst {worst_toil:.2%}"
        )
    seconds, methods = [], []
    for groups, nodes, prices in large(timed):
        started = time.perf_counter()
        packing = binpack(groups, nodes, target_time=0, prices=prices)
        seconds.append(time.perf_counter() - started)
        methods.append(packing.method.split(",")[0])
    median = statistics.median(seconds)
    used = ", ".join(f"{n} x {m}" for m, n in sorted(Counter(methods).items()))
    print(
        f"one cost packing at 50 job shapes x 10 node shapes, {timed} mixes: median "
        f"{median * 1000:.0f} ms, worst {max(seconds) * 1000:.0f} ms "
        f"(target median <= 200 ms: {'met' if median <= 0.2 else 'MISSED'}); {used}"
    )
    return 0 if met and median <= 0.2 else 1


if __name__ == "__main__":
    sys.exit(main())
