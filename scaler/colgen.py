"""Near-optimal cost packing: column generation over node fillings, then an integer master.

The model (Gilmore and Gomory's configuration LP, with billing and node limits):

* a *bin* is one node shape booked for ``k`` billing intervals (its ``wallTime``):
  it costs ``k`` times the shape's price and holds jobs that start by
  ``target_time`` and end within ``k`` intervals;
* a *filling* of a bin runs ``a[g]`` side-by-side columns of job group ``g``
  within the node's memory, cores and disk; each column runs ``j[b][g]`` jobs of
  the group back to back, so the filling serves ``a[g] * j[b][g]`` jobs of it;
* the master LP buys fillings ``x`` at their bin's price so that every group's
  jobs are served, with at most ``max_nodes`` nodes of each shape; a job no
  filling serves costs a penalty above any node, so the LP is always feasible and
  the jobs that do not fit within the limits are the ones left out.

Column generation: the master's duals price a job of each group; for every bin an
integer knapsack (HiGHS's MIP on three rows) finds the filling worth most at those
prices, and enters when it is worth more than its bin (plus the dual of the
shape's node limit). When no bin has such a filling, the LP optimum is the
configuration-LP lower bound on the cost of any packing. The integer master is the
same model over the fillings generated, with whole ``x``, solved by HiGHS's MIP from
the best packing known so far.

Time: every HiGHS call gets what is left of the budget as its ``time_limit``, and
the budget is charged with HiGHS's own run time, so nothing here reads a clock.
HiGHS is used through its Python binding's core class, which prints nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np
from shoal.scaler.booking import Bin, bins_for, per_column
from shoal.scaler.resources import EPS, columns, res
from shoal.scaler.shape import Shape

__all__ = ["Filling", "Solution", "configuration_bound", "solve"]

GiB = 1024**3
MAX_ROUNDS = 2000
_PARTS = (1.0, 0.75, 0.5, 0.25)  # shares of what fits the first group of a greedy filling takes
MIP_GAP = 1e-3  # the integer master stops within 0.1 % of its own bound
_INF = highspy.kHighsInf
_OPTIMAL = highspy.HighsModelStatus.kOptimal
_INT = highspy.HighsVarType.kInteger
_CONT = highspy.HighsVarType.kContinuous


@dataclass(frozen=True, slots=True)
class Filling:
    """``repeat`` nodes of ``bin``, each running ``columns[job]`` columns of each group."""

    bin: Bin
    columns: dict[Shape, int]
    repeat: int


@dataclass(slots=True)
class Solution:
    fillings: list[Filling]
    left: dict[Shape, int]  # jobs no node within the limits serves
    cost: float
    bound: float | None  # the configuration-LP bound, when column generation finished
    status: str  # "optimal", "time-limit" (the best found in time) or "none" (nothing found)
    seconds: float = 0.0  # HiGHS's run time
    jobs: dict[Bin, dict[Shape, int]] = field(default_factory=dict)


def _dims(s: Shape) -> tuple[float, float, float]:
    return (s.memory / GiB, s.cores, s.disk / GiB)  # GiB keeps HiGHS's numbers tame


class _Budget:
    """What is left of the solver's time, charged with HiGHS's reported run times."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds
        self.spent = 0.0

    def run(self, h: highspy._Highs) -> None:
        h.setOptionValue("time_limit", max(self.left, 1e-3))
        before = h.getRunTime()
        h.run()
        used = max(0.0, h.getRunTime() - before)
        self.left -= used
        self.spent += used

    @property
    def out(self) -> bool:
        return self.left <= 0


def _quiet(presolve: bool = True) -> highspy._Highs:
    h = highspy._Highs()  # the binding's core class: no banner, no Python callbacks
    h.setOptionValue("output_flag", False)
    # One thread, and no feasibility-jump heuristic: on models this small both cost
    # milliseconds a solve (measured: a 50-item knapsack, 7 ms -> 0.6 ms).
    h.setOptionValue("threads", 1)
    h.setOptionValue("mip_heuristic_run_feasibility_jump", False)
    if not presolve:
        h.setOptionValue("presolve", "off")
    return h


class _Model:
    """The master LP/MIP and one knapsack per bin, built once and changed in place."""

    def __init__(
        self,
        groups: Mapping[Shape, int],
        bins: list[Bin],
        target_time: float,
        max_nodes: Mapping[Shape, int] | None,
    ) -> None:
        self.jobs = list(groups)
        self.n = np.array([groups[g] for g in self.jobs], dtype=float)
        self.bins = bins
        self.need = np.array([_dims(g) for g in self.jobs]).reshape(len(self.jobs), 3)
        nb, ng = len(bins), len(self.jobs)
        self.per = np.zeros((nb, ng))  # jobs one column runs
        self.width = np.zeros((nb, ng), dtype=int)  # columns an empty node holds
        for b, bin_ in enumerate(bins):
            for g, job in enumerate(self.jobs):
                if job.fits_in(bin_.shape):
                    continue
                j = per_column(job, bin_.shape, bin_.intervals, target_time)
                w = columns(res(bin_.shape), res(job))
                if j >= 1 and w >= 1:
                    self.per[b, g], self.width[b, g] = j, int(w)
        # no more columns of a group than its jobs need
        self.upper = np.where(
            self.width > 0, np.minimum(self.width, np.ceil(self.n / np.maximum(self.per, 1))), 0
        )
        shapes = list(dict.fromkeys(b.shape for b in bins))
        limits = self.limits = dict(max_nodes or {})
        self.limited = [s for s in shapes if s in limits]
        self.limit_row = {s: ng + i for i, s in enumerate(self.limited)}
        # a job left out costs more than any node that could serve it alone
        self.penalty = 10 * max((b.price for b in bins), default=1.0) + 1.0
        self.columns: list[tuple[int, tuple[int, ...]]] = []  # (bin, columns per group)
        self.seen: set[tuple[int, tuple[int, ...]]] = set()
        self.master = _quiet()
        h = self.master
        lower = np.concatenate([self.n, np.full(len(self.limited), -_INF)])
        upper = np.concatenate(
            [np.full(ng, _INF), np.array([float(limits[s]) for s in self.limited])]
        )
        h.addRows(
            len(lower),
            lower,
            upper,
            0,
            np.zeros(len(lower), dtype=np.int32),
            np.array([], dtype=np.int32),
            np.array([]),
        )
        h.addCols(
            ng,
            np.full(ng, self.penalty),
            np.zeros(ng),
            np.full(ng, _INF),
            ng,
            np.arange(ng, dtype=np.int32),
            np.arange(ng, dtype=np.int32),
            np.ones(ng),
        )
        self.knapsacks: dict[int, highspy._Highs] = {}

    def add(self, b: int, a: Sequence[int]) -> bool:
        key = (b, tuple(int(v) for v in a))
        if key in self.seen or not any(key[1]):
            return False
        self.seen.add(key)
        self.columns.append(key)
        rows = [g for g, v in enumerate(key[1]) if v]
        values = [key[1][g] * self.per[b, g] for g in rows]
        shape = self.bins[b].shape
        if shape in self.limit_row:
            rows.append(self.limit_row[shape])
            values.append(1.0)
        self.master.addCol(
            self.bins[b].price,
            0.0,
            _INF,
            len(rows),
            np.array(rows, dtype=np.int32),
            np.array(values, dtype=float),
        )
        return True

    def seed(self) -> None:
        """One filling per group and bin: a node of that group alone."""
        for b in range(len(self.bins)):
            for g in range(len(self.jobs)):
                if self.upper[b, g]:
                    a = [0] * len(self.jobs)
                    a[g] = int(self.upper[b, g])
                    self.add(b, a)

    def _worth(self, b: int, duals: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
        """The groups bin ``b`` holds, their columns' worth at ``duals``, and the worth a
        filling must exceed; None when no filling of the bin can."""
        fit = np.flatnonzero(self.upper[b])
        if not len(fit):
            return None
        value = duals[: len(self.jobs)][fit] * self.per[b, fit]
        shape = self.bins[b].shape
        limit_dual = duals[self.limit_row[shape]] if shape in self.limit_row else 0.0
        threshold = self.bins[b].price - min(0.0, limit_dual)
        if value.max(initial=0.0) <= 0:
            return None
        if float(value @ self.upper[b, fit]) <= threshold * (1 + 1e-9) + 1e-9:
            return None  # even every column it may take is not worth the node
        return fit, value, threshold

    def greedy(self, b: int, duals: np.ndarray) -> list[int] | None:
        """A good filling of bin ``b`` by worth per dominant share, several ways."""
        found = self._worth(b, duals)
        if found is None:
            return None
        fit, value, threshold = found
        room = np.array(_dims(self.bins[b].shape))
        need = self.need[fit]
        share = np.max(np.divide(need, room, out=np.zeros_like(need), where=room > 0), axis=1)
        density = value / np.maximum(share, EPS)
        dense = [int(i) for i in np.argsort(-density) if value[i] > 0]
        upper = self.upper[b, fit]
        best, best_worth = None, threshold * (1 + 1e-7) + 1e-9
        # Taking all of the densest group may fill the cores and strand the memory, so
        # the first group also takes only part of what fits before the rest fill.
        starts: list[tuple[int, float]] = [(-1, 1.0)]
        for first in dense[:4]:
            starts += [(first, part) for part in _PARTS]
        for first, part in starts:
            left = room.copy()
            a = np.zeros(len(fit), dtype=int)
            order = dense if first < 0 else [first, *(i for i in dense if i != first)]
            for i in order:
                r = need[i]
                k = int(upper[i])
                for d in range(3):
                    if r[d] > 0:
                        k = min(k, math.floor(left[d] / r[d] + EPS))
                if i == first:
                    k = max(1, int(k * part)) if k > 0 else 0
                if k > 0:
                    a[i] = k
                    left -= k * r
            worth = float(value @ a)
            if worth > best_worth:
                best, best_worth = a, worth
        if best is None:
            return None
        out = [0] * len(self.jobs)
        for i, v in zip(fit, best, strict=True):
            out[int(i)] = int(v)
        return out

    def price(self, b: int, duals: np.ndarray, budget: _Budget) -> list[int] | None:
        """The filling of bin ``b`` worth most at ``duals``, if worth more than the bin."""
        found = self._worth(b, duals)
        if found is None:
            return None
        fit, value, threshold = found
        shape = self.bins[b].shape
        h = self.knapsacks.get(b)
        if h is None:
            h = self.knapsacks[b] = _quiet(presolve=False)
            lp = highspy.HighsLp()
            lp.num_col_ = len(fit)
            lp.num_row_ = 3
            lp.col_cost_ = -value
            lp.col_lower_ = np.zeros(len(fit))
            lp.col_upper_ = self.upper[b, fit].astype(float)
            lp.row_lower_ = np.full(3, -_INF)
            lp.row_upper_ = np.array(_dims(shape)) * (1 + 1e-12)
            lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
            lp.a_matrix_.start_ = np.arange(0, 3 * len(fit) + 1, len(fit), dtype=np.int32)
            lp.a_matrix_.index_ = np.tile(np.arange(len(fit), dtype=np.int32), 3)
            lp.a_matrix_.value_ = self.need[fit].T.reshape(-1).astype(float)
            lp.integrality_ = [_INT] * len(fit)
            h.passModel(lp)
        else:
            h.changeColsCost(len(fit), np.arange(len(fit), dtype=np.int32), -value)
        budget.run(h)
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        worth = -h.getInfo().objective_function_value
        if worth <= threshold * (1 + 1e-7) + 1e-9:
            return None
        a = [0] * len(self.jobs)
        for i, v in zip(fit, h.getSolution().col_value, strict=True):
            a[int(i)] = round(v)
        return a

    def feasible(self, x: np.ndarray) -> bool:
        """Whether a master solution keeps to the node limits (coverage holds by slack)."""
        ng = len(self.jobs)
        nodes: dict[Shape, float] = {}
        for (b, _), v in zip(self.columns, x[ng:], strict=True):
            nodes[self.bins[b].shape] = nodes.get(self.bins[b].shape, 0.0) + v
        limits = self.limits
        return all(nodes.get(s, 0.0) <= limits[s] + 1e-9 for s in self.limited)

    def cost(self, x: np.ndarray) -> float:
        ng = len(self.jobs)
        prices = np.array([self.bins[b].price for b, _ in self.columns])
        return float(self.penalty * x[:ng].sum() + prices @ x[ng:])

    def duals(self) -> np.ndarray:
        return np.array(self.master.getSolution().row_dual)

    def objective(self) -> float:
        return float(self.master.getInfo().objective_function_value)


def _generate(model: _Model, budget: _Budget) -> float | None:
    """Column generation to the LP optimum; returns it, or None if time ran out first."""
    h = model.master
    for _ in range(MAX_ROUNDS):
        budget.run(h)
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal or budget.out:
            return None
        duals = model.duals()
        added = False
        for b in range(len(model.bins)):  # cheap fillings first
            a = model.greedy(b, duals)
            if a is not None:
                added |= model.add(b, a)
        if added:
            continue
        for b in range(len(model.bins)):  # none: the exact knapsacks prove it, or find one
            a = model.price(b, duals, budget)
            if budget.out:
                return None
            if a is not None:
                added |= model.add(b, a)
        if not added:
            return model.objective()
    return None


def _integer(model: _Model, budget: _Budget, start: Sequence[float] | None) -> np.ndarray | None:
    """Whole numbers of each filling: HiGHS's MIP over the generated fillings, started
    from ``start`` or the LP's solution rounded up (which covers every group)."""
    h = model.master
    ng = len(model.jobs)
    count = len(model.columns)
    lp = np.array(h.getSolution().col_value) if h.getModelStatus() == _OPTIMAL else None
    h.changeColsIntegrality(
        count, np.arange(ng, ng + count, dtype=np.int32), np.array([_INT] * count)
    )
    h.setOptionValue("mip_rel_gap", MIP_GAP)
    candidates = [] if start is None else [np.array(start)]
    if lp is not None and len(lp) == ng + count:
        rounded = np.concatenate([lp[:ng], np.ceil(lp[ng:] - 1e-9)])
        candidates.append(rounded)
    feasible = [x for x in candidates if model.feasible(x)]
    if feasible:
        solution = highspy.HighsSolution()
        solution.col_value = list(min(feasible, key=model.cost))
        h.setSolution(solution)
    budget.run(h)
    if h.getInfo().primal_solution_status != highspy.kSolutionStatusFeasible:
        return None
    return np.array(h.getSolution().col_value)


def _start(model: _Model, fillings: Sequence[tuple[int, Sequence[int], int]]) -> list[float]:
    """A full master solution from known fillings (bin, columns, repeat): x and the slacks."""
    ng = len(model.jobs)
    x = [0.0] * (ng + len(model.columns))
    index = {key: ng + i for i, key in enumerate(model.columns)}
    served = np.zeros(ng)
    for b, a, repeat in fillings:
        key = (b, tuple(int(v) for v in a))
        if key in index:
            x[index[key]] += repeat
            served += np.array(key[1]) * model.per[b] * repeat
    for g in range(ng):
        x[g] = max(0.0, model.n[g] - served[g])
    return x


def solve(
    groups: Mapping[Shape, int],
    nodes: Sequence[Shape],
    target_time: float,
    prices: Mapping[Shape, float],
    *,
    max_nodes: Mapping[Shape, int] | None = None,
    time_limit: float = 0.2,
    known: Sequence[tuple[Shape, int, Mapping[Shape, int], int]] = (),
) -> Solution:
    """Pack ``groups`` (every job fits some node shape and takes room and time) for the
    least cost within ``max_nodes``. ``known``: a packing to start from, as fillings
    (node shape, intervals, columns per group, repeat)."""
    budget = _Budget(time_limit)
    bins = bins_for(list(groups), nodes, target_time, prices)
    model = _Model(groups, bins, target_time, max_nodes)
    model.seed()
    where = {(b.shape, b.intervals): i for i, b in enumerate(bins)}
    seeded = []
    for shape, intervals, cols, repeat in known:
        b = where.get((shape, intervals))
        if b is None:
            continue
        a = [int(cols.get(g, 0)) for g in model.jobs]
        model.add(b, a)
        seeded.append((b, a, repeat))
    bound = _generate(model, budget)
    start = _start(model, seeded) if seeded else None
    x = _integer(model, budget, start)
    status = "optimal" if bound is not None and not budget.out else "time-limit"
    if x is None:
        return Solution([], dict(groups), math.inf, bound, "none", budget.spent)
    return _solution(model, x, bound, status, budget.spent)


def _solution(
    model: _Model, x: np.ndarray, bound: float | None, status: str, seconds: float
) -> Solution:
    ng = len(model.jobs)
    left = {g: int(model.n[i]) for i, g in enumerate(model.jobs)}
    fillings: list[Filling] = []
    jobs: dict[Bin, dict[Shape, int]] = {}
    cost = 0.0
    # Serve each group from the fillings in order; a node left with no job is not bought.
    for (b, a), value in zip(model.columns, x[ng:], strict=True):
        repeat = round(value)
        if repeat <= 0:
            continue
        bin_ = model.bins[b]
        used = 0
        for _ in range(repeat):
            took = {}
            for g, cols in enumerate(a):
                job = model.jobs[g]
                k = min(left[job], int(cols * model.per[b, g]))
                if k:
                    took[job] = k
                    left[job] -= k
            if not took:
                break
            used += 1
            share = jobs.setdefault(bin_, {})
            for job, k in took.items():
                share[job] = share.get(job, 0) + k
        if used:
            cols = {model.jobs[g]: c for g, c in enumerate(a) if c}
            fillings.append(Filling(bin_, cols, used))
            cost += used * bin_.price
    left = {g: n for g, n in left.items() if n > 0}
    return Solution(fillings, left, cost, bound, status, seconds, jobs)


def configuration_bound(
    groups: Mapping[Shape, int],
    nodes: Sequence[Shape],
    target_time: float,
    prices: Mapping[Shape, float],
    *,
    time_limit: float = 600.0,
) -> float:
    """The configuration LP's optimum: a lower bound on any packing's cost (no limits)."""
    budget = _Budget(time_limit)
    model = _Model(groups, bins_for(list(groups), nodes, target_time, prices), target_time, None)
    model.seed()
    bound = _generate(model, budget)
    if bound is None:
        raise RuntimeError("column generation did not finish within its time limit")
    return bound
