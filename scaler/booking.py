"""Billing intervals: a node is paid for whole intervals of its ``wallTime``.

A node is *booked* for ``k`` intervals when it is opened: its jobs start by the target
time and end within ``k * wallTime`` (as Toil's reservations: only a job that starts
when the node does books more). The packers count billed node-intervals, not nodes: 13
back-to-back 300 s jobs on one node run into a second hour, which costs as much as a
second node, so a packer that opens nodes for one interval each holds 12 a node.

A node shape whose ``wallTime`` is 0 has no billing interval: it is booked once, for
as long as its jobs run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from shoal.scaler.resources import EPS, columns, covering, res, sequential
from shoal.scaler.shape import Shape

__all__ = ["Bin", "best_booking", "bins_for", "densest_booking", "first_booking", "per_column"]

MAX_LONGER = 4  # bookings per node shape beyond those the jobs need, for the cost packers


@dataclass(frozen=True, slots=True)
class Bin:
    """One node of ``shape`` booked for ``intervals`` billing intervals."""

    shape: Shape
    intervals: int
    horizon: float  # jobs end by then (inf: no billing interval)
    price: float  # intervals x the shape's price per interval


def first_booking(job: Shape, node: Shape) -> int:
    """Intervals a node must be booked for to run one ``job`` (at least one)."""
    if node.wallTime <= 0:
        return 1
    return covering(job.wallTime, node.wallTime)


def horizon(node: Shape, intervals: int) -> float:
    return math.inf if node.wallTime <= 0 else intervals * node.wallTime


def per_column(job: Shape, node: Shape, intervals: int, target_time: float) -> float:
    """Jobs one column of ``job`` runs on ``node`` booked for ``intervals`` (inf: no limit)."""
    end = horizon(node, intervals)
    if job.wallTime > end + EPS:
        return 0
    return sequential(0.0, end, job.wallTime, target_time)


def _longest(job: Shape, node: Shape, target_time: float) -> int:
    """Intervals a column of ``job`` needs to run every start it may make by the target."""
    first = first_booking(job, node)
    if node.wallTime <= 0 or job.wallTime <= 0:
        return first
    starts = sequential(0.0, math.inf, job.wallTime, target_time)
    return max(first, covering(starts * job.wallTime, node.wallTime))


def _bookings(job: Shape, node: Shape, target_time: float) -> Iterator[tuple[int, float]]:
    """Each booking (intervals) a node of ``node`` may take for jobs of ``job``, shortest
    first, with the jobs a node then holds (inf: no limit)."""
    width = columns(res(node), res(job))
    for k in range(first_booking(job, node), _longest(job, node, target_time) + 1):
        j = per_column(job, node, k, target_time)
        yield k, (math.inf if width == math.inf or j == math.inf else width * j)


@lru_cache(maxsize=8192)
def best_booking(job: Shape, node: Shape, n: int, target_time: float) -> tuple[int, float]:
    """For ``n`` jobs of one shape on empty nodes: the booking (intervals) and the jobs a
    node then holds, for the fewest billed intervals, then the fewest nodes. Remembered:
    the packers ask for the same few bookings over and over."""
    best: tuple[tuple[float, float], int, float] | None = None
    for k, per_node in _bookings(job, node, target_time):
        if per_node <= 0:
            continue
        nodes = 1 if per_node == math.inf else math.ceil(n / per_node)
        key = (nodes * k, nodes)
        if best is None or key < best[0]:
            best = (key, k, per_node)
    if best is None:
        return first_booking(job, node), 0
    return best[1], best[2]


@lru_cache(maxsize=8192)
def densest_booking(job: Shape, node: Shape, target_time: float) -> tuple[int, float]:
    """The booking (intervals) in which a node holds the most jobs of ``job`` (of those, the
    fewest intervals), and how many: what serves the most jobs at a node limit."""
    best: tuple[int, float] = (first_booking(job, node), 0)
    for k, per_node in _bookings(job, node, target_time):
        if per_node > best[1]:
            best = (k, per_node)
    return best


def bins_for(
    groups: Sequence[Shape],
    nodes: Sequence[Shape],
    target_time: float,
    prices: Mapping[Shape, float],
) -> list[Bin]:
    """The bookings worth considering per node shape for the cost packers: the intervals
    each group's job needs, and (a few) those its column needs for every start it may
    make by the target."""
    bins = []
    for s in nodes:
        fitting = [g for g in groups if not g.fits_in(s)]
        if not fitting:
            continue
        needed = {first_booking(g, s) for g in fitting}
        longer = {_longest(g, s, target_time) for g in fitting} - needed
        for k in sorted(needed | set(sorted(longer)[:MAX_LONGER])):
            bins.append(Bin(s, k, horizon(s, k), k * prices[s]))
    return bins
