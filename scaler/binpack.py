"""Time-aware, cost-aware bin packing of job shapes onto node shapes.

``binpack(jobs, node_shapes, target_time=3600, prices=None) -> Packing``

Semantics follow Toil 9.6's ``binPacking``: a job's ``wallTime`` is its expected
run time; jobs may run one after another on the same resources as long as each
*starts* no later than ``target_time``; a node's own ``wallTime`` (its billing
interval) does not limit how long it runs, so a job longer than it simply keeps
the node for several intervals. Preemptible jobs may run on non-preemptible
nodes, never the reverse. Without prices each job shape goes, as in Toil, to
the first node shape in ``Shape`` order (preemptible first, then smallest) that
fits it, and job shapes are packed largest first.

How it is fast: real demand has few distinct shapes, so jobs are grouped by
shape and packed a group at a time. A node is described by *lanes*: a lane is
a block of resources free from time ``t`` on. A job group of resources ``r``
and duration ``d`` placed into a lane of resources ``R`` at ``t`` uses ``k``
side-by-side columns (``k = floor(R / r)`` in the tightest dimension), each
running ``floor((target_time - t) / d) + 1`` jobs back to back. What it leaves
is (a) the unused resources ``R - c*r`` still free from ``t`` and (b) the last,
partly used column, free again from where its jobs end. Identical lanes are
kept once with a count, so a group costs O(lanes), not O(jobs), and opening
``n`` identical nodes is one multiplication.

Cost-aware packing (``prices`` given): free lanes on nodes already opened are
used first (they are paid for); the rest of a group opens nodes of the shape
that minimises ``ceil(n / per_node) * price`` for that group, where
``per_node`` is how many of its jobs one empty node holds. Leftover room on
those nodes is then offered to the smaller groups that follow. This greedy is
exact when every group fills whole nodes and loses at most one partly filled
node per group otherwise; ``bench/cost_gap.py`` measures it against an LP lower
bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scaler.shape import Shape

__all__ = ["Packing", "binpack", "jobs_per_node"]

_EPS = 1e-9
Res = tuple[float, float, float]  # memory, cores, disk


@dataclass(frozen=True, slots=True)
class Packing:
    """Nodes needed per node shape, and the job shapes that fit no node shape (with why)."""

    counts: dict[Shape, int]
    unschedulable: dict[Shape, list[str]]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def cost(self, prices: Mapping[Shape, float]) -> float:
        return sum(n * prices.get(s, 0.0) for s, n in self.counts.items())


def _res(s: Shape) -> Res:
    return (s.memory, s.cores, s.disk)


def _columns(room: Res, need: Res) -> float:
    """How many jobs needing ``need`` fit side by side in ``room`` (inf for a zero job)."""
    k = math.inf
    for have, want in zip(room, need, strict=True):
        if want > 0:
            k = min(k, math.floor(have / want + _EPS))
    return k


def _sequential(start: float, duration: float, target_time: float) -> float:
    """Jobs of ``duration`` one column starting at ``start`` runs, each starting by the target."""
    if start > target_time + _EPS:
        return 0
    if duration <= 0:
        return math.inf
    return math.floor((target_time - start) / duration + _EPS) + 1


def jobs_per_node(job: Shape, node: Shape, target_time: float = 3600) -> float:
    """How many jobs of one shape an empty node holds within ``target_time`` (inf if unbounded)."""
    if job.fits_in(node):
        return 0
    return _product(_columns(_res(node), _res(job)), _sequential(0.0, job.wallTime, target_time))


def _product(columns: float, sequential: float) -> float:
    """columns x sequential jobs, where either may be inf and 0 wins (no room or no time)."""
    if columns == 0 or sequential == 0:
        return 0
    return columns * sequential


class _Pool:
    """The free lanes of all opened nodes of one node shape: (resources, start) -> count."""

    __slots__ = ("lanes", "merge", "nodes", "shape", "target_time")

    def __init__(self, shape: Shape, target_time: float, merge: bool = False) -> None:
        self.shape = shape
        self.target_time = target_time
        # merge=False keeps the unused width free from the lane's start (good for wide nodes);
        # merge=True frees the whole lane once its last column ends (good for long chains).
        self.merge = merge
        self.nodes = 0
        self.lanes: dict[tuple[Res, float], int] = {}

    def _add(self, room: Res, start: float, count: int) -> None:
        # A lane that starts after the target can take no job; one with no resources
        # is kept, since zero-resource jobs still fit in it.
        if count <= 0 or start > self.target_time + _EPS:
            return
        key = (room, start)
        self.lanes[key] = self.lanes.get(key, 0) + count

    def _fill(self, room: Res, start: float, count: int, job: Shape, n: int, t: float) -> int:
        """Place up to n jobs into ``count`` identical lanes; returns how many were placed."""
        need = _res(job)
        k = _columns(room, need)
        j = _sequential(start, job.wallTime, t)
        per_lane = _product(k, j)
        if per_lane <= 0:
            self._add(room, start, count)
            return 0
        if per_lane == math.inf:
            full, rest = 0, n  # one lane takes them all
        else:
            full, rest = divmod(n, int(per_lane))
            if full >= count:
                full, rest = count, 0
        placed = 0
        # Full lanes: every column runs j jobs; the columns end past the target (dead), and
        # with zero-length jobs they stay usable from the same start.
        if full:
            placed += full * int(per_lane)
            self._leftover(room, start, full, job, int(k), j, j, need)
        partial_lanes = count - full
        if rest and partial_lanes:
            placed += rest
            columns = 1 if j == math.inf else math.ceil(rest / j)
            last = rest if j == math.inf else rest - (columns - 1) * j
            self._leftover(room, start, 1, job, columns, j, last, need)
            partial_lanes -= 1
        self._add(room, start, partial_lanes)
        return placed

    def _leftover(
        self,
        room: Res,
        start: float,
        count: int,
        job: Shape,
        columns: int | float,
        j: float,
        last: float,
        need: Res,
    ) -> None:
        """Return to the pool what `count` lanes leave after `columns` columns."""
        if columns == math.inf or job.wallTime <= 0:
            # Zero-resource jobs take nothing; zero-length jobs give it all back at once.
            self._add(room, start, count)
            return
        columns = int(columns)
        d = job.wallTime
        if self.merge:
            longest = j if columns > 1 else last
            self._add(room, start + longest * d, count)
            return
        spare = tuple(max(0.0, a - columns * b) for a, b in zip(room, need, strict=True))
        self._add(spare, start, count)  # type: ignore[arg-type]
        # Full columns end at start + j*d (past the target unless d == 0).
        if columns > 1 and j != math.inf:
            self._add(need, start + j * d, count * (columns - 1))
        end = start + (last * d if last != math.inf else 0.0)
        self._add(need, end, count)

    def place(self, job: Shape, n: int, target_time: float) -> int:
        """Put as many of n jobs as fit into already opened lanes; returns how many."""
        placed = 0
        # Earliest lanes first, then the smallest that fits (keeps big room for big jobs).
        for key in sorted(self.lanes, key=lambda k: (k[1], k[0])):
            if placed >= n:
                break
            room, start = key
            count = self.lanes.pop(key)
            placed += self._fill(room, start, count, job, n - placed, target_time)
        return placed

    def open(self, job: Shape, n: int, target_time: float) -> int:
        """Open as many empty nodes as n more jobs need, and place them; returns nodes opened."""
        per_node = jobs_per_node(job, self.shape, target_time)
        new = 1 if per_node == math.inf else math.ceil(n / per_node)
        self.nodes += new
        self._fill(_res(self.shape), 0.0, new, job, n, target_time)
        return new


def _failed_dimensions(job: Shape, nodes: list[Shape]) -> list[str]:
    """The failing dimensions against the node shape that comes closest to fitting the job."""
    best: list[str] | None = None
    for node in nodes:
        failing = job.fits_in(node)
        if best is None or len(failing) < len(best):
            best = failing
    return best or ["no node shapes"]


def _group(jobs: Iterable[Shape] | Mapping[Shape, int]) -> dict[Shape, int]:
    if isinstance(jobs, Mapping):
        groups: dict[Shape, int] = {}
        for shape, count in jobs.items():
            if count < 0:
                raise ValueError(f"negative job count {count} for {shape}")
            if count:
                groups[shape] = groups.get(shape, 0) + int(count)
        return groups
    groups = {}
    for shape in jobs:
        groups[shape] = groups.get(shape, 0) + 1
    return groups


def binpack(
    jobs: Iterable[Shape] | Mapping[Shape, int],
    node_shapes: Iterable[Shape],
    target_time: float = 3600,
    prices: Mapping[Shape, float] | None = None,
) -> Packing:
    """Pack ``jobs`` (shapes, or shape -> count) onto ``node_shapes``; see the module docstring."""
    if target_time < 0:
        raise ValueError(f"target_time must be >= 0, got {target_time}")
    nodes = sorted(set(node_shapes))
    if prices is not None:
        missing = [s for s in nodes if s not in prices]
        if missing:
            raise ValueError(f"no price for node shape(s): {', '.join(map(str, missing))}")
    if prices is not None:
        return _cheapest_order(_group(jobs), nodes, target_time, prices)
    # Two lane bookkeepings; node shapes pack independently (each job shape goes to the
    # first that fits), so the smaller count per node shape is a valid packing.
    split = _pack(jobs, nodes, target_time, None, merge=False)
    merged = _pack(jobs, nodes, target_time, None, merge=True)
    counts = {s: min(split.counts[s], merged.counts[s]) for s in nodes}
    return Packing(counts, split.unschedulable)


def _cheapest_order(
    groups: dict[Shape, int], nodes: list[Shape], target_time: float, prices: Mapping[Shape, float]
) -> Packing:
    """The cheapest of a few group orders: which group opens nodes first decides what room
    the others find, and no single order is best (memory-heavy first, core-heavy first, or
    the groups dearest per job first, whose nodes leave the most room for the rest)."""

    def dearest(job: Shape) -> float:
        fitting = [s for s in nodes if not job.fits_in(s)]
        return min((_per_job(job, s, prices, target_time) for s in fitting), default=0.0)

    orders = [
        sorted(groups, reverse=True),
        sorted(groups, key=lambda j: (j.cores, j.memory, j.disk, j.wallTime), reverse=True),
        sorted(groups, key=lambda j: (dearest(j), j), reverse=True),
    ]
    results = [_pack(groups, nodes, target_time, prices, False, order) for order in orders]
    return min(results, key=lambda p: (p.cost(prices), p.total))


def _pack(
    jobs: Iterable[Shape] | Mapping[Shape, int],
    nodes: list[Shape],
    target_time: float,
    prices: Mapping[Shape, float] | None,
    merge: bool,
    order: list[Shape] | None = None,
) -> Packing:
    pools = {s: _Pool(s, target_time, merge) for s in nodes}
    unschedulable: dict[Shape, list[str]] = {}
    groups = _group(jobs)
    for job in order or sorted(groups, reverse=True):  # largest first, as Toil packs
        n = groups[job]
        fitting = [s for s in nodes if not job.fits_in(s)]
        if not fitting:
            unschedulable[job] = _failed_dimensions(job, nodes)
            continue
        if prices is None:
            pool = pools[fitting[0]]
            n -= pool.place(job, n, target_time)
            if n > 0:
                pool.open(job, n, target_time)
            continue
        for shape in fitting:  # room on nodes already opened is paid for: use it first
            if n <= 0:
                break
            n -= pools[shape].place(job, n, target_time)
        if n > 0:
            # The bulk goes to the node shape cheapest per job when full; the tail (what
            # does not fill a whole node of it) to the shape that serves it cheapest.
            bulk = min(fitting, key=lambda s: _per_job(job, s, prices, target_time))
            per_node = jobs_per_node(job, bulk, target_time)
            full = 0 if per_node == math.inf else int(n // per_node) * int(per_node)
            if full:
                pools[bulk].open(job, full, target_time)
                n -= full
            if n > 0:
                pools[_cheapest(job, n, fitting, prices, target_time)].open(job, n, target_time)
    return Packing({s: pools[s].nodes for s in nodes}, unschedulable)


def _per_job(job: Shape, shape: Shape, prices: Mapping[Shape, float], target_time: float) -> float:
    per_node = jobs_per_node(job, shape, target_time)
    return 0.0 if per_node == math.inf else prices[shape] / per_node


def _cheapest(
    job: Shape, n: int, fitting: list[Shape], prices: Mapping[Shape, float], target_time: float
) -> Shape:
    def cost(shape: Shape) -> tuple[float, int]:
        per_node = jobs_per_node(job, shape, target_time)
        count = 1 if per_node == math.inf else math.ceil(n / per_node)
        return (count * prices[shape], count)

    return min(fitting, key=cost)
