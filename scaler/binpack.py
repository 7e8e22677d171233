"""Time-aware, billing-aware, cost-aware bin packing of job shapes onto node shapes.

``binpack(jobs, node_shapes, target_time=3600, prices=None, *, max_nodes=None,
time_limit=0.2) -> Packing``

Semantics follow Toil 9.6's ``binPacking``: a job's ``wallTime`` is its expected
run time; jobs may run one after another on the same resources as long as each
*starts* no later than ``target_time``; a node's own ``wallTime`` is its billing
interval, and a node is booked for whole intervals when it opens, as Toil's
reservations are: a job longer than an interval books several, and a later job
must end within what is booked (``scaler.booking``). The packers minimise billed
node-intervals, then nodes: 13 back-to-back 300 s jobs on one node would run into
a second hour, which costs what a second node does, so 1000 such jobs take 84
one-hour nodes (Toil's ``testHighTargetTime``), not 77 two-hour ones.
Preemptible jobs may run on non-preemptible nodes, never the reverse. Without
prices each job shape goes, as in Toil, to the first node shape in ``Shape``
order (preemptible first, then smallest) that fits it, and job shapes are packed
largest first.

How it is fast: real demand has few distinct shapes, so jobs are grouped by
shape and packed a group at a time. A node is described by *lanes*: a lane is
a block of resources free from time ``t`` until ``u`` (the end of its booking).
A job group of resources ``r`` and duration ``d`` placed into a lane of resources
``R`` uses ``k`` side-by-side columns (``k = floor(R / r)`` in the tightest
dimension), each running jobs back to back, each starting by ``target_time``
and ending by ``u``. Identical lanes are kept once with a count, so a group
costs O(lanes), not O(jobs), and opening ``n`` identical nodes is one
multiplication. What the columns leave free can be described three valid ways
(``WIDTH``, ``TIME``, ``WHOLE`` below), each losing something the others keep;
node shapes pack independently, so binpack runs all three and keeps the
best per node shape. Up to ``TIMELINE_LIMIT`` jobs per node shape it also packs
job by job on exact free-resource timelines (``scaler.timeline``), once
free-running and once booked as Toil's reservations are, and keeps the best of
the five, never with more nodes than the booked timeline (which is Toil's own
packing, job for job). Against Toil 9.6 on 1,200 random inputs that needs no
more nodes on any (tests/scaler/test_toil_differential.py). Once a packing is at a lower
bound on every packing of the same jobs (``_timeline_floor``: jobs longer than the target
all run side by side just after it), the packings not yet made cannot beat it and are
skipped: the lane bookkeepings after the first at the floor, and both timelines; on a
real log of long whole-node jobs, WIDTH alone in two packings of three.

Pinned jobs (``pinned``, count packing only): jobs already running, which hold their
room from time 0 for their (remaining) ``wallTime`` and cannot be put off. Both
packers place them first, each starting at 0 (a target of 0 for them), then the other
jobs as above; so no job is planned to start ahead of a running one on room the running
one holds. Merged with the other jobs, a running job longer than the target could be
moved behind a queued one (the queued one at 0, the running one after it, still by the
target): one node for both, while the real node runs the running job first and the
queued one waits for it, longer than the target, with no launch ever made for it.

Cost-aware packing (``prices`` given, per billing interval) minimises what the
booked node-intervals cost:

* the solver (``scaler.colgen``): column generation over node fillings with
  HiGHS, then an integer master over the fillings generated; ``max_nodes`` are
  its constraints, so jobs spill to the next best node shape, and what no shape
  within its limit holds is ``Packing.left``. Its limit is work, not time
  (``time_limit`` seconds' worth on a reference machine, see ``scaler.colgen``), so
  the same jobs give the same packing on any machine under any load;
* the heuristic: a per-group greedy that fills room on opened nodes first and
  opens the shape cheapest per job, over a few group orders; with the solver off
  (``time_limit`` 0) also a local search over the menu and node patterns
  (``scaler.patterns``) that mix groups on one node, the cheapest of them. With the
  solver off it keeps to ``max_nodes`` too: a shape at its max passes the rest to the
  next cheapest that fits (when none could take them, the nodes it opens for the group
  at hand are booked to hold the most of that group; groups are taken one at a time, so
  the heuristic may still leave more jobs than the solver at a max), and what none holds
  is ``Packing.left``, as the solver leaves it.

The cheaper of the solver's packing and the heuristic's greedy one is used (when the
solver runs out of work, and also at its optimum: its columns each run one job group,
where the greedy's lanes run two groups' jobs one after the other); ``Packing.method``
says which, and how far above the LP bound the solver's packing is when it knows. Of two
free packings (price 0: they cost nothing either way) the one on fewer nodes wins, so 3
sixteen-core nodes beat 10 four-core ones (the greedy values a free type at the least
positive price to choose among them, as the patterns value a free bin, of which they fill
the one worth most a node). Against the solver, a priced packing of the same cost on fewer
nodes does not win (after the planner's recount it may be dearer); in the heuristic's menu
search it does (``_less``). Patterns against the greedy stay by cost alone (``_priced``).
``bench/cost_gap.py`` measures the result against the configuration-LP lower bound.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

from shoal.scaler.booking import best_booking, densest_booking, first_booking, horizon
from shoal.scaler.memo import Memo
from shoal.scaler.patterns import Pattern, free_value, pattern_floor, pattern_pack
from shoal.scaler.resources import EPS as _EPS
from shoal.scaler.resources import Res
from shoal.scaler.resources import columns as _columns
from shoal.scaler.resources import res as _res
from shoal.scaler.resources import sequential as _sequential
from shoal.scaler.shape import Shape
from shoal.scaler.timeline import timeline_bill

if TYPE_CHECKING:  # the solver (numpy, highspy: ~20 MB) loads with the first cost packing
    from shoal.scaler import colgen

__all__ = ["Packing", "binpack", "jobs_per_node"]

# Up to this many jobs per node shape, binpack also packs job by job (scaler.timeline).
TIMELINE_LIMIT = 1000
DEFAULT_TIME_LIMIT = 0.2  # the solver's work per cost packing, in reference-machine seconds
# Cost packings already made (``_remembered``): a pass that repeats an earlier one's inputs.
# Each weighs its job groups (key and packing grow with them: ~0.8 MiB for 1,000 groups),
# so 512 queues of thousands of shapes cannot fill the memory (review4: ~400 MiB).
COST_PACKINGS: Memo[Packing] = Memo(512, budget=20_000)


@dataclass(frozen=True, slots=True)
class Packing:
    """Nodes needed per node shape, and the job shapes that fit no node shape (with why).

    ``assignment``: which jobs go to each node shape (node shape -> job shape -> count),
    every job that fits somewhere exactly once, except ``left``: jobs no node shape
    within its ``max_nodes`` holds (cost packing only). ``intervals``: billed
    node-intervals per node shape. ``method``: for cost packing, which packer's result
    this is and why."""

    counts: dict[Shape, int]
    unschedulable: dict[Shape, list[str]]
    assignment: dict[Shape, dict[Shape, int]] = field(default_factory=dict)
    intervals: dict[Shape, int] = field(default_factory=dict)
    left: dict[Shape, int] = field(default_factory=dict)
    method: str = ""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def billed(self, shape: Shape) -> int:
        """Billed node-intervals of one node shape."""
        return self.intervals.get(shape, self.counts.get(shape, 0))

    def cost(self, prices: Mapping[Shape, float]) -> float:
        """What the billed node-intervals cost, ``prices`` per billing interval."""
        return sum(self.billed(s) * prices.get(s, 0.0) for s in self.counts)


def jobs_per_node(job: Shape, node: Shape, target_time: float = 3600) -> float:
    """How many jobs of one shape an empty node holds within ``target_time`` (inf if unbounded)."""
    if job.fits_in(node):
        return 0
    return _product(
        _columns(_res(node), _res(job)), _sequential(0.0, math.inf, job.wallTime, target_time)
    )


def _product(columns: float, sequential: float) -> float:
    """columns x sequential jobs, where either may be inf and 0 wins (no room or no time)."""
    if columns == 0 or sequential == 0:
        return 0
    return columns * sequential


Lane = tuple[Res, float, float]  # free resources, free from, free until (inf: for good)
_LANE_ORDER = itemgetter(1, 0, 2)  # earliest first, then smallest room
_TOIL_ORDER = attrgetter("order")  # sorted(shapes, key=_TOIL_ORDER) == sorted(shapes)


def _by_toil(item: tuple[Shape, int]) -> tuple[bool, float, float, float, float]:
    return item[0].order


# Three ways to give back what placed columns leave free. Each is a valid picture of the
# free room and each loses something the others keep, so binpack runs all three:
WIDTH = "width"  # the unused width for good, and each column's width after it ends
TIME = "time"  # the unused width until the columns end, then the whole lane (exact in
#               room, but a job may not run across the boundary)
WHOLE = "whole"  # nothing until the columns end, then the whole lane
SPLITS = (WIDTH, TIME, WHOLE)


class _Pool:
    """The free lanes of all opened nodes of one node shape: lane -> how many identical."""

    __slots__ = ("intervals", "lanes", "late", "nodes", "shape", "split", "target_time")

    def __init__(self, shape: Shape, target_time: float, split: str = WIDTH) -> None:
        self.shape = shape
        self.target_time = target_time
        self.late = target_time + _EPS  # a lane starting after this takes no job
        self.split = split
        self.nodes = 0
        self.intervals = 0  # billed node-intervals of the opened nodes
        self.lanes: dict[Lane, int] = {}

    def _add(self, room: Res, start: float, until: float, count: int) -> None:
        # A lane starting after the target takes no job; an empty time window holds nothing.
        if count <= 0 or start > self.late or until <= start + _EPS:
            return
        key = (room, start, until)
        self.lanes[key] = self.lanes.get(key, 0) + count

    def _fill(self, lane: Lane, count: int, job: Shape, n: int, latest: float | None = None) -> int:
        """Place up to n jobs into ``count`` identical lanes, each starting by ``latest``
        (the target time unless given); returns how many were placed."""
        room, start, until = lane
        k = _columns(room, (job.memory, job.cores, job.disk))
        latest = self.target_time if latest is None else latest
        j = _sequential(start, until, job.wallTime, latest)
        per_lane = 0 if k == 0 or j == 0 else k * j  # _product, inline: the hottest path
        if per_lane <= 0:
            self._add(room, start, until, count)
            return 0
        if per_lane == math.inf:
            full, rest = 0, n  # one lane takes them all
        else:
            full, rest = divmod(n, int(per_lane))
            if full >= count:
                full, rest = count, 0
        placed = 0
        if full:  # every column of these lanes runs j jobs
            placed += full * int(per_lane)
            self._leftover(lane, full, job, k, j, j)
        partial = count - full
        if rest and partial:
            placed += rest
            columns = 1 if j == math.inf else math.ceil(rest / j)
            last = rest if j == math.inf else rest - (columns - 1) * j
            self._leftover(lane, 1, job, columns, j, last)
            partial -= 1
        self._add(room, start, until, partial)
        return placed

    def _leftover(
        self, lane: Lane, count: int, job: Shape, columns: float, j: float, last: float
    ) -> None:
        """Give back what ``count`` lanes leave free after ``columns`` columns of ``job``
        (all but the last ran ``j`` jobs, the last ran ``last``)."""
        room, start, until = lane
        d = job.wallTime
        if columns == math.inf or d <= 0:
            # Zero-resource jobs take nothing; zero-length jobs give it all back at once.
            self._add(room, start, until, count)
            return
        memory, cores, disk = need = (job.memory, job.cores, job.disk)
        end_last = start + last * d
        end_full = start + j * d if columns > 1 else end_last
        # max(0.0, x), spelt without the call (the same value, -0.0 and nan included)
        m, c, k = room[0] - columns * memory, room[1] - columns * cores, room[2] - columns * disk
        spare = (m if m > 0.0 else 0.0, c if c > 0.0 else 0.0, k if k > 0.0 else 0.0)
        split = self.split
        if split == WIDTH:
            self._add(spare, start, until, count)
            self._add(need, end_last, until, count)
            if columns > 1:
                self._add(need, end_full, until, count * (int(columns) - 1))
        elif split == TIME:
            after_last = (spare[0] + memory, spare[1] + cores, spare[2] + disk)
            self._add(spare, start, end_last, count)
            self._add(after_last, end_last, end_full, count)
            self._add(room, end_full, until, count)
        else:  # WHOLE
            self._add(room, end_full, until, count)

    def place(self, job: Shape, n: int, latest: float | None = None) -> int:
        """Put as many of n jobs as fit into already opened lanes, each starting by
        ``latest`` (the target time unless given); returns how many."""
        lanes = self.lanes
        if not lanes:
            return 0
        memory, cores, disk, duration = job.memory, job.cores, job.disk, job.wallTime
        # a lane's start is at most the target (``_add``): no limit when ``latest`` is None
        by = math.inf if latest is None else latest + _EPS
        # Most lanes cannot take this job at all: leave them out before sorting.
        fitting = [
            lane
            for lane in lanes
            if (room := lane[0])[0] + _EPS >= memory
            and room[1] + _EPS >= cores
            and room[2] + _EPS >= disk
            and lane[1] + duration <= lane[2] + _EPS
            and lane[1] <= by
        ]
        if not fitting:
            return 0
        # Earliest lanes first, then the smallest that fits (keeps big room for big jobs).
        fitting.sort(key=_LANE_ORDER)
        placed = 0
        for lane in fitting:
            if placed >= n:
                break
            placed += self._fill(lane, lanes.pop(lane), job, n - placed, latest)
        return placed

    def open(
        self,
        job: Shape,
        n: int,
        latest: float | None = None,
        booking: tuple[int, float] | None = None,
    ) -> int:
        """Open as many empty nodes as n more jobs (each starting by ``latest``, the
        target time unless given) need, booked for the fewest billed intervals (or as
        ``booking`` says: intervals, jobs a node), and place them; returns nodes opened."""
        latest = self.target_time if latest is None else latest
        intervals, per_node = booking or best_booking(job, self.shape, n, latest)
        new = 1 if per_node == math.inf else math.ceil(n / per_node)
        self.nodes += new
        self.intervals += new * intervals
        lane = (_res(self.shape), 0.0, horizon(self.shape, intervals))
        self._fill(lane, new, job, n, latest)
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
    # Real job lists repeat a few shape objects many times: count by identity (a C loop,
    # no Shape.__hash__ per job), then merge equal shapes that are distinct objects.
    listed = list(jobs)
    objects = dict(zip(map(id, listed), listed, strict=True))
    groups = {}
    for key, count in Counter(map(id, listed)).items():
        shape = objects[key]
        groups[shape] = groups.get(shape, 0) + count
    return groups


def binpack(
    jobs: Iterable[Shape] | Mapping[Shape, int],
    node_shapes: Iterable[Shape],
    target_time: float = 3600,
    prices: Mapping[Shape, float] | None = None,
    *,
    max_nodes: Mapping[Shape, int] | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT,
    pinned: Mapping[Shape, int] | None = None,
) -> Packing:
    """Pack ``jobs`` (shapes, or shape -> count) onto ``node_shapes``; see the module docstring.

    ``max_nodes`` (node shape -> most nodes) and ``time_limit`` (the solver's work, in
    seconds of a reference machine, ``scaler.colgen``; 0: the heuristic alone) apply to
    cost packing only; ``pinned`` (running jobs: they start at 0) to count packing only."""
    if target_time < 0:
        raise ValueError(f"target_time must be >= 0, got {target_time}")
    nodes = sorted(set(node_shapes))
    groups = _group(jobs)
    held = _group(pinned or {})
    if prices is not None and held:
        raise ValueError("pinned jobs are for count packing only (no prices)")
    if prices is not None:
        missing = [s for s in nodes if s not in prices]
        if missing:
            raise ValueError(f"no price for node shape(s): {', '.join(map(str, missing))}")
        return _remembered(groups, nodes, target_time, prices, max_nodes or {}, time_limit)
    # Node shapes pack independently (each job shape goes to the first that fits), so the
    # best per node shape over the three lane bookkeepings is a valid packing.
    best, assignment, unschedulable, floors = _lane_packings(groups, nodes, target_time, held)
    # Small inputs also go job by job on exact timelines, which the lanes approximate,
    # both free-running and booked by billing interval. The booked one is Toil's own
    # packing, so nothing with more nodes than it is taken.
    # Every packing gives each group to its first fitting node shape, largest group first.
    for shape, share in assignment.items():
        if sum(share.values()) <= TIMELINE_LIMIT and not _at_floor(best[shape], floors[shape]):
            # a shape both running and queued is one entry of ``share``: split it again
            first = [(job, held[job]) for job in share if job in held]
            rest = [(job, n - held.get(job, 0)) for job, n in share.items()]
            rest = sorted([(j, n) for j, n in rest if n > 0], key=_by_toil, reverse=True)
            toil = timeline_bill(rest, shape, target_time, booked=True, pinned=first)
            free = timeline_bill(rest, shape, target_time, booked=False, pinned=first)
            ceiling = toil[1]
            options = [best[shape], toil, free]
            best[shape] = min(o for o in options if o[1] <= ceiling)
    return Packing(
        {s: best[s][1] for s in nodes},
        unschedulable,
        assignment,
        intervals={s: best[s][0] for s in nodes},
    )


# Long jobs (this many seconds past the target, and a millionth of their length: a lane's
# column starts a job up to ``EPS`` of its length past the target, a second from ~1e9 s)
# are all running just after the target time.
LONG_MARGIN = 1.0


def _at_floor(lanes: tuple[int, int], floor: tuple[int, int] | None) -> bool:
    """Whether the lanes' best (billed intervals, nodes) is at or below ``floor`` (a lower
    bound on every timeline packing's, or None) in both: then neither timeline can win,
    nor set a ceiling under the lanes' nodes, and binpack keeps the lanes' best."""
    return floor is not None and lanes[0] <= floor[0] and lanes[1] <= floor[1]


def _timeline_floor(
    share: Mapping[Shape, int], node: Shape, target_time: float
) -> tuple[int, int] | None:
    """A lower bound on (billed intervals, nodes) of every timeline packing of ``share``
    on ``node`` (None: no long jobs, no bound worth taking).

    Every job starts by the target, so the jobs at least ``LONG_MARGIN`` s (and a millionth
    of their length) longer run side by side just after it. Nodes: in each resource their
    sum over the node's room; and their count over how many of them at most one node holds
    at once (``cap``, from the smallest need). Intervals: a node is billed until its last
    job ends, so the i-th most billed node is billed at least for the ``(i-1) * cap + 1``-th
    longest of those jobs (the longer ones do not fit on fewer nodes), and every other node
    for one interval. The timelines let a job over by ``EPS`` a fit (per job, up to
    ``TIMELINE_LIMIT`` jobs a node): the sums are taken 1e-5 short and the caps 1e-6 long,
    from rooms of at least 1 and needs of at least 0.01 only."""
    long = sorted(
        (
            (job, n)
            for job, n in share.items()
            if job.wallTime >= target_time + max(LONG_MARGIN, job.wallTime * 1e-6)
        ),
        key=lambda item: item[0].wallTime,
        reverse=True,
    )
    if not long:
        return None
    nodes, cap = 1, math.inf
    for room, needs in (
        (node.memory, [(job.memory, n) for job, n in long]),
        (node.cores, [(job.cores, n) for job, n in long]),
        (node.disk, [(job.disk, n) for job, n in long]),
    ):
        if room < 1:
            continue
        nodes = max(nodes, math.ceil(sum(x * n for x, n in needs) / room * (1 - 1e-5)))
        smallest = min(x for x, _ in needs)
        if smallest >= 0.01:
            cap = min(cap, max(1, math.floor(room / smallest * (1 + 1e-6))))
    if cap == math.inf:
        return None
    per_node = int(cap)  # a whole count from here (min of inf and ints)
    count = sum(n for _, n in long)
    nodes = max(nodes, math.ceil(count / per_node))
    intervals = billed = seen = 0  # billed: the nodes headed by the 1st, (cap+1)-th, ...
    for job, n in long:
        # the jobs seen .. seen + n - 1 (longest first): those at multiples of cap head one
        heads = (seen + n - 1) // per_node - (seen - 1) // per_node
        if heads:
            intervals += heads * first_booking(job, node)  # one each without billing intervals
            billed += heads
        seen += n
    intervals += max(0, nodes - billed)
    return intervals, nodes


def _lane_packings(
    groups: dict[Shape, int],
    nodes: list[Shape],
    target_time: float,
    pinned: dict[Shape, int] | None = None,
) -> tuple[
    dict[Shape, tuple[int, int]],
    dict[Shape, dict[Shape, int]],
    dict[Shape, list[str]],
    dict[Shape, tuple[int, int] | None],
]:
    """Count packing on lanes, the three bookkeepings one after another (what ``_pack``
    does without prices, once per split): per node shape the best (billed intervals, nodes)
    of them, which jobs each node shape gets (``pinned`` ones included: they go first, each
    starting at 0), the jobs that fit none, and per node shape the floor under every
    packing of its jobs (``_timeline_floor``; None: none taken, past ``TIMELINE_LIMIT`` jobs).

    A bookkeeping at the floor in both counts cannot be beaten, so the rest are skipped:
    the same best (equal tuples are equal packings). On a real log of long whole-node jobs
    ``WIDTH``, the first, is at the floor in two packings of three (a third of the lane work
    for those, about 55 % of it in all), and the best or tied in nearly all the rest."""
    assignment: dict[Shape, dict[Shape, int]] = {}
    unschedulable: dict[Shape, list[str]] = {}
    pinned = pinned or {}
    order = [  # largest first, as Toil; pinned (running) jobs before all others
        *((job, n, 0.0) for job, n in sorted(pinned.items(), key=_by_toil, reverse=True)),
        *((job, groups[job], None) for job in sorted(groups, key=_TOIL_ORDER, reverse=True)),
    ]
    runs: dict[Shape, list[tuple[Shape, int, float | None]]] = {s: [] for s in nodes}
    for job, n, latest in order:
        shape = next((s for s in nodes if not job.fits_in(s)), None)
        if shape is None:
            unschedulable[job] = _failed_dimensions(job, nodes)
            continue
        share = assignment.setdefault(shape, {})
        share[job] = share.get(job, 0) + n
        runs[shape].append((job, n, latest))
    best: dict[Shape, tuple[int, int]] = {}
    floors: dict[Shape, tuple[int, int] | None] = {}
    for node, run in runs.items():
        mine = assignment.get(node, {})
        if not mine:
            best[node], floors[node] = (0, 0), None
            continue
        floor = floors[node] = (
            _timeline_floor(mine, node, target_time)
            if sum(mine.values()) <= TIMELINE_LIMIT
            else None
        )
        for split in SPLITS:
            pool = _Pool(node, target_time, split)
            for job, n, latest in run:
                left = n - pool.place(job, n, latest)
                if left > 0:
                    pool.open(job, left, latest)
            packed = (pool.intervals, pool.nodes)
            if node not in best or packed < best[node]:
                best[node] = packed
            if _at_floor(best[node], floor):
                break
    return best, assignment, unschedulable, floors


def _remembered(*inputs: Any) -> Packing:
    """``_cost_packing(*inputs)``, remembered in ``COST_PACKINGS``: a pass whose queue and limits
    did not change since an earlier one (a timer pass, a replay's pass between arrivals)
    gets the same packing without solving again. The solver counts work, not time, so its
    packing is a function of these inputs alone. The key keeps the groups' order (the
    solver's columns follow it); a caller gets its own copy of the packing's dicts."""
    groups, nodes, target_time, prices, max_nodes, time_limit = inputs
    key = (
        tuple(groups.items()),
        tuple(nodes),
        target_time,
        tuple(prices[s] for s in nodes),
        tuple(max_nodes.items()),
        time_limit,
    )
    packing = COST_PACKINGS.get(key, lambda: _cost_packing(*inputs), weight=len(groups) + 1)
    return replace(
        packing,
        counts=dict(packing.counts),
        unschedulable={job: list(why) for job, why in packing.unschedulable.items()},
        assignment={shape: dict(jobs) for shape, jobs in packing.assignment.items()},
        intervals=dict(packing.intervals),
        left=dict(packing.left),
    )


def _cost_packing(
    groups: dict[Shape, int],
    nodes: list[Shape],
    target_time: float,
    prices: Mapping[Shape, float],
    max_nodes: Mapping[Shape, int],
    time_limit: float,
) -> Packing:
    """The cheaper of the solver's packing (optimal over its fillings, or its best when it
    runs out of work) and the heuristic's greedy packing (one that breaks a node limit
    never wins); the whole heuristic when the solver is off or finds nothing."""
    unschedulable = {
        job: _failed_dimensions(job, nodes) for job in groups if all(job.fits_in(s) for s in nodes)
    }
    servable = {job: n for job, n in groups.items() if job not in unschedulable}
    packable = {job: n for job, n in servable.items() if job.wallTime > 0 and any(_res(job))}
    limit = f"{time_limit * 1000:.0f} ms work limit"
    if time_limit <= 0 or not packable:
        why = "solver off" if time_limit <= 0 else "nothing for the solver"
        heuristic = _priced(groups, nodes, target_time, prices, unschedulable, max_nodes)
        return replace(heuristic, method=f"heuristic ({why})")
    from shoal.scaler import colgen

    solution = colgen.solve(
        packable, nodes, target_time, prices, max_nodes=max_nodes, time_limit=time_limit
    )
    if solution.status == "none":
        heuristic = _priced(groups, nodes, target_time, prices, unschedulable, max_nodes)
        return replace(heuristic, method=f"heuristic (the solver found nothing within its {limit})")
    solved = _from_solution(solution, servable, nodes, prices, unschedulable, max_nodes)
    bound = solution.bound
    # The bound prices jobs left beyond max-nodes too; against it only a full packing compares.
    # Below one node's price it says nothing (a lone 1-minute job is "5900% above" it).
    full = not any(solution.left.values())
    one_node = min((prices[s] for s in nodes if prices.get(s)), default=0.0)
    telling = bound is not None and bound >= one_node > 0 and full
    above = (
        f", {solved.cost(prices) / bound - 1:.1%} above the LP bound"
        if telling and bound is not None
        else ""
    )
    # The solver's optimum is over its own fillings, whose columns each run one job group:
    # the greedy's lanes also run jobs of two groups one after the other in one column
    # (six 10-core and six 12-core 5-minute jobs on one 16-core node for the hour, where
    # the solver opens two), so it may cost less even then; the cheaper one is used.
    # Both free: the one on fewer nodes (the solver is indifferent between free types).
    optimal = solution.status == "optimal"
    greedy = _cheapest_order(groups, nodes, target_time, prices)
    within = all(greedy.counts.get(s, 0) <= n for s, n in max_nodes.items())
    ours, theirs = _total(greedy, prices), _total(solved, prices)
    if within and _less(ours, theirs):
        than = (
            "the solver's optimum over its fillings"
            if optimal
            else f"the solver's best at its {limit}"
        )
        if ours[0] < theirs[0] - 1e-9:
            return replace(greedy, method=f"heuristic (cheaper than {than})")
        return replace(greedy, method=f"heuristic (as cheap as {than}, on fewer nodes)")
    if optimal:
        return replace(solved, method=f"solver (HiGHS){above}")
    return replace(solved, method=f"solver's best at its {limit}{above}")


def _from_solution(
    solution: colgen.Solution,
    servable: dict[Shape, int],
    nodes: list[Shape],
    prices: Mapping[Shape, float],
    unschedulable: dict[Shape, list[str]],
    max_nodes: Mapping[Shape, int],
) -> Packing:
    counts = dict.fromkeys(nodes, 0)
    intervals = dict.fromkeys(nodes, 0)
    assignment: dict[Shape, dict[Shape, int]] = {}
    for filling in solution.fillings:
        counts[filling.bin.shape] += filling.repeat
        intervals[filling.bin.shape] += filling.repeat * filling.bin.intervals
    for bin_, share in solution.jobs.items():
        mine = assignment.setdefault(bin_.shape, {})
        for job, n in share.items():
            mine[job] = mine.get(job, 0) + n
    left = dict(solution.left)
    for job, n in servable.items():
        if job in solution.left or (job.wallTime > 0 and any(_res(job))):
            continue
        # Takes no room or no time: a node already bought holds it; else the cheapest
        # within its max; else it is left, as the solver leaves jobs beyond the max.
        fitting = [s for s in nodes if not job.fits_in(s)]
        host = next((s for s in fitting if counts[s]), None)
        if host is None:
            within = [s for s in fitting if max_nodes.get(s, math.inf) >= 1]
            if not within:
                left[job] = n
                continue
            host = min(within, key=lambda s: prices[s])
            counts[host] += 1
            intervals[host] += 1
        mine = assignment.setdefault(host, {})
        mine[job] = mine.get(job, 0) + n
    return Packing(counts, unschedulable, assignment, intervals, left)


def _cheapest_order(
    groups: dict[Shape, int],
    nodes: list[Shape],
    target_time: float,
    prices: Mapping[Shape, float],
    max_nodes: Mapping[Shape, int] | None = None,
) -> Packing:
    """The cheapest of a few group orders: which group opens nodes first decides what room
    the others find, and no single order is best (memory-heavy first, core-heavy first, or
    the groups dearest per job first, whose nodes leave the most room for the rest). With
    ``max_nodes``, the one that leaves the fewest jobs beyond them comes first."""

    def dearest(job: Shape) -> float:
        fitting = [s for s in nodes if not job.fits_in(s)]
        return min((_per_job(job, s, prices, target_time) for s in fitting), default=0.0)

    orders = [
        sorted(groups, reverse=True),
        sorted(groups, key=lambda j: (j.cores, j.memory, j.disk, j.wallTime), reverse=True),
        sorted(groups, key=lambda j: (dearest(j), j), reverse=True),
    ]
    # Orders that come out the same (few groups, or groups in the same order by every key)
    # give the same packing: each distinct order is packed once.
    packed: dict[tuple[Shape, ...], Packing] = {}
    for order in orders:
        key = tuple(order)
        if key not in packed:
            packed[key] = _pack(groups, nodes, target_time, prices, WIDTH, order, max_nodes)
    # the first cheapest in the orders' order, as over every order's packing
    return min(packed.values(), key=lambda p: (sum(p.left.values()), p.cost(prices), p.total))


def _priced(
    groups: dict[Shape, int],
    nodes: list[Shape],
    target_time: float,
    prices: Mapping[Shape, float],
    unschedulable: dict[Shape, list[str]],
    max_nodes: Mapping[Shape, int] | None = None,
) -> Packing:
    """The heuristic: the per-group greedy with a local search over the menu (greedy
    choices per group can spread demand over too many node shapes, so drop a shape while
    that is cheaper, or as cheap on fewer nodes, and every job still fits somewhere), or
    node patterns, whichever costs less. Both keep to ``max_nodes``, the jobs
    beyond a shape's going to the next cheapest that fits them (what none holds is
    ``left``); a smaller menu is taken only when it leaves no job beyond them."""
    best = _cheapest_order(groups, nodes, target_time, prices, max_nodes)
    menu = list(nodes)
    improved = True
    while improved and len(menu) > 1:
        improved = False
        for shape in sorted((s for s in menu if best.counts.get(s)), key=lambda s: -prices[s]):
            smaller = [s for s in menu if s != shape]
            trial = _cheapest_order(groups, smaller, target_time, prices, max_nodes)
            if (
                trial.unschedulable.keys() == best.unschedulable.keys()
                and not trial.left
                and (
                    best.left
                    or _less(_total(trial, prices), _total(best, prices), priced_ties=True)
                )
            ):
                best, menu, improved = trial, smaller, True
                break
    counts = {s: best.counts.get(s, 0) for s in nodes}
    intervals = {s: best.intervals.get(s, 0) for s in nodes}
    assignment, left = best.assignment, best.left
    # Node patterns mix groups on one node, which the per-group greedy does only with
    # leftovers; keep whichever is cheaper.
    servable = {job: n for job, n in groups.items() if job not in unschedulable}
    # Patterns are packed only when they could cost less (on a real log's single-type
    # need, the greedy meets their floor in ~80 % of the packings), or serve more.
    if servable and (
        left or _cost(intervals, prices) > pattern_floor(servable, nodes, target_time, prices)
    ):
        patterns = pattern_pack(servable, nodes, target_time, prices, max_nodes)
        mixed = dict.fromkeys(nodes, 0)
        booked = dict.fromkeys(nodes, 0)
        for pattern in patterns:
            mixed[pattern.shape] += pattern.repeat
            booked[pattern.shape] += pattern.repeat * pattern.intervals
        # What the patterns leave is beyond a max, or worth nothing in any filling (a job of
        # a byte, no cores: pattern_pack stops); the greedy serves it then.
        shared = _share_out(servable, patterns, target_time)
        beyond = dict(servable)
        for jobs in shared.values():
            for job, n in jobs.items():
                beyond[job] -= n
        beyond = {job: n for job, n in beyond.items() if n > 0}
        # At equal cost the greedy's (not the fewer nodes, as elsewhere): the floor above
        # skips patterns that could at most tie, so they would win a tie only some times.
        fewer = sum(beyond.values()) - sum(left.values())
        cheaper = _cost(booked, prices) < _cost(intervals, prices) - 1e-9
        if fewer < 0 or (fewer == 0 and cheaper):
            counts, intervals, left = mixed, booked, beyond
            assignment = shared
    # Why a job fits nowhere is said against the whole menu, not the trimmed one.
    return Packing(counts, unschedulable, assignment, intervals, left)


def _total(packing: Packing, prices: Mapping[Shape, float]) -> tuple[float, int]:
    return packing.cost(prices), packing.total


def _less(ours: tuple[float, int], theirs: tuple[float, int], *, priced_ties: bool = False) -> bool:
    """Whether (cost, nodes) ``ours`` beats ``theirs``: cheaper (beyond a float's error), or
    as cheap and on fewer nodes, when both are free (two free types: 3 sixteen-core nodes,
    not 10 four-core) or with ``priced_ties``. Against the solver's packing a priced tie
    keeps the solver's: the planner recounts each type, and the greedy's fewer nodes came
    out as one more dear node (review6). The heuristic's menu search breaks priced ties
    on nodes (proportional prices tie exactly: c5.xlarge and c5.2xlarge), which with the
    solver off leaves fewer jobs max-nodes on the recorded plans (175: none)."""
    if ours[0] < theirs[0] - 1e-9:
        return True
    tie = priced_ties or max(ours[0], theirs[0]) <= 1e-9
    return tie and ours[0] <= theirs[0] + 1e-9 and ours[1] < theirs[1]


def _share_out(
    groups: dict[Shape, int], patterns: list[Pattern], target_time: float
) -> dict[Shape, dict[Shape, int]]:
    """Which jobs each node shape gets when ``patterns`` serve ``groups``."""
    assignment: dict[Shape, dict[Shape, int]] = {}
    left = dict(groups)
    for p in patterns:
        for job, columns in p.columns.items():
            end = horizon(p.shape, p.intervals)
            room = _product(columns * p.repeat, _sequential(0.0, end, job.wallTime, target_time))
            if not any(_res(job)):  # takes no room: any column holds them all
                room = math.inf
            take = left[job] if room == math.inf else min(left[job], int(room))
            if take:
                jobs = assignment.setdefault(p.shape, {})
                jobs[job] = jobs.get(job, 0) + take
                left[job] -= take
    return assignment


def _cost(counts: Mapping[Shape, int], prices: Mapping[Shape, float]) -> float:
    return sum(n * prices[s] for s, n in counts.items())


def _pack(
    groups: dict[Shape, int],
    nodes: list[Shape],
    target_time: float,
    prices: Mapping[Shape, float] | None,
    split: str,
    order: list[Shape] | None = None,
    max_nodes: Mapping[Shape, int] | None = None,
) -> Packing:
    pools = {s: _Pool(s, target_time, split) for s in nodes}
    unschedulable: dict[Shape, list[str]] = {}
    assignment: dict[Shape, dict[Shape, int]] = {}
    left: dict[Shape, int] = {}  # (priced) jobs no node shape that fits them holds within its max
    limits = max_nodes or {}

    def room(shape: Shape) -> float:  # new nodes of ``shape`` within its max
        return limits.get(shape, math.inf) - pools[shape].nodes

    def give(shape: Shape, job: Shape, count: int) -> None:
        if count > 0:
            jobs = assignment.setdefault(shape, {})
            jobs[job] = jobs.get(job, 0) + count

    for job in order or sorted(groups, key=_TOIL_ORDER, reverse=True):  # largest first, as Toil
        n = groups[job]
        fitting = [s for s in nodes if not job.fits_in(s)]
        if not fitting:
            unschedulable[job] = _failed_dimensions(job, nodes)
            continue
        if prices is None:
            pool = pools[fitting[0]]
            give(fitting[0], job, n)
            n -= pool.place(job, n)
            if n > 0:
                pool.open(job, n)
            continue
        for shape in fitting:  # room on nodes already opened is paid for: use it first
            if n <= 0:
                break
            placed = pools[shape].place(job, n)
            give(shape, job, placed)
            n -= placed
        while n > 0:
            # The bulk goes to the node shape cheapest per job when full (of equal ones, the
            # one that books the fewest nodes a job, ``_bulk``); the tail (what does not
            # fill a whole node of it) to the shape that serves it cheapest. Only shapes
            # below their max open nodes: one that reaches it passes the rest on to the
            # next cheapest, as the solver's limits do; what none holds is ``left``.
            growing = [s for s in fitting if room(s) >= 1]
            if not growing:
                left[job] = n
                break
            bulk = _bulk(job, growing, prices, target_time)
            per_node = best_booking(job, bulk, n, target_time)[1]
            whole = 0 if per_node == math.inf else int(n // per_node) * int(per_node)
            full = _most_within(job, bulk, whole, room(bulk), target_time)
            booking = None
            others = [s for s in growing if s is not bulk]
            if full < whole and not _could_hold(job, n - full, others, room, target_time):
                # At its max, and the others could not take the rest: as the solver (a job
                # left costs more than any node), the booking that serves the most here.
                booking = densest_booking(job, bulk, target_time)
                most = math.inf if booking[1] == math.inf else int(room(bulk)) * int(booking[1])
                full = int(min(n, most))
            if full:
                pools[bulk].open(job, full, booking=booking)
                give(bulk, job, full)
                n -= full
            growing = [s for s in growing if room(s) >= 1]
            if full < whole or not growing:  # at its max: the next shape takes the rest
                continue
            if n > 0:
                tail = _cheapest(job, n, growing, prices, target_time)
                placed = _most_within(job, tail, n, room(tail), target_time)
                pools[tail].open(job, placed)
                give(tail, job, placed)
                n -= placed
    return Packing(
        {s: pools[s].nodes for s in nodes},
        unschedulable,
        assignment,
        intervals={s: pools[s].intervals for s in nodes},
        left=left,
    )


def _most_within(job: Shape, shape: Shape, n: int, room: float, target_time: float) -> int:
    """The most of ``n`` jobs that ``_Pool.open`` places on at most ``room`` new nodes of
    ``shape`` (all ``n`` without a max)."""
    while n > 0 and room < math.inf:
        per_node = best_booking(job, shape, n, target_time)[1]
        if per_node == math.inf or math.ceil(n / per_node) <= room:
            break
        n = min(n - 1, int(room) * int(per_node))  # a smaller n may book differently
    return n


def _could_hold(
    job: Shape, n: int, shapes: list[Shape], room: Callable[[Shape], float], target_time: float
) -> bool:
    """Whether ``shapes``, each with ``room(shape)`` new nodes, could hold ``n`` more jobs
    (each booked to hold the most)."""
    held = 0.0
    for shape in shapes:
        per_node = densest_booking(job, shape, target_time)[1]
        if per_node > 0:
            held += room(shape) * per_node
        if held >= n:
            return True
    return False


def _bulk(
    job: Shape, shapes: list[Shape], prices: Mapping[Shape, float], target_time: float
) -> Shape:
    """The node shape cheapest per job when full of ``job``. Of equally cheap ones (free
    types: nothing each), the cheapest with a free type priced at the least positive
    price, as the patterns value a free bin: the one that books the fewest nodes (node
    intervals) a job; then the first."""
    costs = [_per_job(job, s, prices, target_time) for s in shapes]
    least = min(costs)
    tied = [s for s, c in zip(shapes, costs, strict=True) if c == least]
    if len(tied) == 1:
        return tied[0]
    floor = free_value(prices.values())
    return min(tied, key=lambda s: _per_job(job, s, {s: prices[s] or floor}, target_time))


def _per_job(job: Shape, shape: Shape, prices: Mapping[Shape, float], target_time: float) -> float:
    """What one job costs on nodes of ``shape`` full of it, booked as they would be."""
    intervals, per_node = best_booking(job, shape, 1 << 30, target_time)
    if per_node == math.inf:
        return 0.0
    return prices[shape] * intervals / per_node if per_node else math.inf


def _cheapest(
    job: Shape, n: int, fitting: list[Shape], prices: Mapping[Shape, float], target_time: float
) -> Shape:
    def cost(shape: Shape) -> tuple[float, int]:
        intervals, per_node = best_booking(job, shape, n, target_time)
        count = 1 if per_node == math.inf else math.ceil(n / per_node)
        return (count * intervals * prices[shape], count)

    return min(fitting, key=cost)
