"""Cost-aware packing against an LP lower bound, on random job mixes.

    make bench        (or: .venv/bin/python bench/cost_gap.py)

The bound relaxes "jobs all running at once" (target_time = 0):
whole nodes x_s of each node shape, fractional jobs y_gs of each job group on
each node shape it fits, every group placed, per node shape and dimension the jobs'
resources within x_s times its capacity; minimise sum(price_s * x_s). Solved with
HiGHS (MILP) through scipy.optimize.linprog. Any real packing costs at least that much.
The bound pools each node shape's capacity (a job may straddle two nodes), so part
of any gap is the bound's own slack, largest when jobs are big relative to nodes;
a configuration LP would be tighter. Prints the mean and max gap of shoal's
cost-aware packing, and of the count-minimising packing priced the same way.
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linprog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaler.binpack import binpack
from scaler.shape import Shape

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
    integrality = np.concatenate([np.ones(nx), np.zeros(ny)])
    res = linprog(
        c,
        integrality=integrality,
        A_ub=np.array(rows),
        b_ub=np.zeros(len(rows)),
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=(0, None),
        method="highs",
    )
    if not res.success:
        raise RuntimeError(res.message)
    return float(res.fun)


def main(instances: int = 200) -> int:
    rng = random.Random(11)
    cost_gaps, count_gaps = [], []
    for _ in range(instances):
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
        if not groups:
            continue
        bound = lp_bound(groups, nodes, prices)
        priced = binpack(groups, nodes, target_time=0, prices=prices).cost(prices)
        counted = binpack(groups, nodes, target_time=0).cost(prices)
        cost_gaps.append(priced / bound - 1)
        count_gaps.append(counted / bound - 1)
    print(
        f"cost-aware packing vs LP lower bound over {instances} random mixes: "
        f"mean gap {statistics.mean(cost_gaps):.2%}, max {max(cost_gaps):.2%} "
        f"(target: mean within 3%: {'met' if statistics.mean(cost_gaps) <= 0.03 else 'MISSED'})"
    )
    print(
        f"count-minimising packing, priced the same way: mean gap "
        f"{statistics.mean(count_gaps):.2%}, max {max(count_gaps):.2%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
