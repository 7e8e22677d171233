"""Cost-aware packing by node patterns: which jobs share a node, chosen by value per dollar.

A *pattern* is how one node of a shape is filled: ``a[g]`` side-by-side columns of
job group ``g`` (each column runs that group's jobs back to back, each starting by
``target_time``), within the node's memory, cores and disk. Mixing groups on a node
is where cost hides: a memory-heavy group and a core-heavy one fill one node that
each alone would leave half empty.

Every group has a *value*: what a column of it costs on its own, on the node shape
cheapest per column. A pattern's worth is the value it serves per dollar of node.
The packer repeats: fill one node of every shape with the remaining demand (a
greedy knapsack by value per dominant resource share, tried with each group
placed first), take the pattern worth the most, and open as many nodes of it as
the demand allows at once. That is the classic greedy for covering with
configurations; with few distinct job shapes it runs a handful of rounds.

``binpack`` uses it next to its per-group greedy and keeps the cheaper result;
``bench/cost_gap.py`` measures both against a configuration-LP lower bound.
``pattern_floor`` is what the patterns cost at least, found without packing: when the
greedy costs no more, binpack does not pack them (on a real log's single-type needs, most
packings). Fillings are remembered across calls (``FILLINGS``): the planner packs nearly
the same groups pass after pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import chain
from typing import NamedTuple

from shoal.scaler.booking import bins_for, per_column
from shoal.scaler.memo import Memo
from shoal.scaler.resources import EPS as _EPS
from shoal.scaler.resources import Res
from shoal.scaler.resources import columns as _columns
from shoal.scaler.resources import res as _res
from shoal.scaler.shape import Shape

__all__ = ["Pattern", "pattern_floor", "pattern_pack"]

_FIRSTS = 6  # groups tried first when filling a node, densest first
_PARTS = tuple(k / 8 for k in range(8, 0, -1))  # shares of what fits the first group takes
# Fillings already found (``_fill``), by everything a filling depends on: the priced
# heuristic packs nearly the same groups pass after pass, and most of its rounds fill a
# node as an earlier call's did.
FILLINGS: Memo[tuple[tuple[int, int], ...]] = Memo(4096)
# Fillings of more groups than this are not remembered: a key holds every group's need,
# demand, worth and width, so 4,096 keys of thousands of groups took hundreds of MB
# (review3: 733 MB at 4,000 groups), and such a queue rarely repeats anyway. At this cap
# the memo holds at most a few tens of MB.
_REMEMBERED_GROUPS = 32


def free_value(prices: Iterable[float]) -> float:
    """What a free node (price 0) is valued at when choosing among free ones: the least
    positive price (1 without one), so a node that holds more is worth more, as priced ones."""
    return min((p for p in prices if p > 0), default=1.0)


class Pattern(NamedTuple):
    """``repeat`` nodes of ``shape`` booked for ``intervals`` billing intervals, each running
    ``columns[job]`` columns of each job group (a group that takes no room or no time is
    listed with one column)."""

    shape: Shape
    columns: dict[Shape, int]
    repeat: int
    intervals: int = 1


def pattern_pack(
    groups: Mapping[Shape, int],
    nodes: list[Shape],
    target_time: float,
    prices: Mapping[Shape, float],
    max_nodes: Mapping[Shape, int] | None = None,
) -> list[Pattern]:
    """The nodes to open for ``groups`` (every job fits some node shape), as patterns.

    A node shape is offered booked for each number of billing intervals its jobs need
    (``scaler.booking``), at that many times its price, while it has fewer nodes than its
    ``max_nodes``: what no shape below its max holds is not served."""
    room = {s: (max_nodes or {}).get(s, math.inf) for s in nodes}
    patterns: list[Pattern] = []
    jobs: list[Shape] = []  # groups that take room and time, by index below
    left: list[int] = []  # jobs still to place, per group
    free: list[Shape] = []  # groups that take no room or no time: placed last
    for job, n in groups.items():
        if job.wallTime <= 0 or not any(_res(job)):
            free.append(job)
        else:
            jobs.append(job)
            left.append(n)
    needs = [_res(job) for job in jobs]
    bins = bins_for(jobs, nodes, target_time, prices)
    # per[b][g]: jobs a column of group g runs in bin b; width[b][g]: its columns (0: none)
    per = [[per_column(job, b.shape, b.intervals, target_time) for job in jobs] for b in bins]
    width = [
        [
            int(_columns(_res(b.shape), need)) if per[i][g] and not job.fits_in(b.shape) else 0
            for g, (job, need) in enumerate(zip(jobs, needs, strict=True))
        ]
        for i, b in enumerate(bins)
    ]
    # a job's value: what it costs in the bin cheapest per job when that holds only it. A
    # free bin (price 0) is valued at the least positive price, not at 0: a group of value 0
    # has no worth in any filling, so no pattern would ever serve it (its patterns still
    # score infinite worth per dollar below, so free bins are filled first).
    floor = free_value(b.price for b in bins)
    value = [
        min(
            (b.price or floor) / (width[i][g] * per[i][g])
            for i, b in enumerate(bins)
            if width[i][g]
        )
        for g in range(len(jobs))
    ]
    shares = [_shares(_res(b.shape), needs) for b in bins]
    # Per bin, what does not change from round to round: a column's worth, the groups in
    # _fill's order (densest first), and the columns each group still needs (updated below
    # for the groups a round serves, not recomputed for every group).
    worths = [[value[g] * per[i][g] for g in range(len(jobs))] for i in range(len(bins))]
    orders = [_densest(width[i], worths[i], shares[i]) for i in range(len(bins))]
    demands = [
        [_needed(n, per[i][g], width[i][g]) for g, n in enumerate(left)] for i in range(len(bins))
    ]
    while any(left):
        best: tuple[float, float, float, int, dict[int, int]] | None = None
        for i, b in enumerate(bins):
            if room[b.shape] < 1:
                continue
            demand = demands[i]
            pattern = _fill(_res(b.shape), width[i], demand, worths[i], needs, shares[i], orders[i])
            worth = sum(value[g] * min(left[g], a * per[i][g]) for g, a in pattern.items())
            if not worth:
                continue
            # free bins all score inf: of those, the one worth most a node (fewest nodes);
            # priced bins tie as before, the first (two worths a float's ulp apart may give
            # one score: the larger worth must not win those)
            score = worth / b.price if b.price > 0 else math.inf
            tie = worth if b.price <= 0 else 0.0
            if best is None or (score, -b.price, tie) > best[:3]:
                best = (score, -b.price, tie, i, pattern)
        if best is None:  # every shape that could serve what is left is at its max, or
            break  # what is left is worth nothing in any filling (a job of a byte): unserved
        _, _, _, i, pattern = best
        repeat = max(1, int(min(left[g] // (a * per[i][g]) for g, a in pattern.items())))
        b = bins[i]
        if repeat > room[b.shape]:
            repeat = int(room[b.shape])
        room[b.shape] -= repeat
        patterns.append(
            Pattern(b.shape, {jobs[g]: a for g, a in pattern.items()}, repeat, b.intervals)
        )
        for g, a in pattern.items():
            left[g] = max(0, left[g] - repeat * a * int(per[i][g]))
            for d, demand in enumerate(demands):
                demand[g] = _needed(left[g], per[d][g], width[d][g])
    for job in free:
        # Room on a node already opened serves it; otherwise the cheapest node that fits.
        fitting = [s for s in nodes if not job.fits_in(s)]
        host = next((p for p in patterns if p.shape in fitting), None)
        growing = [s for s in fitting if room[s] >= 1]
        if host is None and growing:
            shape = min(growing, key=lambda s: prices[s])
            patterns.append(Pattern(shape, {job: 1}, 1))
            room[shape] -= 1
        elif host is not None:
            host.columns[job] = 1
    return patterns


def pattern_floor(
    groups: Mapping[Shape, int],
    nodes: list[Shape],
    target_time: float,
    prices: Mapping[Shape, float],
) -> float:
    """What ``pattern_pack(groups, nodes, target_time, prices)`` costs at least (a little
    under: a float's slack), found without packing, so a caller whose packing already
    costs no more can skip it.

    A pattern holds its columns for the whole booking: in each dimension, a node of bin
    ``b`` gives ``room`` for ``b.price``, and a job of group ``g`` holds ``need`` of it for
    a column's share of the booking (one of ``per`` jobs), so it costs at least
    ``b.price * need / (room * per)`` there, and the cheapest such bin is a floor on
    what it costs in any pattern. Summed over the jobs, per dimension, the largest
    sum is a floor on the patterns' cost (jobs that take no room or no time count 0).

    With one node shape, whole numbers tighten it: a group's columns are booked for
    whole intervals, ``n * min(intervals / per)`` at least, so at least that rounded up;
    each such column-interval holds ``need / room`` of a node-interval, and the sum over
    the groups, rounded up, is whole node-intervals at the shape's price."""
    jobs = [job for job in groups if job.wallTime > 0 and any(_res(job))]
    bins = bins_for(jobs, nodes, target_time, prices)
    rooms = {s: _res(s) for s in nodes}
    price = prices[nodes[0]] if len(nodes) == 1 else 0.0
    totals = [0.0, 0.0, 0.0]
    for job in jobs:
        need = _res(job)
        cheapest = [math.inf, math.inf, math.inf]
        fewest = math.inf  # with one node shape: a column's bookings per job
        for b in bins:
            per = per_column(job, b.shape, b.intervals, target_time)
            if not per or job.fits_in(b.shape):
                continue
            fewest = min(fewest, b.intervals / per)
            room = rooms[b.shape]
            for x in range(3):
                if need[x] > 0 and room[x] > 0:
                    cheapest[x] = min(cheapest[x], b.price * need[x] / (room[x] * per))
        if price > 0 and fewest < math.inf:
            booked = math.ceil(groups[job] * fewest * (1 - 1e-9))  # whole column-intervals
            room = rooms[nodes[0]]
            for x in range(3):
                if need[x] > 0 and room[x] > 0:
                    totals[x] += booked * price * need[x] / room[x]
            continue
        for x in range(3):
            if cheapest[x] < math.inf:
                totals[x] += groups[job] * cheapest[x]
    floor = max(totals) * (1 - 1e-6)  # below a float's error and the fit's EPS slack
    return price * math.ceil(floor / price) if price > 0 else floor


def _needed(jobs: int, per: float, width: int) -> int:
    """The columns a bin still needs for ``jobs`` of a group, a column running ``per`` of
    them; none when the bin cannot hold the group (``width`` 0)."""
    return math.ceil(jobs / per) if width else 0


def _densest(width: list[int], value: list[float], shares: list[float]) -> list[int]:
    """The groups a node holds (``width``), by value per dominant share, densest first
    (a stable sort: ties in index order). Filtering it keeps that order, so it is sorted
    once per node shape, not once per filling."""
    return sorted(
        (g for g, w in enumerate(width) if w), key=lambda g: value[g] / shares[g], reverse=True
    )


@lru_cache(maxsize=1024)
def _parts(most: int) -> tuple[int, ...]:
    """How many of the first group a filling takes, for each share in ``_PARTS``."""
    return tuple(sorted({max(1, int(most * f)) for f in _PARTS}))


def _shares(room: Res, needs: list[Res]) -> list[float]:
    """Each group's dominant share of a node with ``room`` (at least ``_EPS``)."""
    return [
        max(max((w / h for w, h in zip(need, room, strict=True) if h > 0), default=0.0), _EPS)
        for need in needs
    ]


def _fill(
    room: Res,
    width: list[int],
    demand: list[int],
    value: list[float],
    needs: list[Res],
    shares: list[float],
    order: list[int] | None = None,
) -> dict[int, int]:
    """A good filling of one empty node (``room``) with the remaining demand: greedy by
    value per dominant share (``shares``, see ``_shares``), with each of the densest groups
    first, taking all or part of what fits of it; the most valuable filling wins.
    ``order``: ``_densest(width, value, shares)``, when the caller keeps it."""
    if order is None:
        order = _densest(width, value, shares)
    dense = [g for g in order if demand[g]]
    if not dense:
        return {}
    # The filling is a function of the room and, in ``dense``'s order, each group's need,
    # demand, worth and width; remembered by those, as positions in ``dense`` (a group's
    # index differs between calls).
    if len(dense) > _REMEMBERED_GROUPS:  # a key this long would hold too much memory
        found = _filling(room, width, demand, value, needs, dense)
    else:
        key = (room, tuple([(needs[g], demand[g], value[g], width[g]) for g in dense]))
        found = FILLINGS.get(key, lambda: _filling(room, width, demand, value, needs, dense))
    return {dense[i]: k for i, k in found}


def _filling(
    room: Res,
    width: list[int],
    demand: list[int],
    value: list[float],
    needs: list[Res],
    dense: list[int],
) -> tuple[tuple[int, int], ...]:
    """``_fill``'s filling of the groups ``dense`` (densest first, each with demand), as
    (position in ``dense``, columns) in the order the filling took them."""
    # least[i]: the least memory, cores and disk a group from dense[i] on needs (0: some
    # group needs none of it), so a filling stops once what is left holds none of them
    least: list[Res] = [(0.0, 0.0, 0.0)] * (len(dense) + 1)
    lm = lc = ld = math.inf
    least[-1] = (lm, lc, ld)
    for i in range(len(dense) - 1, -1, -1):
        m, c, d = needs[dense[i]]
        # min(m, lm) and so on, without a call per number
        lm, lc, ld = (lm if lm < m else m), (lc if lc < c else c), (ld if ld < d else d)
        least[i] = (lm, lc, ld)
    # Taking all one group can is myopic (it may fill the node's cores and strand its
    # memory), so the first group also takes only part of what fits, then the rest fill.
    starts: list[tuple[int, int]] = []
    for first in dense[:_FIRSTS]:
        starts += [(first, part) for part in _parts(min(demand[first], width[first]))]
    best: dict[int, int] = {}
    best_worth = 0.0
    for first, part in starts:
        pattern, worth = _complete(room, first, part, dense, least, demand, value, needs)
        if worth > best_worth + _EPS:
            best, best_worth = pattern, worth
    where = {g: i for i, g in enumerate(dense)}
    return tuple([(where[g], k) for g, k in best.items()])


def _complete(
    room: Res,
    first: int,
    part: int,
    order: list[int],
    least: list[Res],
    demand: list[int],
    value: list[float],
    needs: list[Res],
) -> tuple[dict[int, int], float]:
    """``part`` of group ``first`` (which fits), then as many of each group in ``order`` as
    still fit; it stops when nothing further fits (``least``, see ``_fill``)."""
    left_m, left_c, left_d = room
    pattern: dict[int, int] = {}
    worth = 0.0
    # ``first``, then ``order`` without it; ``least[i]`` is what the groups after the i-th
    # of ``[first, *order]`` need (the list itself is not built: it is walked only until
    # the node is full)
    for i, g in enumerate(chain((first,), order)):
        if i and g == first:
            continue
        m, c, d = needs[g]
        k = part if not i else demand[g]
        if m > 0 and (q := math.floor(left_m / m + _EPS)) < k:
            k = q
        if c > 0 and (q := math.floor(left_c / c + _EPS)) < k:
            k = q
        if d > 0 and (q := math.floor(left_d / d + _EPS)) < k:
            k = q
        if k > 0:
            pattern[g] = k
            worth += value[g] * k
            left_m, left_c, left_d = left_m - k * m, left_c - k * c, left_d - k * d
            # nothing further fits: in some dimension every group left needs more than is
            # left (what the lines above would find for each of them)
            lm, lc, ld = least[i]
            if (
                (lm > 0 and left_m / lm + _EPS < 1)
                or (lc > 0 and left_c / lc + _EPS < 1)
                or (ld > 0 and left_d / ld + _EPS < 1)
            ):
                break
    return pattern, worth
