"""Near-optimal cost packing: column generation over node fillings, then an integer master.

The model (Gilmore and Gomory's configuration LP, with billing and node limits):

* a *bin* is one node shape booked for ``k`` billing intervals (its ``wallTime``,
  ``scaler.booking``): it costs ``k`` times the shape's price and holds jobs that
  start by ``target_time`` and end within ``k`` intervals;
* a *filling* of a bin runs ``a[g]`` side-by-side columns of job group ``g``
  within the node's memory, cores and disk; each column runs ``j[b][g]`` jobs of
  the group back to back, so the filling serves ``a[g] * j[b][g]`` jobs of it;
* the master LP buys fillings ``x`` at their bin's price so that every group's
  jobs are served, with at most ``max_nodes`` nodes of each shape; a job no
  filling serves costs a penalty above any node, so the LP is always feasible and
  the jobs that do not fit within the limits are the ones left out.

Column generation: the master's duals price a job of each group, and a filling
enters when it is worth more than its bin at those prices (plus the dual of the
shape's node limit). Each round looks for one in three steps, cheapest first:
greedy fillings of every bin; then every bin's knapsack LP relaxation (one
block-diagonal LP), whose fillings rounded down and topped up are tried and
whose optima bound what any filling is worth, which gives Farley's lower bound
on the LP; then an integer knapsack per bin (HiGHS's MIP, with a row that asks
for more worth than the bin's price: a filling, or the proof there is none).
Generation stops when the LP is within ``CG_GAP`` of its lower bound, which is
then a lower bound on the cost of any packing. The integer master is the same
model over the fillings generated, with whole ``x``, solved by HiGHS's MIP from
the LP's solution rounded up (always a packing).

Work, not time: the budget is counted in work units, a simplex iteration one, a
branch-and-bound node ``NODE_WORK``, a round of column generation ``ROUND_WORK``
per bin (the greedy pricing in Python). Every LP gets what is left as its
``simplex_iteration_limit``, every MIP as ``mip_max_nodes``, and each is charged
what HiGHS reports it did. With one thread HiGHS is deterministic, so a pass
that runs out of work stops at the same point on any machine under any load, and
the same snapshot gives the same plan (as ``scaler`` promises); nothing here
reads a clock. The budget is given in seconds of a reference machine
(``WORK_PER_SECOND``, the shared 2-core machine of bench/README.md; as Gurobi's
``WorkLimit``), so ``solver_time_limit`` keeps its meaning there: a slower
machine takes longer for the same plan. HiGHS is used through its Python
binding's core class, which prints nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import highspy
import numpy as np
from shoal.scaler.booking import Bin, bins_for, per_column
from shoal.scaler.resources import EPS, columns, res
from shoal.scaler.shape import Shape

__all__ = ["Filling", "Solution", "configuration_bound", "solve"]

GiB = 1024**3
MAX_ROUNDS = 2000
_PARTS = (1.0, 0.5)  # shares of what fits the first group of a greedy filling takes
GREEDY_FIRSTS = 3  # groups tried first in a greedy filling, densest first
GREEDY_KEEP = 3  # improving greedy fillings added per bin and round
MIP_GAP = 1e-3  # the integer master stops within 0.1 % of its own bound
PRICING_GAP = 0.02  # a pricing knapsack stops within 2 % of the best filling
# Work units (see the module docstring): a simplex iteration is one.
WORK_PER_SECOND = 12_000  # work units a second of budget buys (calibrated in bench/README.md)
NODE_WORK = 2  # a branch-and-bound node
ROUND_WORK = 1  # per bin, a round of column generation (greedy pricing in Python)
PRICING_WORK = 400  # what one pricing knapsack may take
KNAPSACK_WORK = 100  # a pricing knapsack's set-up and root, before its iterations and nodes
MASTER_SHARE = 1 / 3  # of the budget, kept for the integer master
DIVE_ROUND_UP = 0.5  # a dive rounds up at once every filling at least this far to whole
DIVE_STEP_WORK = 200  # what one step of the dive may take even when the budget is spent
MASTER_ROOT_WORK = 0.05  # x fillings squared: the integer master's root, before any node
CG_GAP = 0.002  # column generation stops with the LP within 0.2 % of its lower bound
_INF = highspy.kHighsInf
_MAX_INT = 2**31 - 1  # HiGHS's integer options are C ints
_OPTIMAL = highspy.HighsModelStatus.kOptimal
_NOTSET = highspy.HighsModelStatus.kNotset
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
    status: str  # "optimal", "work-limit" (the best found within it) or "none" (nothing found)
    work: float = 0.0  # work units spent (module docstring)
    jobs: dict[Bin, dict[Shape, int]] = field(default_factory=dict)


def _dims(s: Shape) -> tuple[float, float, float]:
    return (s.memory / GiB, s.cores, s.disk / GiB)  # GiB keeps HiGHS's numbers tame


class _Budget:
    """What is left of the solver's work, charged with what HiGHS reports it did (simplex
    iterations and branch-and-bound nodes) and with our own rounds. Column generation
    stops with ``MASTER_SHARE`` of it left, for the integer master."""

    def __init__(self, work: float) -> None:
        self.left = work
        self.reserve = work * MASTER_SHARE
        self.spent = 0.0

    def charge(self, work: float) -> None:
        self.left -= work
        self.spent += work

    def run(self, h: highspy._Highs, cap: float = math.inf) -> None:
        allowed = max(min(self.left, cap), 1.0)
        h.setOptionValue("simplex_iteration_limit", int(min(allowed, _MAX_INT)))
        h.setOptionValue("mip_max_nodes", int(min(max(allowed / NODE_WORK, 1.0), _MAX_INT)))
        if h.run() == highspy.HighsStatus.kError and h.getModelStatus() == _NOTSET:
            # HiGHS's thread pool is global: another user in the process started it with
            # more threads than ours asks for. Start it again for one, and retry.
            h.resetGlobalScheduler(True)
            h.run()
        info = h.getInfo()
        self.charge(info.simplex_iteration_count + NODE_WORK * max(info.mip_node_count, 0))

    @property
    def generation_over(self) -> bool:
        return self.left <= self.reserve


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


@lru_cache(maxsize=1 << 16)
def _cell(job: Shape, node: Shape, intervals: int, target_time: float) -> tuple[float, int]:
    """Jobs one column of ``job`` runs on ``node`` booked for ``intervals``, and the columns
    an empty node holds; (0, 0) when it holds none. Remembered: the passes of a daemon or a
    replay ask about the same few job and node shapes again and again."""
    if job.fits_in(node):
        return 0.0, 0
    j = per_column(job, node, intervals, target_time)
    w = columns(res(node), res(job))
    if j >= 1 and w >= 1:
        return j, int(w)
    return 0.0, 0


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
                j, w = _cell(job, bin_.shape, bin_.intervals, target_time)
                if w:
                    self.per[b, g], self.width[b, g] = j, w
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
        self.master = _quiet(presolve=False)  # warm-started LPs: presolve would cost more
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
        self.relaxation: highspy._Highs | None = None
        self.offsets: list[int] = []
        self.fits = [np.flatnonzero(self.upper[b]) for b in range(len(bins))]
        self.fit_list = [fit.tolist() for fit in self.fits]
        # every bin's groups one after another (the relaxation's columns), and their per
        self.flat_group = np.concatenate([np.zeros(0, dtype=int), *self.fits])
        self.flat_per = np.concatenate(
            [np.zeros(0), *(self.per[b, fit] for b, fit in enumerate(self.fits))]
        )
        # per bin, over the groups it holds: needs, dominant share of the node, upper bound
        self.static: list[tuple[list[tuple[float, float, float]], list[float], list[int]]] = []
        for b, bin_ in enumerate(bins):
            fit = np.flatnonzero(self.upper[b])
            room = _dims(bin_.shape)
            needs = [(float(r[0]), float(r[1]), float(r[2])) for r in self.need[fit]]
            shares = [
                max(max((x / h for x, h in zip(r, room, strict=True) if h > 0), default=0.0), EPS)
                for r in needs
            ]
            self.static.append((needs, shares, [int(u) for u in self.upper[b, fit]]))

    def add(self, b: int, a: Sequence[int]) -> bool:
        # whole numbers already (Python's or numpy's): a tuple of them hashes and compares
        # as one of ints would
        key = (b, tuple(a))
        if key in self.seen or not any(key[1]):
            return False
        self.seen.add(key)
        self.columns.append(key)
        rows = [g for g, v in enumerate(key[1]) if v]
        per = self.per[b]
        values = [key[1][g] * per[g] for g in rows]
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
        """One filling per group and bin: a node of that group alone. Added to the master
        in one call, in the order and with the values ``add`` would give them one by one
        (a fresh model: nothing is solved yet, so the LP is the same)."""
        ng = len(self.jobs)
        zeros = (0,) * ng
        costs, starts, index, values = [], [], [], []
        # rows as lists of Python floats: the same numbers, without numpy's per-item indexing
        uppers, pers = self.upper.tolist(), self.per.tolist()
        for b, bin_ in enumerate(self.bins):
            row = self.limit_row.get(bin_.shape)
            upper, per = uppers[b], pers[b]
            for g in self.fit_list[b]:
                k = int(upper[g])
                key = (b, (*zeros[:g], k, *zeros[g + 1 :]))
                if key in self.seen:
                    continue
                self.seen.add(key)
                self.columns.append(key)
                starts.append(len(index))
                costs.append(bin_.price)
                index.append(g)
                values.append(k * per[g])
                if row is not None:
                    index.append(row)
                    values.append(1.0)
        if costs:
            self.master.addCols(
                len(costs),
                np.array(costs, dtype=float),
                np.zeros(len(costs)),
                np.full(len(costs), _INF),
                len(index),
                np.array(starts, dtype=np.int32),
                np.array(index, dtype=np.int32),
                np.array(values, dtype=float),
            )

    def _worth(
        self, b: int, duals: np.ndarray, value: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, float] | None:
        """The groups bin ``b`` holds, their columns' worth at ``duals`` (``value``, when
        the caller has it: ``_values``), and the worth a filling must exceed; None when no
        filling of the bin can."""
        fit = self.fits[b]
        if not len(fit):
            return None
        if value is None:
            value = duals[: len(self.jobs)][fit] * self.per[b, fit]
        shape = self.bins[b].shape
        limit_dual = duals[self.limit_row[shape]] if shape in self.limit_row else 0.0
        threshold = self.bins[b].price - min(0.0, limit_dual)
        if value.max(initial=0.0) <= 0:
            return None
        if float(value @ self.upper[b, fit]) <= threshold * (1 + 1e-9) + 1e-9:
            return None  # even every column it may take is not worth the node
        return fit, value, threshold

    def greedy(self, b: int, duals: np.ndarray) -> list[list[int]]:
        """Good fillings of bin ``b`` (up to ``GREEDY_KEEP``, best first): groups by worth
        per dominant share of the node, the densest first, and each of the few densest
        first with only part of what fits (taking all of one may fill the cores and strand
        the memory)."""
        found = self._worth(b, duals)
        if found is None:
            return []
        fit, value, threshold = found
        need, share, upper = self.static[b]  # plain floats: this runs every bin, every round
        worth = value.tolist()
        dense = sorted(
            (i for i in range(len(fit)) if worth[i] > 0), key=lambda i: -worth[i] / share[i]
        )
        room0, room1, room2 = _dims(self.bins[b].shape)
        floor = threshold * (1 + 1e-7) + 1e-9
        found_fills: dict[tuple[int, ...], float] = {}
        for first, part in [(-1, 1.0)] + [
            (i, part) for i in dense[:GREEDY_FIRSTS] for part in _PARTS
        ]:
            left0, left1, left2 = room0, room1, room2
            a = [0] * len(fit)
            total = 0.0
            for i in [first, *dense] if first >= 0 else dense:
                if a[i]:
                    continue
                m, c, d = need[i]
                k = upper[i]
                if m > 0 and (q := int(left0 / m + EPS)) < k:
                    k = q
                if c > 0 and (q := int(left1 / c + EPS)) < k:
                    k = q
                if d > 0 and (q := int(left2 / d + EPS)) < k:
                    k = q
                if i == first and part < 1 and k > 1:
                    k = int(k * part)
                if k > 0:
                    a[i] = k
                    total += k * worth[i]
                    left0 -= k * m
                    left1 -= k * c
                    left2 -= k * d
            if total > floor:
                found_fills[tuple(a)] = total
        best = sorted(found_fills, key=lambda key: -found_fills[key])[:GREEDY_KEEP]
        out = []
        for a in best:
            column = [0] * len(self.jobs)
            for i, v in zip(fit, a, strict=True):
                column[int(i)] = v
            out.append(column)
        return out

    def relax(
        self, duals: np.ndarray, budget: _Budget
    ) -> tuple[float, list[tuple[int, list[int]]]]:
        """Every bin's knapsack LP relaxation at once (one block-diagonal LP, HiGHS's simplex
        warm from the last round): the largest ratio of what a filling of a bin can be
        worth to what it must be worth (Farley's bound divides the master's value by it;
        inf when the LP fails), and the relaxations' fillings rounded down and topped up
        greedily that are worth their bins."""
        if self.relaxation is None:
            self.relaxation = self._relaxation()
        # every bin's worths in one product, element by element as _worth's own
        values = duals[self.flat_group] * self.flat_per
        blocks = [
            self._worth(b, duals, values[self.offsets[b] : self.offsets[b] + len(fit)])
            for b, fit in enumerate(self.fits)
        ]
        h = self.relaxation
        cost = -values
        h.changeColsCost(len(cost), np.arange(len(cost), dtype=np.int32), cost)
        budget.run(h)
        if h.getModelStatus() != _OPTIMAL:
            return math.inf, []
        x = np.array(h.getSolution().col_value)
        ratio = 1.0
        columns = []
        for b, found in enumerate(blocks):
            if found is None:
                continue
            fit, value, threshold = found
            part = x[self.offsets[b] : self.offsets[b] + len(fit)]
            ratio = max(ratio, float(value @ part) / threshold if threshold > 0 else math.inf)
            a = self._top_up(b, value, np.floor(part + 1e-9).astype(int).tolist(), threshold)
            if a is not None:
                columns.append((b, a))
        return ratio, columns

    def _relaxation(self) -> highspy._Highs:
        h = _quiet(presolve=False)
        starts, index, values, lower, upper = [], [], [], [], []
        col = 0
        self.offsets = []
        for b, fit in enumerate(self.fits):
            self.offsets.append(col)
            room = _dims(self.bins[b].shape)
            for d in range(3):
                starts.append(len(index))
                index += range(col, col + len(fit))
                values += self.need[fit, d].tolist()
                lower.append(-_INF)
                upper.append(room[d])
            col += len(fit)
        lp = highspy.HighsLp()
        lp.num_col_ = col
        lp.num_row_ = len(starts)
        lp.col_cost_ = np.zeros(col)
        lp.col_lower_ = np.zeros(col)
        lp.col_upper_ = np.concatenate(
            [self.upper[b, fit].astype(float) for b, fit in enumerate(self.fits)]
        )
        lp.row_lower_ = np.array(lower)
        lp.row_upper_ = np.array(upper)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.array([*starts, len(index)], dtype=np.int32)
        lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
        lp.a_matrix_.value_ = np.array(values, dtype=float)
        h.passModel(lp)
        return h

    def _top_up(
        self, b: int, value: np.ndarray, a: list[int], threshold: float
    ) -> list[int] | None:
        need, _, upper = self.static[b]
        left0, left1, left2 = _dims(self.bins[b].shape)
        # Groups with no column change nothing (x - 0 * m is x), so only the others are
        # walked: the same numbers, in the same order, as over every group.
        taken = [i for i, k in enumerate(a) if k]
        for i in taken:
            k = a[i]
            m, c, d = need[i]
            left0, left1, left2 = left0 - k * m, left1 - k * c, left2 - k * d
        worth = value.tolist()
        for i in np.argsort(-value, kind="stable").tolist():  # as sorted() by -worth
            k = upper[i] - a[i]
            if k <= 0:
                continue
            m, c, d = need[i]
            if m > 0 and (q := int(left0 / m + EPS)) < k:
                k = q
            if c > 0 and (q := int(left1 / c + EPS)) < k:
                k = q
            if d > 0 and (q := int(left2 / d + EPS)) < k:
                k = q
            if k > 0:
                a[i] += k
                left0, left1, left2 = left0 - k * m, left1 - k * c, left2 - k * d
        total = 0  # the sum over every group: adding 0 * w leaves it as it is
        for i, k in enumerate(a):
            if k:
                total += k * worth[i]
        if total <= threshold * (1 + 1e-7) + 1e-9:
            return None
        column = [0] * len(self.jobs)
        for i, v in zip(self.fit_list[b], a, strict=True):
            column[i] = v
        return column

    def price(
        self, b: int, duals: np.ndarray, budget: _Budget, work_cap: float
    ) -> tuple[list[int] | None, bool]:
        """A filling of bin ``b`` worth more than the bin at ``duals`` (HiGHS's MIP, to
        within ``PRICING_GAP`` of the best), and whether none exists was proved."""
        found = self._worth(b, duals)
        if found is None:
            return None, True
        fit, value, threshold = found
        n = len(fit)
        h = self.knapsacks.get(b)
        if h is None:
            h = self.knapsacks[b] = _quiet(presolve=False)
            h.setOptionValue("mip_rel_gap", PRICING_GAP)
        # rows: memory, cores, disk within the node; worth above the bin's price
        lp = highspy.HighsLp()
        lp.num_col_ = n
        lp.num_row_ = 4
        lp.col_cost_ = -value
        lp.col_lower_ = np.zeros(n)
        lp.col_upper_ = self.upper[b, fit].astype(float)
        floor = threshold * (1 + 1e-6) + 1e-6  # above the MIP's feasibility tolerance
        lp.row_lower_ = np.array([-_INF, -_INF, -_INF, floor])
        lp.row_upper_ = np.append(np.array(_dims(self.bins[b].shape)) * (1 + 1e-12), _INF)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.arange(0, 4 * n + 1, n, dtype=np.int32)
        lp.a_matrix_.index_ = np.tile(np.arange(n, dtype=np.int32), 4)
        lp.a_matrix_.value_ = np.concatenate([self.need[fit].T.reshape(-1), value])
        lp.integrality_ = [_INT] * n
        h.passModel(lp)
        budget.charge(KNAPSACK_WORK)
        budget.run(h, cap=work_cap)
        if h.getModelStatus() == highspy.HighsModelStatus.kInfeasible:
            return None, True  # no filling is worth its bin
        if h.getInfo().primal_solution_status != highspy.kSolutionStatusFeasible:
            return None, False  # out of work before an answer
        a = [0] * len(self.jobs)
        for i, v in zip(fit, h.getSolution().col_value, strict=True):
            a[int(i)] = round(v)
        if float(value @ np.array([a[int(i)] for i in fit])) <= floor * (1 - 1e-9):
            return None, True  # met the worth row only within tolerance: nothing better
        return a, False

    def feasible(self, x: np.ndarray) -> bool:
        """Whether a master solution keeps to the node limits (coverage holds by slack)."""
        ng = len(self.jobs)
        nodes: dict[Shape, float] = {}
        for (b, _), v in zip(self.columns, x[ng:], strict=True):
            nodes[self.bins[b].shape] = nodes.get(self.bins[b].shape, 0.0) + v
        limits = self.limits
        return all(nodes.get(s, 0.0) <= limits[s] + 1e-9 for s in self.limited)

    def duals(self) -> np.ndarray:
        return np.array(self.master.getSolution().row_dual)

    def objective(self) -> float:
        return float(self.master.getInfo().objective_function_value)


def _generate(
    model: _Model, budget: _Budget, gap: float = CG_GAP, pricing_work: float = PRICING_WORK
) -> float | None:
    """Column generation until the LP is within ``gap`` of a proven lower bound; returns
    that bound, or None if the work for it ran out first (what is left then goes to the
    integer master).

    Each round prices every bin greedily; when that finds nothing, the knapsacks' LP
    relaxations bound what any filling is worth, which gives Farley's lower bound on the
    LP (its value over the largest worth-to-price ratio), and their rounded fillings are
    tried; only then HiGHS's MIP prices each bin exactly."""
    h = model.master
    for _ in range(MAX_ROUNDS):
        budget.charge(ROUND_WORK * len(model.bins))
        budget.run(h)
        if h.getModelStatus() != _OPTIMAL or budget.generation_over:
            return None
        duals = model.duals()
        added = False
        value = model.objective()
        ratio, columns = model.relax(duals, budget)
        for b, a in columns:
            added |= model.add(b, a)
        lower = value / ratio
        if value <= lower * (1 + gap) + 1e-9:
            return lower
        if added:
            continue
        for b in range(len(model.bins)):
            for a in model.greedy(b, duals):
                added |= model.add(b, a)
        if added:
            continue
        proved = True  # the knapsacks find a filling, or prove there is none
        for b in range(len(model.bins)):
            a, none = model.price(b, duals, budget, pricing_work)
            if a is not None:
                added |= model.add(b, a)
            proved &= none
            if budget.generation_over:
                return None
        if not added:
            return value if proved else None
    return None


def _dive(model: _Model, budget: _Budget) -> np.ndarray | None:
    """Whole numbers of each filling by diving: solve the master LP, round up the fillings
    whose fractional part is at least ``DIVE_ROUND_UP`` (else the one with the largest),
    solve again (warm, a few simplex iterations), until no value is fractional. Every
    round fixes one more filling at least, so it ends; rounding up keeps every group
    covered. None when
    a node limit or the work runs out first. Restores the LP's bounds."""
    h = model.master
    ng, count = len(model.jobs), len(model.columns)
    cols = np.arange(ng, ng + count, dtype=np.int32)
    x = None
    for _ in range(count + 1):
        budget.run(h, cap=max(budget.left, DIVE_STEP_WORK))
        if h.getModelStatus() != _OPTIMAL:
            x = None
            break
        x = np.array(h.getSolution().col_value)
        part = x[ng:] - np.floor(x[ng:] + 1e-9)
        part[part < 1e-6] = 0.0
        if not part.any():
            break
        up = np.flatnonzero(part >= DIVE_ROUND_UP)
        if not len(up):
            up = np.array([int(np.argmax(part))])
        lower = np.ceil(x[ng + up] - 1e-9)
        h.changeColsBounds(len(up), (ng + up).astype(np.int32), lower, np.full(len(up), _INF))
        x = None
    h.changeColsBounds(count, cols, np.zeros(count), np.full(count, _INF))
    return x


def _integer(model: _Model, budget: _Budget) -> tuple[np.ndarray | None, bool]:
    """Whole numbers of each filling: the cheaper of the LP's solution rounded up (which
    covers every group, when it keeps to the node limits) and a dive (``_dive``); then,
    when the work left pays for its root (``MASTER_ROOT_WORK`` per filling, which HiGHS
    cannot stop part way), HiGHS's MIP over the generated fillings started from that.
    Returns the solution (None if none was found) and whether it is proved optimal
    within ``MIP_GAP``."""
    h = model.master
    ng = len(model.jobs)
    count = len(model.columns)
    cost = np.array([*([model.penalty] * ng), *(model.bins[b].price for b, _ in model.columns)])
    lp = np.array(h.getSolution().col_value) if h.getModelStatus() == _OPTIMAL else None
    found = []
    if lp is not None and len(lp) == ng + count:
        rounded = np.concatenate([lp[:ng], np.ceil(lp[ng:] - 1e-9)])
        if model.feasible(rounded):
            found.append(rounded)
    dived = _dive(model, budget)
    if dived is not None:
        found.append(dived)
    best = min(found, key=lambda x: float(cost @ x), default=None)
    root = MASTER_ROOT_WORK * count**2
    if budget.left < root:
        return best, False
    h.changeColsIntegrality(
        count, np.arange(ng, ng + count, dtype=np.int32), np.array([_INT] * count)
    )
    h.setOptionValue("mip_rel_gap", MIP_GAP)
    h.setOptionValue("presolve", "on")
    if best is not None:
        solution = highspy.HighsSolution()
        solution.col_value = list(best)
        h.setSolution(solution)
    budget.charge(root)
    budget.run(h)
    if h.getInfo().primal_solution_status != highspy.kSolutionStatusFeasible:
        return best, False
    return np.array(h.getSolution().col_value), h.getModelStatus() == _OPTIMAL


def solve(
    groups: Mapping[Shape, int],
    nodes: Sequence[Shape],
    target_time: float,
    prices: Mapping[Shape, float],
    *,
    max_nodes: Mapping[Shape, int] | None = None,
    time_limit: float = 0.2,
) -> Solution:
    """Pack ``groups`` (every job fits some node shape and takes room and time) for the
    least cost within ``max_nodes``, with ``time_limit`` seconds' worth of work (about that
    long on the reference machine; the same packing on any machine)."""
    budget = _Budget(time_limit * WORK_PER_SECOND)
    bins = bins_for(list(groups), nodes, target_time, prices)
    model = _Model(groups, bins, target_time, max_nodes)
    model.seed()
    bound = _generate(model, budget)
    x, finished = _integer(model, budget)
    if x is None:
        return Solution([], dict(groups), math.inf, bound, "none", budget.spent)
    status = "optimal" if bound is not None and finished else "work-limit"
    return _solution(model, x, bound, status, budget.spent)


def _solution(
    model: _Model, x: np.ndarray, bound: float | None, status: str, work: float
) -> Solution:
    ng = len(model.jobs)
    left = {g: int(model.n[i]) for i, g in enumerate(model.jobs)}
    fillings: list[Filling] = []
    jobs: dict[Bin, dict[Shape, int]] = {}
    cost = 0.0
    # Serve each group from the fillings in order; nodes left with no job are not bought.
    for (b, a), value in zip(model.columns, x[ng:], strict=True):
        repeat = round(value)
        if repeat <= 0:
            continue
        bin_ = model.bins[b]
        holds = {model.jobs[g]: int(c * model.per[b, g]) for g, c in enumerate(a) if c}
        used = max(
            (min(repeat, math.ceil(left[job] / k)) for job, k in holds.items() if k), default=0
        )
        if not used:
            continue
        share = jobs.setdefault(bin_, {})
        for job, k in holds.items():
            took = min(left[job], used * k)
            if took:
                share[job] = share.get(job, 0) + took
                left[job] -= took
        cols = {model.jobs[g]: c for g, c in enumerate(a) if c}
        fillings.append(Filling(bin_, cols, used))
        cost += used * bin_.price
    left = {g: n for g, n in left.items() if n > 0}
    return Solution(fillings, left, cost, bound, status, work, jobs)


def configuration_bound(
    groups: Mapping[Shape, int],
    nodes: Sequence[Shape],
    target_time: float,
    prices: Mapping[Shape, float],
    *,
    time_limit: float = 600.0,
) -> float:
    """The configuration LP's optimum (no node limits): a lower bound on the cost of any
    packing. Column generation to the end, every knapsack priced exactly, with
    ``time_limit`` seconds' worth of work at the most."""
    work = time_limit * WORK_PER_SECOND
    budget = _Budget(work)
    budget.reserve = 0.0
    model = _Model(groups, bins_for(list(groups), nodes, target_time, prices), target_time, None)
    model.seed()
    bound = _generate(model, budget, gap=1e-9, pricing_work=work)
    if bound is None:
        raise RuntimeError("column generation did not finish within its work limit")
    return bound
