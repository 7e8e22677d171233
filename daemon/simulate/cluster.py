"""The batch scheduler inside a simulation: Slurm or Toil's batch system, in miniature.

Pure and event-driven: no asyncio, no clock; every call that changes or reads the state
takes ``now`` (seconds, never decreasing from call to call, else ``ValueError``).

* Jobs queue on ``submit``. Nodes join with their *usable* resources (the planner's shape
  after overhead) via ``node_joined``.
* Scheduling is FIFO with backfill and no reservations: queued jobs are taken in submit
  order (a requeued job keeps its place), each starts on a joined node with room for it
  (cores, memory, disk; a non-preemptible job never on a preemptible node; never on a
  cordoned node, until ``uncordon``); a job that fits nowhere waits and later, smaller
  jobs may start past it. Which node: the lowest ``weight`` (``node_joined``; Slurm's node
  ``Weight``, which ``shoal slurm-conf`` sets by price) among the nodes that fit, in every
  version of Slurm (slurmctld 22.05 put a 1-core job on a weight-1 node with 4 free cores,
  not on the weight-2 node before it with 1); then, among nodes of that weight, by
  ``placement`` (join order stands for slurm.conf's node order; not modelled: a dynamic
  node, in external mode, takes the first free slot of Slurm's node table, so one joining
  after a removal sits where the removed one did, not last):

  - ``first-fit`` (the default): the first in join order. Slurm 26.05's path for 1-node
    jobs ("the first match in sched_weight order").
  - ``best-fit``: Slurm's cons_tres through 25.11 (``_eval_nodes_consec``): of the runs of
    consecutive nodes where the job fits, the run with the fewest free cores (the first
    of equal ones), and in it the node with the fewest (the first of equal ones); with
    weights, the runs are those of the nodes of the chosen weight alone (a node of another
    weight between two does not split them, as slurmctld 22.05 placed a job). A real
    slurmctld 22.05 places jobs so (``tests/slurm/test_slurm_placement.py``) when they
    ask ``-c N`` (or ``-N1 -n N``) and memory per node (``--mem``). Not modelled: with
    memory per CPU (``--mem-per-cpu``, or DefMemPerCPU for a job without ``--mem``) Slurm
    counts only the free cores a node's free memory covers, and with ``-n N`` alone a
    node with fewer free cores than the job still joins a run; slurmctld 22.05 then
    chose another node than this model in a test (bench/README.md, placement).
* A gang (a job of ``nodes`` > 1, its shape per node) starts only on ``nodes`` nodes of
  one type (one usable shape) each with room for its shape, the first such nodes in order
  of weight, then join order (slurmctld 22.05 put a 2-node job on two weight-1 nodes, not
  on the two weight-2 nodes declared before them; placement applies to 1-node jobs only);
  gangs are tried before the 1-node jobs of each pass, in submit order. A gang's nodes are
  freed together, and removing or interrupting any one of them requeues it.
* A job runs for its run time from its start, then frees its room.
* ``node_removed`` (terminated) and ``node_interrupted`` (spot interruption) requeue the
  node's running jobs, which start again from scratch; ``cordon`` stops new work on a node
  (a drain). Removing a node that never joined is a no-op.

When jobs start: every call first *advances* to its ``now``. Advancing finishes running
jobs in end-time order and, at each end time, starts what now fits; changes made at time
``t`` (submit, join, removal) are scheduled at ``t`` by the next call, whatever its time.
So the engine calls, in each step at time ``t``: the changes at ``t``, then
``advance(t)`` (or any query: ``demand``, ``joined_nodes``, ``stats``...); it should wake
at ``next_finish()`` when demand matters then (a finish changes the demand).

What shoal's demand sources report: ``demand(now)`` (queued jobs per shape as
``QueuedJobs``, with ``Shape.wallTime`` the job's requested wall time; one ``RunningJob``
per running job, with its elapsed time) and ``joined_nodes()``; ``update(now)`` gives both
as the ``DemandUpdate`` a demand source's ``current()`` returns. ``version`` changes
whenever the demand or the joined nodes change.

Each job's wait is the time it spent queued before its (latest) start, requeues
included; ``stats(now)`` gives waits, jobs never started, jobs no node type could ever
hold (given ``node_shapes``; a gang by its per-node shape), requeues and core-seconds.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from shoal.daemon.demand import DemandUpdate
from shoal.scaler.model import Demand, QueuedJobs, RunningJob
from shoal.scaler.shape import Shape

__all__ = [
    "NODE_WEIGHTS",
    "PLACEMENTS",
    "Cluster",
    "ClusterStats",
    "UnschedulableJob",
    "check_choice",
]

NODE_WEIGHTS = ("equal", "price")  # the replay's node weights (engine.ReplayOptions)
PLACEMENTS = ("first-fit", "best-fit")  # which node a 1-node job starts on (module docstring)

_EPS = 1e-9  # cores are floats; memory and disk are whole bytes

_FitKey = tuple[float, float, float, bool]  # cores, memory, disk, preemptible


def _fit_key(shape: Shape) -> _FitKey:
    return (shape.cores, shape.memory, shape.disk, shape.preemptible)


@dataclass(frozen=True, slots=True)
class UnschedulableJob:
    """A job no node type could hold: ``reasons`` are the dimensions that fail on the node
    shape it comes closest to (fewest failing dimensions, first given on a tie)."""

    job: int
    shape: Shape
    reasons: tuple[str, ...]
    nodes: int = 1  # a gang's size (``shape`` is per node)


@dataclass(frozen=True, slots=True, eq=False)
class ClusterStats:
    submitted: int
    started: int  # jobs that started at least once
    completed: int
    running: int
    queued: int
    never_started: int  # queued and never started (unschedulable ones included)
    unschedulable: tuple[UnschedulableJob, ...]
    requeues: int  # job restarts caused by removed or interrupted nodes
    interruptions: int  # node_interrupted calls for joined nodes
    waits: np.ndarray  # seconds queued before the latest start, per started job, by job id
    busy_core_seconds: float  # cores x time of every run, cut-short runs included
    lost_core_seconds: float  # the part of that thrown away by requeues
    node_core_seconds: float  # usable cores x time joined, over every node

    @property
    def utilisation(self) -> float:
        """Busy over joined core-seconds (0 when no node ever joined)."""
        return self.busy_core_seconds / self.node_core_seconds if self.node_core_seconds else 0.0


class _Job:
    __slots__ = (
        "id",
        "node",
        "nodes",
        "others",
        "queued_since",
        "run_time",
        "seq",
        "shape",
        "start",
        "token",
        "waited",
    )

    def __init__(
        self, job_id: int, shape: Shape, run_time: float, seq: int, now: float, nodes: int = 1
    ) -> None:
        self.id = job_id
        self.nodes = nodes
        self.others: tuple[_Node, ...] = ()  # a running gang's nodes beyond ``node``
        self.shape = shape
        self.run_time = run_time
        self.seq = seq  # FIFO position: submit order
        self.queued_since = now
        self.waited = 0.0
        self.start: float | None = None  # of the current run; None while queued
        self.node: _Node | None = None
        self.token = 0  # run number: finish-heap entries of earlier runs are stale


class _Node:
    __slots__ = (
        "cordoned",
        "cores",
        "disk",
        "jobs",
        "joined_at",
        "memory",
        "name",
        "usable",
        "weight",
    )

    def __init__(self, name: str, usable: Shape, now: float, weight: int = 0) -> None:
        self.name = name
        self.weight = weight
        self.usable = usable
        self.cores = float(usable.cores)
        self.memory = float(usable.memory)
        self.disk = float(usable.disk)
        self.cordoned = False
        self.jobs: dict[int, _Job] = {}
        self.joined_at = now

    def fits(self, key: _FitKey) -> bool:
        cores, memory, disk, preemptible = key
        return (
            not self.cordoned
            and cores <= self.cores + _EPS
            and memory <= self.memory
            and disk <= self.disk
            and (preemptible or not self.usable.preemptible)
        )


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError`` naming ``name``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _best_fit(order: list[_Node], key: _FitKey, weight: int | None = None) -> _Node:
    """The ``best-fit`` node for a 1-node job (see the module docstring); some node fits.
    Free cores within ``_EPS`` are equal (float rounding must not break a tie). ``weight``:
    only nodes of this weight count, and a node of another, fitting or not, does not split
    a run (slurmctld 22.05 orders its nodes by weight: a real-Slurm test)."""
    best, best_total = None, math.inf
    run_best, run_total = None, 0.0
    for node in order:
        if weight is not None and node.weight != weight:
            continue
        if node.fits(key):
            run_total += node.cores
            if run_best is None or node.cores < run_best.cores - _EPS:
                run_best = node
        elif run_best is not None:
            if run_total < best_total - _EPS:
                best, best_total = run_best, run_total
            run_best, run_total = None, 0.0
    if run_best is not None and run_total < best_total - _EPS:
        best = run_best
    assert best is not None
    return best


def _gang_nodes(order: list[_Node], key: _FitKey, size: int) -> list[_Node] | None:
    """The first ``size`` nodes in ``order`` of one usable shape with room for ``key``."""
    by_type: dict[Shape, list[_Node]] = {}
    for node in order:
        if node.fits(key):
            nodes = by_type.setdefault(node.usable, [])
            nodes.append(node)
            if len(nodes) == size:
                return nodes
    return None


class Cluster:
    """See the module docstring. ``node_shapes``: the usable shape of every node type the
    planner may launch; a submitted job that fits none is recorded as unschedulable (it
    still queues, and is still reported as demand, as a real scheduler would)."""

    def __init__(self, node_shapes: Iterable[Shape] = (), placement: str = "first-fit") -> None:
        self._best_fit = check_choice("placement", placement, PLACEMENTS) == "best-fit"
        self._node_shapes = tuple(node_shapes)
        self._now = -math.inf
        self._seq = 0
        self.version = 0
        self._jobs: dict[int, _Job] = {}  # queued or running
        self._queue: dict[_FitKey, list[tuple[int, int]]] = {}  # key -> heap of (seq, job id)
        # (shape, nodes) -> the QueuedJobs demand() reports, made again when its count moves
        self._queued_shapes: dict[tuple[Shape, int], QueuedJobs] = {}
        # demand()'s queued jobs, made again only after _queued_shapes changed: a real
        # log's queue may hold thousands of shapes that wait pass after pass
        self._queued_demand: tuple[QueuedJobs, ...] | None = None
        # queued gangs by (fit key, nodes): heap of (seq, job id)
        self._gangs: dict[tuple[_FitKey, int], list[tuple[int, int]]] = {}
        self._gangs_dirty = False  # a gang queued or a node gained room since the last try
        self._queued = 0
        self._running = 0
        self._finishes: list[tuple[float, int, int, int]] = []  # (end, seq, token, job id)
        self._nodes: dict[str, _Node] = {}  # join order
        self._order: list[_Node] = []
        self._shapes: Counter[Shape] = Counter()  # nodes by usable shape
        self._weights: Counter[int] = Counter()  # nodes by weight
        # called with the time before each scheduling pass that may start a job: sets the
        # nodes' weights as they are then (``set_weight``; the replay of slurm.node_weights
        # kept, which shoal updates at every read)
        self.weigher: Callable[[float], None] | None = None
        # with a weigher: runs that ended in the last ``ended_window`` seconds, (end, start,
        # wall time, nodes), for ``running_by_node`` (a read before their end saw them)
        self.ended_window = 0.0
        self._ended: deque[tuple[float, float, float, tuple[str, ...]]] = deque()
        # What changed since the last pass: only these can let a queued job start.
        self._dirty = False
        self._fresh_nodes: set[str] = set()
        self._new_groups: set[_FitKey] = set()
        # accounting
        self._submitted = 0
        self._completed = 0
        self._requeues = 0
        self._interruptions = 0
        self._unschedulable: list[UnschedulableJob] = []
        self._done_ids = array("q")
        self._done_waits = array("d")
        self._busy = 0.0
        self._lost = 0.0
        self._node_seconds = 0.0

    # --- time ------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self._now

    def _advance_to(self, now: float) -> None:
        if now < self._now:
            raise ValueError(f"time went backwards: {now} after {self._now}")
        if now == self._now and not (self._finishes and self._finishes[0][0] <= now):
            return  # same instant: changes pile up for one pass (a burst costs one pass)
        if self._dirty:
            self._schedule(self._now)
        finishes = self._finishes
        while finishes and finishes[0][0] <= now:
            at = finishes[0][0]
            while finishes and finishes[0][0] == at:
                _, _, token, job_id = heapq.heappop(finishes)
                job = self._jobs.get(job_id)
                if job is not None and job.token == token and job.start is not None:
                    self._finish(job, at)
            self._schedule(at)
        self._now = now

    def advance(self, now: float) -> None:
        """Finish what ends by ``now`` and start what fits, at the times they happen."""
        self._advance_to(now)
        if self._dirty:
            self._schedule(now)

    def next_finish(self) -> float | None:
        """When the next running job ends (None when nothing runs)."""
        finishes = self._finishes
        while finishes:
            _, _, token, job_id = finishes[0]
            job = self._jobs.get(job_id)
            if job is not None and job.token == token and job.start is not None:
                return finishes[0][0]
            heapq.heappop(finishes)
        return None

    # --- jobs ------------------------------------------------------------------------------

    def submit(
        self, job_id: int, shape: Shape, run_time: float, now: float, nodes: int = 1
    ) -> None:
        """Queue a job (``shape.wallTime`` is what the demand reports as its wall time) of
        ``nodes`` nodes (a gang when > 1: ``shape`` is per node)."""
        self._advance_to(now)
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} is already queued or running")
        if not run_time >= 0 or math.isinf(run_time):
            raise ValueError(f"job {job_id} has run time {run_time!r}; expected a finite >= 0")
        if nodes < 1:
            raise ValueError(f"job {job_id} has {nodes} nodes; expected >= 1")
        job = _Job(job_id, shape, float(run_time), self._seq, now, nodes)
        self._seq += 1
        self._submitted += 1
        self._jobs[job_id] = job
        if self._node_shapes:
            reasons = self._unfit(shape)
            if reasons:
                self._unschedulable.append(UnschedulableJob(job_id, shape, reasons, nodes))
        self._enqueue(job, now)

    def _unfit(self, shape: Shape) -> tuple[str, ...]:
        best: list[str] | None = None
        for node in self._node_shapes:
            failing = shape.fits_in(node)
            if not failing:
                return ()
            if best is None or len(failing) < len(best):
                best = failing
        return tuple(best or ())

    def _enqueue(self, job: _Job, now: float) -> None:
        if job.nodes > 1:
            heapq.heappush(
                self._gangs.setdefault((_fit_key(job.shape), job.nodes), []), (job.seq, job.id)
            )
            self._gangs_dirty = True
        else:
            key = _fit_key(job.shape)
            heap = self._queue.get(key)
            if heap is None:
                heap = self._queue[key] = []
                self._new_groups.add(key)
            heapq.heappush(heap, (job.seq, job.id))
        job.queued_since = now
        self._queued += 1
        queued = (job.shape, job.nodes)
        held = self._queued_shapes.get(queued)
        count = held.count + 1 if held is not None else 1
        self._queued_shapes[queued] = QueuedJobs(job.shape, count, job.nodes)
        self._queued_demand = None
        self._dirty = True
        self.version += 1

    def _start(self, job: _Job, node: _Node, now: float, others: tuple[_Node, ...] = ()) -> None:
        shape = job.shape
        queued = (shape, job.nodes)
        count = self._queued_shapes[queued].count - 1
        if count:
            self._queued_shapes[queued] = QueuedJobs(shape, count, job.nodes)
        else:
            del self._queued_shapes[queued]
        self._queued_demand = None
        self._queued -= 1
        self._running += 1
        job.waited += now - job.queued_since
        job.start = now
        job.node = node
        job.others = others
        job.token += 1
        for on in (node, *others):
            on.jobs[job.id] = job
            on.cores -= shape.cores
            on.memory -= shape.memory
            on.disk -= shape.disk
        heapq.heappush(self._finishes, (now + job.run_time, job.seq, job.token, job.id))
        self.version += 1

    def _release(self, job: _Job, now: float) -> None:
        """Take a running job off its node, counting its core-seconds."""
        node = job.node
        assert node is not None and job.start is not None
        for on in (node, *job.others):  # a gang's nodes, together
            del on.jobs[job.id]
            on.cores += job.shape.cores
            on.memory += job.shape.memory
            on.disk += job.shape.disk
            if job.others and on.name in self._nodes:  # a gang's: each gained room
                self._fresh_nodes.add(on.name)
        self._busy += job.shape.cores * job.nodes * (now - job.start)
        self._running -= 1
        if self.ended_window > 0:
            ended = self._ended
            while ended and ended[0][0] < now - self.ended_window:
                ended.popleft()
            names = tuple(n.name for n in (node, *job.others))
            ended.append((now, job.start, job.shape.wallTime, names))
        job.node = None
        job.others = ()
        self._gangs_dirty = True
        self.version += 1

    def _finish(self, job: _Job, now: float) -> None:
        node = job.node
        assert node is not None
        self._release(job, now)
        self._fresh_nodes.add(node.name)
        self._dirty = True
        del self._jobs[job.id]
        self._completed += 1
        self._done_ids.append(job.id)
        self._done_waits.append(job.waited)

    def _requeue(self, job: _Job, now: float) -> None:
        assert job.start is not None
        self._lost += job.shape.cores * job.nodes * (now - job.start)
        self._release(job, now)
        job.start = None
        self._requeues += 1
        self._enqueue(job, now)

    # --- scheduling ------------------------------------------------------------------------

    def _schedule(self, now: float) -> None:
        """One FIFO + first-fit backfill pass at ``now``.

        Exact and incremental: at the end of a pass no queued job fits any node, and a
        node's room only grows when a job on it finishes, so a group of queued jobs that
        was already queued need only look at the nodes that gained room (``fresh``); a
        new group looks at every node. Within a pass room only shrinks, so each group's
        scan resumes where it stopped, and a group that fits nowhere is done.
        """
        self._dirty = False
        if self.weigher is not None and (self._queue or self._gangs):
            self.weigher(now)
        if self._gangs_dirty:
            self._schedule_gangs(now)
        fresh_names, self._fresh_nodes = self._fresh_nodes, set()
        new_groups, self._new_groups = self._new_groups, set()
        if not self._queue or not self._order:
            return
        every = self._order
        fresh = [n for n in every if n.name in fresh_names] if fresh_names else []
        heads: list[tuple[int, _FitKey]] = []
        for key, heap in self._queue.items():
            if key in new_groups or fresh:
                heads.append((heap[0][0], key))
        if not heads:
            return
        heapq.heapify(heads)
        scan: dict[_FitKey, int] = {}
        while heads:
            _, key = heads[0]
            nodes = every if key in new_groups else fresh
            i = scan.get(key, 0)
            while i < len(nodes) and not nodes[i].fits(key):
                i += 1
            if i == len(nodes):
                heapq.heappop(heads)
                continue
            scan[key] = i
            # some node has room (only fresh ones can, for a group queued before); with
            # weights, or for best fit, the choice is among every node
            node = self._choose(every, key) if self._choosing else nodes[i]
            heap = self._queue[key]
            _, job_id = heapq.heappop(heap)
            self._start(self._jobs[job_id], node, now)
            if heap:
                heapq.heapreplace(heads, (heap[0][0], key))
            else:
                del self._queue[key]
                heapq.heappop(heads)

    @property
    def _choosing(self) -> bool:
        return self._best_fit or len(self._weights) > 1

    def _choose(self, every: list[_Node], key: _FitKey) -> _Node:
        """The node a 1-node job starts on when the first that fits in join order is not
        it: the lowest weight that fits, then the placement among nodes of that weight."""
        weight = None
        if len(self._weights) > 1:
            weight = min(n.weight for n in every if n.fits(key))
            if not self._best_fit:
                return next(n for n in every if n.weight == weight and n.fits(key))
        return _best_fit(every, key, weight)

    def _schedule_gangs(self, now: float) -> None:
        """Start each queued gang, in submit order, that has enough nodes of one usable
        shape with room for it (the first such nodes in order of weight, then join order;
        the module docstring). Not incremental: it
        runs only when a gang was queued or a node gained room since the last try.

        Gangs wait grouped by what decides where they fit (fit key and node count), the
        groups taken by their first gang's submit order, as ``_schedule`` takes the 1-node
        jobs: within a pass room only shrinks, so once a group's gang finds no nodes, none
        of its later gangs would, and the group is done. A pass costs a node scan per
        group, not per waiting gang (a real log may queue thousands of gangs wider than
        the cluster can grow). A group wider than the most nodes of one usable shape is
        not scanned at all (a real log's widest gangs, past every type's max, wait for
        ever)."""
        self._gangs_dirty = False
        if not self._gangs or not self._order:
            return
        most = max(self._shapes.values())  # kept as nodes join and go, not counted a pass
        order = self._order
        if len(self._weights) > 1:
            order = sorted(order, key=lambda node: node.weight)  # stable: then join order
        heads = [(heap[0][0], group) for group, heap in self._gangs.items()]
        heapq.heapify(heads)
        while heads:
            _, group = heads[0]
            chosen = _gang_nodes(order, *group) if group[1] <= most else None
            if chosen is None:
                heapq.heappop(heads)
                continue
            heap = self._gangs[group]
            _, job_id = heapq.heappop(heap)
            self._start(self._jobs[job_id], chosen[0], now, tuple(chosen[1:]))
            if heap:
                heapq.heapreplace(heads, (heap[0][0], group))
            else:
                del self._gangs[group]
                heapq.heappop(heads)

    # --- nodes -----------------------------------------------------------------------------

    def running_by_node(self, by: float) -> Iterator[tuple[str, list[tuple[float, float]]]]:
        """Each node and the jobs that ran on it at ``by``: (expected wall time, elapsed at
        ``by``); those that ended since count if they ended within ``ended_window`` (``by``
        no earlier than that, and no earlier than the last call's)."""
        ended = self._ended
        while ended and ended[0][0] <= by:
            ended.popleft()
        gone: dict[str, list[tuple[float, float]]] = {}
        for _, start, wall, names in ended:
            if start <= by:
                for name in names:
                    gone.setdefault(name, []).append((wall, by - start))
        for node in self._order:
            starts = ((j.shape.wallTime, j.start) for j in node.jobs.values())
            jobs = [(w, by - s) for w, s in starts if s is not None and s <= by]
            yield node.name, jobs + gone.get(node.name, [])

    def set_weight(self, name: str, weight: int) -> None:
        """Slurm's ``Weight`` of a joined node from now on (``scontrol update``)."""
        node = self._nodes[name]
        if node.weight != weight:
            self._weights[node.weight] -= 1
            if not self._weights[node.weight]:
                del self._weights[node.weight]
            self._weights[weight] += 1
            node.weight = weight

    def node_joined(self, name: str, usable: Shape, now: float, weight: int = 0) -> None:
        """A node joined the scheduler with ``usable`` room (``usable.preemptible``: spot)
        and Slurm's ``weight`` (1-node jobs take the lowest that fits first)."""
        self._advance_to(now)
        if name in self._nodes:
            raise ValueError(f"node {name!r} has already joined")
        node = _Node(name, usable, now, weight)
        self._weights[weight] += 1
        self._nodes[name] = node
        self._order.append(node)
        self._shapes[usable] += 1
        self._fresh_nodes.add(name)
        self._dirty = True
        self._gangs_dirty = True
        self.version += 1

    def cordon(self, name: str, now: float) -> None:
        """No new work on ``name`` (its running jobs go on). Unknown names are ignored."""
        self._advance_to(now)
        node = self._nodes.get(name)
        if node is not None and not node.cordoned:
            node.cordoned = True
            self.version += 1

    def uncordon(self, name: str, now: float) -> None:
        """New work on ``name`` again (an undrain). Unknown names are ignored."""
        self._advance_to(now)
        node = self._nodes.get(name)
        if node is not None and node.cordoned:
            node.cordoned = False
            self._fresh_nodes.add(name)
            self._dirty = True
            self._gangs_dirty = True
            self.version += 1

    def node_removed(self, name: str, now: float) -> tuple[int, ...]:
        """``name`` was terminated: its running jobs are requeued (their ids returned)."""
        return self._remove(name, now, interrupted=False)

    def node_interrupted(self, name: str, now: float) -> tuple[int, ...]:
        """``name`` was interrupted (spot): as ``node_removed``, counted as an interruption."""
        return self._remove(name, now, interrupted=True)

    def _remove(self, name: str, now: float, interrupted: bool) -> tuple[int, ...]:
        self._advance_to(now)
        node = self._nodes.pop(name, None)
        if node is None:
            return ()
        self._order.remove(node)
        self._shapes[node.usable] -= 1
        if not self._shapes[node.usable]:
            del self._shapes[node.usable]
        self._weights[node.weight] -= 1
        if not self._weights[node.weight]:
            del self._weights[node.weight]
        self._fresh_nodes.discard(name)
        if interrupted:
            self._interruptions += 1
        self._node_seconds += node.usable.cores * (now - node.joined_at)
        jobs = sorted(node.jobs.values(), key=lambda j: j.seq)
        for job in jobs:
            self._requeue(job, now)
        self.version += 1
        return tuple(job.id for job in jobs)

    # --- what the demand source reports ----------------------------------------------------

    def demand(self, now: float) -> Demand:
        """Queued jobs per shape and running jobs with their elapsed time, at ``now``."""
        self.advance(now)
        queued = self._queued_demand
        if queued is None:
            queued = self._queued_demand = tuple(self._queued_shapes.values())
        running = tuple(
            RunningJob(job.shape, node.name, now - (job.start or 0.0))
            for node in self._order
            for job in node.jobs.values()
        )
        return Demand(queued=queued, running=running)

    def update(self, now: float) -> DemandUpdate:
        """``demand(now)`` and the joined nodes, as a demand source hands them to the loop."""
        return DemandUpdate(self.demand(now), frozenset(self._nodes))

    def joined_nodes(self, now: float | None = None) -> frozenset[str]:
        """Names of the nodes joined (cordoned ones included)."""
        if now is not None:
            self.advance(now)
        return frozenset(self._nodes)

    def queued_jobs(self) -> list[tuple[int, Shape, float]]:
        """Every queued job as (id, shape, queued since: submit or latest requeue)."""
        return [(j.id, j.shape, j.queued_since) for j in self._jobs.values() if j.start is None]

    def nodes_of(self, job_id: int) -> tuple[str, ...]:
        """The nodes a running job runs on (a gang's in order; () when it is not running)."""
        job = self._jobs.get(job_id)
        if job is None or job.node is None:
            return ()
        return tuple(n.name for n in (job.node, *job.others))

    def running_on(self, name: str) -> int:
        """How many jobs run on ``name`` (0 for an unknown node)."""
        node = self._nodes.get(name)
        return len(node.jobs) if node else 0

    @property
    def queued_count(self) -> int:
        return self._queued

    @property
    def running_count(self) -> int:
        return self._running

    @property
    def unschedulable_count(self) -> int:
        return len(self._unschedulable)

    # --- results ---------------------------------------------------------------------------

    def stats(self, now: float) -> ClusterStats:
        """Totals so far; live nodes and running jobs are counted up to ``now``."""
        self.advance(now)
        # the finished jobs' arrays as they are (as Python lists: ~70 bytes a job more at
        # the end of a replay), then the jobs still queued or running
        ids, waits = array("q"), array("d")
        busy = self._busy
        never = 0
        for job in self._jobs.values():
            if job.start is not None:
                ids.append(job.id)
                waits.append(job.waited)
                busy += job.shape.cores * job.nodes * (now - job.start)
            elif job.token:
                ids.append(job.id)  # requeued and waiting again: its last start counts
                waits.append(job.waited)
            else:
                never += 1
        all_ids = np.concatenate((np.asarray(self._done_ids), np.asarray(ids)))
        all_waits = np.concatenate((np.asarray(self._done_waits), np.asarray(waits)))
        order = np.argsort(all_ids, kind="stable")
        node_seconds = self._node_seconds + sum(
            n.usable.cores * (now - n.joined_at) for n in self._order
        )
        return ClusterStats(
            submitted=self._submitted,
            started=len(all_ids),
            completed=self._completed,
            running=self._running,
            queued=self._queued,
            never_started=never,
            unschedulable=tuple(self._unschedulable),
            requeues=self._requeues,
            interruptions=self._interruptions,
            waits=all_waits[order],
            busy_core_seconds=busy,
            lost_core_seconds=self._lost,
            node_core_seconds=node_seconds,
        )
