"""Job-by-job packing onto exact free-resource timelines: the small-input check on binpack.

Each opened node keeps its free resources as a step function of time: ``times[i]``
is where segment ``i`` starts and ``free[i]`` what is free from then until the next
breakpoint (the last segment runs for good). A job of duration ``d`` goes to the
first opened node, and there to the earliest breakpoint ``t <= target_time``, where
it fits on every segment that ``[t, t + d)`` touches; if none takes it, a node is
opened and the job starts at 0. Jobs come largest first, as in ``binpack``.

This is exact where the lane bookkeeping of ``scaler.binpack`` is not (a lane
forgets some of the room the columns leave), but it costs a pass over the
breakpoints per job, so ``binpack`` only runs it on small inputs, where it is a
few milliseconds, and keeps whichever count is smaller.

Two facts keep it linear for a group of identical jobs: free room only shrinks,
so a node that refused a job refuses every later job of the same shape, and a
start time that failed fails again; each group resumes where the last job went.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence

from shoal.scaler.resources import EPS as _EPS
from shoal.scaler.resources import Res, covering
from shoal.scaler.shape import Shape

__all__ = ["billed_intervals", "timeline_bill", "timeline_count", "timeline_pack"]


class _Node:
    __slots__ = ("end", "free", "interval", "jobs", "last", "latest", "peak", "times")

    def __init__(self, room: Res, interval: float, latest: float) -> None:
        self.times: list[float] = [0.0]
        self.free: list[Res] = [room]
        self.jobs: list[tuple[Shape, float]] = []  # (job, start), for callers that check
        self.last = 0.0  # when its last job ends (a zero-length job's 0 changes nothing)
        # With a billing interval, the node is booked for whole intervals: only a job
        # starting at 0 books more, and a later one must end within what is booked.
        self.interval = interval
        self.end = interval if interval > 0 else math.inf
        # The most of each resource free in any segment where a job may start (one that
        # starts by ``latest``): a job that needs more of one cannot start on this node.
        # (``earliest`` is then None for it, whatever its duration).
        self.latest = latest
        self.peak: Res = room

    def earliest(self, need: Res, duration: float, start: float, latest: float) -> float | None:
        """The earliest breakpoint in [start, latest] where the job fits throughout, or None."""
        times, free = self.times, self.free
        i = bisect_left(times, start - _EPS)
        n = len(times)
        while i < n and times[i] <= latest + _EPS:
            t = times[i]
            end = t + duration
            if t > 0 and end > self.end + _EPS:
                return None  # later starts end later still
            k = i
            while True:
                m, c, d = free[k]
                if m + _EPS < need[0] or c + _EPS < need[1] or d + _EPS < need[2]:
                    break
                k += 1
                if k == n or times[k] >= end - _EPS:
                    return t
            # Every start up to segment k overlaps it, so the next try is just after it.
            i = k + 1
        return None

    def take(self, job: Shape, need: Res, start: float, duration: float) -> None:
        self.jobs.append((job, start))
        if start <= 0 and duration > self.end:
            self.end = covering(duration, self.interval) * self.interval
        times, free = self.times, self.free
        # make start and end breakpoints (a new one splits the segment it falls in); written
        # out twice, not as a method: this is the timeline packer's hottest path, and the two
        # calls cost 2% of binpack's time on the planner's inputs
        first = bisect_right(times, start + _EPS) - 1
        if abs(times[first] - start) > _EPS:
            first += 1
            times.insert(first, start)
            free.insert(first, free[first - 1])
        end = start + duration
        if end > self.last:
            self.last = end
        last = bisect_right(times, end + _EPS) - 1
        if abs(times[last] - end) > _EPS:
            last += 1
            times.insert(last, end)
            free.insert(last, free[last - 1])
        # The peak is a max over the segments, and only the job's segments change, each
        # down (the two split off repeat a value already there): unless one of them held
        # the peak before in a resource the job takes, the peak stays; else recount it.
        nm, nc, nd = need
        pm = self.peak[0] if nm > 0 else math.inf
        pc = self.peak[1] if nc > 0 else math.inf
        pd = self.peak[2] if nd > 0 else math.inf
        stale = nm < 0 or nc < 0 or nd < 0
        for k in range(first, last):
            m, c, d = free[k]
            if m >= pm or c >= pc or d >= pd:
                stale = True
            free[k] = (m - nm, c - nc, d - nd)
        if not stale:
            return
        limit = self.latest + _EPS
        pm, pc, pd = free[0]
        for k in range(1, len(times)):
            if times[k] > limit:
                break
            m, c, d = free[k]
            if m > pm:
                pm = m
            if c > pc:
                pc = c
            if d > pd:
                pd = d
        self.peak = (pm, pc, pd)


def timeline_count(
    groups: list[tuple[Shape, int]], node: Shape, target_time: float, booked: bool = False
) -> int:
    """Nodes of shape ``node`` that ``groups`` (job shape, count; largest first) need.

    Every job must fit an empty ``node``; the caller has checked. ``booked``: see
    ``timeline_pack``."""
    return len(timeline_pack(groups, node, target_time, booked))


def billed_intervals(schedule: list[list[tuple[Shape, float]]], node: Shape) -> int:
    """Billing intervals (the node's ``wallTime``) the packed nodes run: each until its
    last job ends, at least one."""
    return _billed(
        (max((start + job.wallTime for job, start in jobs), default=0.0) for jobs in schedule),
        node,
    )


def _billed(ends: Iterable[float], node: Shape) -> int:
    if node.wallTime <= 0:
        return sum(1 for _ in ends)
    return sum(covering(end, node.wallTime) for end in ends)


def timeline_bill(
    groups: list[tuple[Shape, int]],
    node: Shape,
    target_time: float,
    booked: bool = False,
    pinned: Sequence[tuple[Shape, int]] = (),
) -> tuple[int, int]:
    """(billed intervals, nodes) of ``timeline_pack``'s packing, as ``billed_intervals``
    counts them, without the job lists: what ``binpack`` compares."""
    nodes = _pack(groups, node, target_time, booked, pinned)
    return _billed((n.last for n in nodes), node), len(nodes)


def timeline_pack(
    groups: list[tuple[Shape, int]],
    node: Shape,
    target_time: float,
    booked: bool = False,
    pinned: Sequence[tuple[Shape, int]] = (),
) -> list[list[tuple[Shape, float]]]:
    """The packing itself: per opened node, its jobs with their start times.

    ``booked``: a node is booked for whole billing intervals (its ``wallTime``), and
    only a job that starts at 0 books more, as Toil's reservations grow. It packs
    worse on average, but differently, so on a few inputs it needs fewer nodes.
    ``pinned`` (running jobs, largest first) go before ``groups``, each starting at 0."""
    return [n.jobs for n in _pack(groups, node, target_time, booked, pinned)]


def _pack(
    groups: list[tuple[Shape, int]],
    node: Shape,
    target_time: float,
    booked: bool,
    pinned: Sequence[tuple[Shape, int]],
) -> list[_Node]:
    interval = node.wallTime if booked else 0.0
    room: Res = (node.memory, node.cores, node.disk)
    nodes: list[_Node] = []
    steps = [*((job, n, 0.0) for job, n in pinned), *((job, n, target_time) for job, n in groups)]
    for job, count, latest in steps:
        need: Res = (job.memory, job.cores, job.disk)
        if job.wallTime <= 0:
            # A zero-length job holds its node for an instant, which any node that
            # fits it has between its other jobs: they all go to the first node.
            if not nodes:
                nodes.append(_Node(room, interval, target_time))
            nodes[0].jobs.extend([(job, 0.0)] * count)
            continue
        index, start = 0, 0.0  # where the previous job of this group went
        for _ in range(count):
            while index < len(nodes):
                candidate = nodes[index]
                m, c, d = candidate.peak  # a node whose peak is too small refuses the job
                if m + _EPS >= need[0] and c + _EPS >= need[1] and d + _EPS >= need[2]:
                    at = candidate.earliest(need, job.wallTime, start, latest)
                    if at is not None:
                        start = at
                        break
                index, start = index + 1, 0.0
            else:
                nodes.append(_Node(room, interval, target_time))
                start = 0.0
            nodes[index].take(job, need, start, job.wallTime)
    return nodes
