"""The in-simulation scheduler: hand-computed cases, and a naive reference on random events."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from shoal.daemon.simulate.cluster import PLACEMENTS, Cluster
from shoal.scaler.model import QueuedJobs, RunningJob
from shoal.scaler.shape import Shape

GiB = 1024**3


def job(cores: float, memory: float = 1 * GiB, wall: float = 3600, pre: bool = False) -> Shape:
    return Shape(wall, memory, cores, 0, pre)


def node(cores: float, memory: float = 16 * GiB, disk: float = 100 * GiB, pre: bool = False):
    return Shape(3600, memory, cores, disk, pre)


def starts(cluster: Cluster, now: float) -> dict[str, list[float]]:
    """node -> elapsed of each running job."""
    out: dict[str, list[float]] = {}
    for r in cluster.demand(now).running:
        out.setdefault(r.node_id, []).append(r.elapsed)
    return out


def test_fifo_on_one_node() -> None:
    c = Cluster()
    c.node_joined("n1", node(4), 0)
    c.submit(0, job(4), 100, 0)
    c.submit(1, job(4), 50, 0)
    c.submit(2, job(4), 10, 0)
    c.advance(0)
    assert (c.running_count, c.queued_count) == (1, 2)
    assert c.next_finish() == 100
    c.advance(1000)
    stats = c.stats(1000)
    # A runs 0-100, B 100-150, C 150-160.
    assert stats.waits.tolist() == [0, 100, 150]
    assert (stats.completed, stats.never_started, stats.started) == (3, 0, 3)
    assert stats.busy_core_seconds == 4 * 160
    assert stats.node_core_seconds == 4 * 1000
    assert stats.utilisation == pytest.approx(0.16)


def test_backfill_lets_a_smaller_later_job_pass_a_waiting_one() -> None:
    c = Cluster()
    c.node_joined("n1", node(4), 0)
    c.submit(0, job(2), 100, 0)  # A: starts at 0, leaves 2 cores
    c.submit(1, job(4), 10, 0)  # B: needs the whole node, waits for A
    c.submit(2, job(2), 50, 0)  # C: backfills beside A at 0
    c.advance(60)  # C ended at 50; 2 cores free is not enough for B
    assert c.queued_count == 1
    assert c.demand(60).queued == (QueuedJobs(job(4), 1),)
    c.advance(100)  # A ends: B starts at 100
    assert c.demand(100).running == (RunningJob(job(4), "n1", 0.0),)
    assert c.stats(200).waits.tolist() == [0, 100, 0]


def test_first_fit_in_join_order_and_elapsed_times() -> None:
    c = Cluster()
    c.node_joined("small", node(2), 0)
    c.node_joined("big", node(8), 0)
    c.submit(0, job(2), 1000, 10)  # small has room
    c.submit(1, job(2), 1000, 20)  # small is full: big
    c.submit(2, job(4), 1000, 30)  # big
    assert starts(c, 100) == {"small": [90.0], "big": [80.0, 70.0]}
    update = c.update(100)
    assert update.demand == c.demand(100)
    assert update.joined_nodes == frozenset({"small", "big"})
    assert c.joined_nodes() == frozenset({"small", "big"})
    assert c.running_on("big") == 2
    assert c.running_on("gone") == 0


def pin(c: Cluster, name: str, job_id: int, shape: Shape, run: float, now: float) -> None:
    """Start job ``job_id`` on node ``name`` alone (the others cordoned meanwhile)."""
    others = [n for n in c.joined_nodes() if n != name]
    for other in others:
        c.cordon(other, now)
    c.submit(job_id, shape, run, now)
    c.advance(now)
    assert c.nodes_of(job_id) == (name,)
    for other in others:
        c.uncordon(other, now)


def placed(placement: str, free: list[float], cores: list[float], cordon: str = "") -> list[str]:
    """Where jobs of ``cores`` land, one after another, on nodes n1.. of 4 cores with
    ``free`` cores left each (a filler job takes the rest)."""
    c = Cluster(placement=placement)
    names = [f"n{i + 1}" for i in range(len(free))]
    for i, (name, room) in enumerate(zip(names, free, strict=True)):
        c.node_joined(name, node(4), 0)
        if room < 4:  # a filler on this node alone
            pin(c, name, 100 + i, job(4 - room), 10_000, 0)
    if cordon:
        c.cordon(cordon, 0)
    where = []
    for i, n in enumerate(cores):
        c.submit(i, job(n), 1000, 1 + i)
        c.advance(1 + i)
        (name,) = c.nodes_of(i)
        where.append(name)
    return where


def test_best_fit_takes_the_run_of_nodes_then_the_node_with_the_fewest_free_cores() -> None:
    # free cores [2, 1, 4]: one run; best fit takes n2, first fit n1
    assert placed("best-fit", [2, 1, 4], [1]) == ["n2"]
    assert placed("first-fit", [2, 1, 4], [1]) == ["n1"]
    # [2, 0, 1, 4]: the full n2 splits the runs {n1}: 2 and {n3, n4}: 5; cons_tres takes
    # the run first (n1), not the node with the fewest free cores overall (n3)
    assert placed("best-fit", [2, 0, 1, 4], [1]) == ["n1"]
    # equal runs and equal nodes: the first
    assert placed("best-fit", [3, 0, 3], [1, 1]) == ["n1", "n1"]
    assert placed("best-fit", [3, 0, 3, 0, 3], [1]) == ["n1"]
    assert placed("best-fit", [4, 2, 2, 4], [1]) == ["n2"]
    # a job that fits only some nodes: the runs are of those (n1 with 1 free breaks none:
    # it is no candidate), so [n2, n3] against [n4]
    assert placed("best-fit", [1, 3, 4, 0, 3], [2]) == ["n5"]


def test_best_fit_a_cordoned_node_is_no_candidate_and_splits_the_run() -> None:
    # free [3, 4, 4, 2]: one run of 13 free cores, its fullest node n4; with n2 cordoned
    # (drained) the runs are {n1}: 3 and {n3, n4}: 6, so n1
    assert placed("best-fit", [3, 4, 4, 2], [2]) == ["n4"]
    assert placed("best-fit", [3, 4, 4, 2], [2], cordon="n2") == ["n1"]


def test_best_fit_a_job_queued_before_takes_its_run_among_every_node() -> None:
    """Only nodes that gained room can take a job queued before, but the runs are those of
    every node: a full node between the ones freed at once still splits them."""
    c = Cluster(placement="best-fit")
    names = ["n1", "n2", "n3", "n4"]
    for name in names:
        c.node_joined(name, node(4), 0)
    # (node, cores, run time): at 10, n1 has 3 free cores, n3 2 and n4 4; n2 stays full
    pinned = [("n1", 1, 1000), ("n1", 3, 10), ("n2", 4, 1000), ("n3", 2, 1000)]
    pinned += [("n3", 2, 10), ("n4", 4, 10)]
    for i, (name, cores, run) in enumerate(pinned):
        pin(c, name, 100 + i, job(cores), run, 0)
    c.submit(1, job(2), 100, 1)
    c.advance(1)
    assert c.nodes_of(1) == ()  # queued before the finishes
    c.advance(10)
    # runs {n1}: 3 and {n3, n4}: 6, so n1; over the freed nodes alone n3, the fewest
    assert c.nodes_of(1) == ("n1",)


@pytest.mark.parametrize("between", [False, True], ids=["one-run", "two-runs"])
def test_best_fit_equal_free_cores_that_differ_by_rounding_are_equal(between: bool) -> None:
    """Cores are floats (a CSV trace may give 0.1): 4 - 0.1 - 0.2 and 4 - 0.3 are the same
    free cores, so the first node (or run, with a full node between) wins the tie, as it
    does for whole cores."""
    c = Cluster(placement="best-fit")
    names = ["n1", "full", "n2"] if between else ["n1", "n2"]
    for name in names:
        c.node_joined(name, node(4), 0)
    pinned = [("n1", 0.3), ("full", 4), ("n2", 0.1), ("n2", 0.2)]
    for i, (name, cores) in enumerate(p for p in pinned if p[0] in names):
        pin(c, name, 100 + i, job(cores), 1000, 0)
    c.submit(1, job(1), 1000, 1)
    c.advance(1)
    assert c.nodes_of(1) == ("n1",)


def test_the_lowest_weight_that_fits_comes_before_either_placement() -> None:
    for placement in PLACEMENTS:
        c = Cluster(placement=placement)
        c.node_joined("b1", node(4), 0, weight=2)
        c.node_joined("a1", node(4), 0, weight=1)
        c.node_joined("a2", node(1), 0, weight=1)
        c.submit(0, job(1), 1000, 1)  # a1 or a2 (weight 1): first fit a1, best fit a2
        c.submit(1, job(3), 1000, 2)  # weight 1 has room on a1 only
        c.submit(2, job(4), 1000, 3)  # only b1 fits: a heavier node is used when no lighter fits
        c.advance(3)
        where = [c.nodes_of(i) for i in range(3)]
        first = placement == "first-fit"
        assert where == [("a1",) if first else ("a2",), ("a1",), ("b1",)], placement


def test_a_weigher_sets_the_weights_before_each_scheduling_pass() -> None:
    """``Cluster.weigher`` (the replay of slurm.node_weights kept) runs before a pass that
    may start a job, with the pass's time; what it sets (``set_weight``) decides that pass,
    and ``running_by_node`` gives it the jobs started by a time, elapsed then."""
    c = Cluster()
    c.node_joined("a", node(4), 0, weight=9)
    c.node_joined("b", node(4), 0, weight=9)
    pin(c, "b", 100, job(1, wall=7200), 1000, 0)
    calls: list[float] = []

    def weigh(t: float) -> None:
        calls.append(t)
        jobs = dict(c.running_by_node(t - 5))
        assert jobs == {"a": [], "b": [(7200, t - 5)]}
        c.set_weight("b", 1)  # the busy node first

    c.weigher = weigh
    c.submit(1, job(1), 1000, 10)
    c.advance(10)
    assert calls == [10] and c.nodes_of(1) == ("b",)  # first fit would say a
    assert dict(c.running_by_node(10)) == {"a": [], "b": [(7200, 10), (3600, 0)]}
    assert dict(c.running_by_node(9)) == {"a": [], "b": [(7200, 9)]}  # not started yet
    c.advance(20)  # nothing queued: no pass to weigh for
    assert calls == [10]


@pytest.mark.parametrize("x_free", [4, 0])
def test_best_fit_a_node_of_another_weight_does_not_split_a_run(x_free: int) -> None:
    """a1 and b1 (weight 1, 2 free cores each) with x1 (weight 2, empty or full) between
    them form one run of 4 free cores, so d1 (weight 1, 3 free) is the best fit, as
    slurmctld 22.05 placed it (tests/slurm/test_slurm_placement.py); were x1 to split the
    run, {a1}: 2 would be."""
    c = Cluster(placement="best-fit")
    c.node_joined("a1", node(2), 0, weight=1)
    c.node_joined("x1", node(4), 0, weight=2)
    c.node_joined("b1", node(2), 0, weight=1)
    c.node_joined("c1", node(1), 0, weight=1)
    c.node_joined("d1", node(3), 0, weight=1)
    c.cordon("c1", 0)  # not free for the job: it splits the runs
    if not x_free:
        c.cordon("x1", 0)
    c.submit(0, job(1), 1000, 1)
    c.advance(1)
    assert c.nodes_of(0) == ("d1",)


def test_an_unknown_placement_is_refused() -> None:
    with pytest.raises(ValueError, match="first-fit, best-fit"):
        Cluster(placement="random")


def test_finishes_between_calls_start_the_next_job_at_their_own_time() -> None:
    c = Cluster()
    c.node_joined("n1", node(1), 0)
    for i, run in enumerate([30, 30, 30]):
        c.submit(i, job(1), run, 0)
    # Nothing is called between 0 and 1000; the jobs still ran back to back.
    assert c.stats(1000).waits.tolist() == [0, 30, 60]


def test_memory_disk_and_preemptible_limit_where_jobs_run() -> None:
    c = Cluster()
    c.node_joined("spot", node(16, pre=True), 0)
    c.node_joined("tiny-mem", node(16, memory=2 * GiB), 0)
    c.submit(0, job(1, pre=False, memory=4 * GiB), 100, 0)  # not on spot; too big for tiny
    c.submit(1, job(1, pre=True, memory=4 * GiB), 100, 0)  # may run on spot
    c.submit(2, job(1, pre=False, memory=GiB), 100, 0)  # not on spot: tiny-mem
    c.submit(3, Shape(3600, GiB, 1, 200 * GiB, True), 100, 0)  # disk fits nowhere
    c.advance(0)
    running = {(r.node_id, r.shape.memory) for r in c.demand(0).running}
    assert running == {("spot", 4 * GiB), ("tiny-mem", GiB)}
    assert c.queued_count == 2


def test_interruption_requeues_the_running_job_and_it_starts_again_from_scratch() -> None:
    c = Cluster()
    c.node_joined("spot-1", node(4, pre=True), 0)
    c.submit(7, job(2, pre=True), 100, 0)
    assert c.node_interrupted("spot-1", 30) == (7,)
    assert c.joined_nodes() == frozenset()
    assert c.demand(30).queued == (QueuedJobs(job(2, pre=True), 1),)
    c.node_joined("spot-2", node(4, pre=True), 40)
    c.advance(139)
    assert c.running_count == 1
    c.advance(140)
    stats = c.stats(140)
    assert stats.completed == 1
    assert stats.requeues == 1
    assert stats.interruptions == 1
    assert stats.waits.tolist() == [10.0]  # queued 0 s, then 30-40 after the interruption
    assert stats.lost_core_seconds == 2 * 30
    assert stats.busy_core_seconds == 2 * 30 + 2 * 100
    assert stats.node_core_seconds == 4 * 30 + 4 * 100


def test_termination_requeues_in_submit_order_and_is_not_an_interruption() -> None:
    c = Cluster()
    c.node_joined("a", node(2), 0)
    c.submit(1, job(1), 100, 0)
    c.submit(2, job(1), 100, 1)
    c.submit(3, job(1), 100, 2)  # queued behind
    assert c.node_removed("a", 10) == (1, 2)
    stats = c.stats(10)
    assert (stats.requeues, stats.interruptions, stats.queued, stats.running) == (2, 0, 3, 0)
    c.node_joined("b", node(2), 20)
    # 1 and 2 keep their places ahead of 3.
    assert sorted(r.elapsed for r in c.demand(20).running) == [0.0, 0.0]
    assert c.demand(20).queued == (QueuedJobs(job(1), 1),)
    assert c.stats(20).never_started == 1


def test_removing_a_node_that_never_joined_is_a_no_op() -> None:
    c = Cluster()
    assert c.node_removed("booting-1", 5) == ()
    assert c.node_interrupted("booting-2", 6) == ()
    assert c.stats(7).interruptions == 0


def test_a_job_larger_than_every_node_type_is_reported_and_still_demand() -> None:
    types = [node(4, memory=7 * GiB), node(2, memory=15 * GiB, pre=True)]
    c = Cluster(node_shapes=types)
    c.node_joined("n1", types[0], 0)
    big = job(8, memory=32 * GiB)
    c.submit(0, big, 60, 0)
    c.submit(1, job(1), 60, 0)
    c.submit(2, job(2, memory=10 * GiB, pre=True), 60, 0)  # fits the spot type: schedulable
    assert c.unschedulable_count == 1
    assert c.demand(0).queued == (QueuedJobs(big, 1), QueuedJobs(job(2, 10 * GiB, pre=True), 1))
    stats = c.stats(1000)
    (u,) = stats.unschedulable
    assert (u.job, u.shape) == (0, big)
    assert set(u.reasons) == {"memory", "cores"}
    assert stats.never_started == 2
    assert stats.completed == 1


def test_cordoned_node_takes_no_new_work_but_finishes_its_own() -> None:
    c = Cluster()
    c.node_joined("n1", node(2), 0)
    c.submit(0, job(1), 100, 0)
    c.cordon("n1", 10)
    c.submit(1, job(1), 100, 20)
    c.advance(500)
    stats = c.stats(500)
    assert (stats.completed, stats.queued) == (1, 1)
    assert c.joined_nodes() == frozenset({"n1"})
    c.cordon("unknown", 600)


def test_an_uncordoned_node_takes_the_queued_work_again() -> None:
    c = Cluster()
    c.node_joined("n1", node(2), 0)
    c.cordon("n1", 0)
    c.submit(0, job(1), 100, 5)
    c.submit(1, job(1), 100, 6)
    assert sorted((i, since) for i, _, since in c.queued_jobs()) == [(0, 5.0), (1, 6.0)]
    version = c.version
    c.uncordon("n1", 30)
    assert c.version > version
    c.advance(30)
    assert c.queued_jobs() == [] and c.running_on("n1") == 2
    c.uncordon("unknown", 40)


def test_zero_run_time_jobs_start_and_end_at_once() -> None:
    c = Cluster()
    c.node_joined("n1", node(1), 0)
    for i in range(3):
        c.submit(i, job(1), 0, 5)
    c.advance(5)
    c.advance(6)
    stats = c.stats(6)
    assert stats.completed == 3
    assert stats.waits.tolist() == [0, 0, 0]


def test_same_instant_changes_apply_together() -> None:
    """A node that joins and leaves at one instant never runs anything."""
    c = Cluster()
    c.submit(0, job(1), 10, 0)
    c.node_joined("n1", node(1), 5)
    assert c.node_removed("n1", 5) == ()
    assert c.stats(5).requeues == 0


def test_version_changes_with_demand() -> None:
    c = Cluster()
    v0 = c.version
    c.submit(0, job(1), 10, 0)
    v1 = c.version
    assert v1 != v0
    c.advance(1)
    assert c.version == v1  # nothing could start, nothing changed
    c.node_joined("n1", node(1), 2)
    c.advance(2)
    v2 = c.version
    assert v2 != v1
    c.advance(12)
    assert c.version != v2


BAD_CALLS = [
    pytest.param(lambda c: c.submit(9, job(1), 1, 0), "backwards", id="time"),
    pytest.param(lambda c: c.submit(1, job(1), 1, 10), "already", id="job-twice"),
    pytest.param(lambda c: c.node_joined("n1", node(1), 10), "already joined", id="node-twice"),
    pytest.param(lambda c: c.submit(2, job(1), -1, 10), "run time", id="negative-run"),
    pytest.param(lambda c: c.submit(3, job(1), float("inf"), 10), "run time", id="inf-run"),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_bad_calls_raise(call, message: str) -> None:  # type: ignore[no-untyped-def]
    c = Cluster()
    c.node_joined("n1", node(1), 0)
    c.submit(1, job(1), 1000, 10)
    with pytest.raises(ValueError, match=message):
        call(c)


# --- a naive reference: a full FIFO first-fit scan over everything, at every instant -------


@dataclass
class RefNode:
    name: str
    cores: float
    memory: float
    disk: float
    pre: bool
    cordoned: bool = False
    kind: int = 0  # its node type: a gang's nodes are all of one
    weight: int = 0  # Slurm's Weight: a 1-node job takes the lowest that fits


@dataclass
class RefJob:
    id: int
    shape: Shape
    run: float
    seq: int
    queued_since: float
    waited: float = 0.0
    start: float | None = None
    node: RefNode | None = None
    done: bool = False
    starts: list[tuple[float, str]] = field(default_factory=list)
    nodes: int = 1  # a gang's size
    others: list[RefNode] = field(default_factory=list)  # a running gang's other nodes


class Reference:
    """Same rules as Cluster, written the obvious way: every pass scans every queued gang,
    then every queued 1-node job, in submit order against every node in join order."""

    def __init__(self, placement: str = "first-fit") -> None:
        self.placement = placement
        self.now = 0.0
        self.nodes: list[RefNode] = []
        self.jobs: dict[int, RefJob] = {}
        self.requeues = 0

    def fits(self, n: RefNode, s: Shape) -> bool:
        return (
            not n.cordoned
            and s.cores <= n.cores
            and s.memory <= n.memory
            and s.disk <= n.disk
            and (s.preemptible or not n.pre)
        )

    def take(self, j: RefJob, nodes: list[RefNode], t: float) -> None:
        for n in nodes:
            n.cores -= j.shape.cores
            n.memory -= j.shape.memory
            n.disk -= j.shape.disk
        j.waited += t - j.queued_since
        j.start, j.node, j.others = t, nodes[0], nodes[1:]
        j.starts.append((t, nodes[0].name))

    def scan(self, t: float) -> None:
        queued = [j for j in sorted(self.jobs.values(), key=lambda j: j.seq) if j.start is None]
        for j in (j for j in queued if j.nodes > 1 and not j.done):
            by_kind: dict[int, list[RefNode]] = {}
            for n in sorted(self.nodes, key=lambda n: n.weight):  # then join order
                if self.fits(n, j.shape):
                    group = by_kind.setdefault(n.kind, [])
                    group.append(n)
                    if len(group) == j.nodes:
                        self.take(j, group, t)
                        break
        for j in (j for j in queued if j.nodes == 1 and not j.done):
            fitting = [n for n in self.nodes if self.fits(n, j.shape)]
            if not fitting:
                continue
            lowest = min(n.weight for n in fitting)
            fitting = [n for n in fitting if n.weight == lowest]
            if self.placement == "first-fit":
                self.take(j, [fitting[0]], t)
                continue
            # best fit: split the nodes of the lowest weight (the others left out, as
            # slurmctld orders its nodes by weight) into runs where the job fits; the run
            # with the fewest free cores, then its node with the fewest (min keeps the first)
            runs = [
                list(run)
                for fits, run in itertools.groupby(
                    [n for n in self.nodes if n.weight == lowest],
                    lambda n, s=j.shape: self.fits(n, s),
                )
                if fits
            ]
            run = min(runs, key=lambda r: sum(n.cores for n in r))
            self.take(j, [min(run, key=lambda n: n.cores)], t)

    def free(self, j: RefJob) -> None:
        assert j.node is not None
        for n in [j.node, *j.others]:
            n.cores += j.shape.cores
            n.memory += j.shape.memory
            n.disk += j.shape.disk
        j.node, j.others = None, []

    def to(self, t: float) -> None:
        if t == self.now:
            return
        self.scan(self.now)
        while True:
            ends = [j.start + j.run for j in self.jobs.values() if j.start is not None]
            ends = [e for e in ends if e <= t]
            if not ends:
                break
            at = min(ends)
            for j in list(self.jobs.values()):
                if j.start is not None and j.start + j.run == at:
                    self.free(j)
                    j.start = None
                    j.done = True
            self.scan(at)
        self.now = t

    def remove(self, name: str) -> None:
        for n in self.nodes:
            if n.name == name:
                for j in sorted(self.jobs.values(), key=lambda j: j.seq):
                    if j.node is n or any(o is n for o in j.others):
                        self.free(j)
                        j.start = None
                        j.queued_since = self.now
                        self.requeues += 1
                self.nodes.remove(n)
                return


NODE_SHAPES = [node(2, 4 * GiB), node(4, 8 * GiB), node(8, 32 * GiB, pre=True), node(1, GiB)]
JOB_SHAPES = [
    job(1, GiB),
    job(2, 2 * GiB),
    job(1, 6 * GiB, pre=True),
    job(4, 4 * GiB, pre=True),
    job(3, 12 * GiB),
]

events = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 0, 1, 5, 30]),  # time step
        st.sampled_from(
            # joins outnumber removals, so runs of several nodes form (best fit's case)
            [*("submit",) * 3, "gang", "join", "join", "remove", "interrupt", "cordon", "uncordon"]
        ),
        st.integers(min_value=0, max_value=40),  # which shape / node
        # few run times and many steps of 0: several nodes gain room at the same instant
        st.sampled_from([1, 10, 10, 45, 100]),  # run time
    ),
    max_size=80,
)


@pytest.mark.parametrize("weighted", [False, True], ids=["equal-weights", "weights"])
@pytest.mark.parametrize("placement", PLACEMENTS)
@settings(max_examples=400, deadline=None)
@given(events=events)
# best fit with weights: n2 (weight 1) between the weight-0 nodes does not split their run
# ({n0, n1, n3}: 5 free cores, n0 the fewest with 1; split, {n3}: 2 would win); 400
# examples rarely find a case like it
@example(
    events=[
        (0, "submit", 0, 10),
        *[(0, "join", pick, 1) for pick in (0, 0, 4, 0)],
        (1, "submit", 0, 1),
    ]
)
def test_incremental_passes_match_the_naive_reference(
    events: list,  # type: ignore[type-arg]
    placement: str,
    weighted: bool,
) -> None:
    c = Cluster(placement=placement)
    ref = Reference(placement)
    t = 0.0
    names: list[str] = []
    next_job = 0
    for step, op, pick, run in events:
        t += step
        ref.to(t)
        if step:  # changes so far are all before t: advancing to it schedules as ref.to
            c.advance(t)
            assert_same_nodes(c, ref)
        if op in ("submit", "gang"):
            shape = JOB_SHAPES[pick % len(JOB_SHAPES)]
            size = 2 + pick % 2 if op == "gang" else 1
            c.submit(next_job, shape, run, t, size)
            ref.jobs[next_job] = RefJob(next_job, shape, run, next_job, t, nodes=size)
            next_job += 1
        elif op == "join":
            name = f"n{len(names)}"
            names.append(name)
            kind = pick % len(NODE_SHAPES)
            shape = NODE_SHAPES[kind]
            weight = (pick // len(NODE_SHAPES)) % 3 if weighted else 0
            c.node_joined(name, shape, t, weight)
            ref.nodes.append(
                RefNode(
                    name,
                    shape.cores,
                    shape.memory,
                    shape.disk,
                    shape.preemptible,
                    kind=kind,
                    weight=weight,
                )
            )
        elif names:
            name = names[pick % len(names)]
            if op in ("cordon", "uncordon"):
                getattr(c, op)(name, t)
                for n in ref.nodes:
                    if n.name == name:
                        n.cordoned = op == "cordon"
            elif op == "remove":
                c.node_removed(name, t)
                ref.remove(name)
            else:
                c.node_interrupted(name, t)
                ref.remove(name)
    end = t + 1000
    ref.to(end)
    ref.scan(end)
    stats = c.stats(end)
    expected_waits = [j.waited for j in sorted(ref.jobs.values(), key=lambda j: j.id) if j.starts]
    assert stats.waits.tolist() == pytest.approx(expected_waits)
    assert stats.requeues == ref.requeues
    queued = [j for j in ref.jobs.values() if j.start is None and not j.done]
    assert stats.queued == len(queued)
    assert stats.never_started == sum(1 for j in queued if not j.starts)
    assert stats.completed == sum(1 for j in ref.jobs.values() if j.done)
    running = sorted((r.node_id, r.elapsed) for r in c.demand(end).running)
    assert running == sorted(
        (n.name, end - j.start)
        for j in ref.jobs.values()
        if j.start is not None and j.node is not None
        for n in [j.node, *j.others]
    )
    assert_same_nodes(c, ref)


def assert_same_nodes(c: Cluster, ref: Reference) -> None:
    """Each running job on the very nodes the reference chose."""
    for j in ref.jobs.values():
        if j.start is not None and j.node is not None:
            assert c.nodes_of(j.id) == tuple(n.name for n in [j.node, *j.others])
