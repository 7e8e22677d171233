"""Gangs in the replay's scheduler: N nodes of one type at once, freed together."""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.daemon.simulate import cluster as cluster_module
from shoal.daemon.simulate.cluster import Cluster, _fit_key, _gang_nodes
from shoal.scaler.model import QueuedJobs
from shoal.scaler.shape import Shape

GiB = 1024**3
C12 = Shape(3600, 47 * GiB, 12, 100 * GiB, False)  # a 12-core type, usable
C12_OTHER = Shape(3600, 95 * GiB, 12, 100 * GiB, False)  # another 12-core type
PER_NODE = Shape(3600, 40 * GiB, 12, 0, False)


def test_a_gang_takes_the_lowest_weight_type_with_room_first() -> None:
    """Two of each type, the heavier joined first: a 2-node gang goes to the lighter
    type's nodes (as slurmctld 22.05, tests/slurm/test_slurm_placement.py), the next to the
    heavier's once the lighter's are full."""
    c = Cluster([C12, C12_OTHER])
    for name, shape, weight in (("b1", C12, 2), ("b2", C12, 2), ("a1", C12_OTHER, 1)):
        c.node_joined(name, shape, 0, weight=weight)
    c.node_joined("a2", C12_OTHER, 0, weight=1)
    c.submit(0, PER_NODE, 100, 1, nodes=2)
    c.submit(1, PER_NODE, 100, 1, nodes=2)
    c.advance(1)
    assert (c.nodes_of(0), c.nodes_of(1)) == (("a1", "a2"), ("b1", "b2"))


def test_a_4_node_job_waits_for_4_free_nodes_of_one_type() -> None:
    c = Cluster([C12])
    c.submit(0, PER_NODE, 100, 0, nodes=4)
    for i in range(3):
        c.node_joined(f"n{i}", C12, 10)
    c.advance(10)
    # 3 nodes would hold 3 of its 4 parts: the gang waits whole, and says so as demand
    assert (c.running_count, c.queued_count) == (0, 1)
    assert c.demand(10).queued == (QueuedJobs(PER_NODE, 1, node_count=4),)
    c.node_joined("other", C12_OTHER, 20)  # 4 nodes, but not of one type
    c.advance(20)
    assert c.running_count == 0
    c.node_joined("n3", C12, 30)
    c.advance(30)
    assert c.running_count == 1
    assert c.nodes_of(0) == ("n0", "n1", "n2", "n3")
    running = c.demand(30).running
    assert sorted(r.node_id for r in running) == ["n0", "n1", "n2", "n3"]
    assert {r.shape for r in running} == {PER_NODE}
    stats = c.stats(200)
    assert stats.waits.tolist() == [30]  # joined at 30, not when 3 were there
    assert stats.busy_core_seconds == 12 * 4 * 100


def test_a_gang_frees_its_nodes_together_and_a_lost_node_requeues_it_whole() -> None:
    c = Cluster()
    for i in range(4):
        c.node_joined(f"n{i}", C12, 0)
    c.submit(0, PER_NODE, 100, 0, nodes=2)
    c.submit(1, Shape(3600, 4 * GiB, 12, 0, False), 10, 0)  # 1-node, whole node's cores
    c.advance(0)
    assert c.nodes_of(0) == ("n0", "n1")
    assert c.nodes_of(1) == ("n2",)  # the gang's nodes have no cores left for it
    assert c.node_removed("n1", 5) == (0,)
    c.advance(5)
    # n0 is free again too; the gang restarts on two free nodes of its type: n0 and n3
    assert c.nodes_of(0) == ("n0", "n3")
    assert c.stats(5).requeues == 1
    c.advance(105)
    assert c.stats(105).completed == 2
    assert c.running_count == 0
    c.submit(2, PER_NODE, 10, 110, nodes=3)  # n0, n2, n3 are all free again
    c.advance(110)
    assert c.nodes_of(2) == ("n0", "n2", "n3")


def test_a_gang_that_fits_no_type_is_reported_with_its_size() -> None:
    c = Cluster([C12])
    c.submit(0, Shape(3600, 4 * GiB, 16, 0, False), 10, 0, nodes=8)
    c.submit(1, PER_NODE, 10, 0, nodes=8)  # fits per node: schedulable, given 8 nodes
    [unfit] = c.stats(0).unschedulable
    assert (unfit.job, unfit.nodes, unfit.reasons) == (0, 8, ("cores",))


def test_every_node_a_gang_frees_takes_waiting_1_node_jobs() -> None:
    c = Cluster()
    c.node_joined("n0", C12, 0)
    c.node_joined("n1", C12, 0)
    c.submit(0, PER_NODE, 100, 0, nodes=2)
    c.submit(1, PER_NODE, 50, 0)
    c.submit(2, PER_NODE, 50, 0)
    c.advance(0)
    assert c.nodes_of(0) == ("n0", "n1") and c.queued_count == 2
    c.advance(100)  # the gang ends: both its nodes are free for the two waiting jobs
    assert (c.nodes_of(1), c.nodes_of(2)) == (("n0",), ("n1",))


class _OneGangAtATime(Cluster):
    """The reference: every queued gang tried in submit order, each on its own, as the
    scheduler did before it grouped them."""

    def _schedule_gangs(self, now: float) -> None:
        self._gangs_dirty = False
        waiting = sorted(entry for heap in self._gangs.values() for entry in heap)
        self._gangs = {}
        for seq, job_id in waiting:
            job = self._jobs[job_id]
            key = (_fit_key(job.shape), job.nodes)
            chosen = _gang_nodes(self._order, *key) if self._order else None
            if chosen is None:
                self._gangs.setdefault(key, []).append((seq, job_id))  # sorted: a heap
            else:
                self._start(job, chosen[0], now, tuple(chosen[1:]))


_GANG_SHAPES = (PER_NODE, Shape(3600, 4 * GiB, 4, 0, False), Shape(60, 90 * GiB, 6, 0, False))
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(_GANG_SHAPES), st.integers(1, 5)),
        st.tuples(st.just("join"), st.sampled_from([C12, C12_OTHER]), st.just(0)),
        st.tuples(st.just("remove"), st.integers(0, 11), st.just(0)),
        st.tuples(st.just("wait"), st.sampled_from([0, 0, 10, 50, 300]), st.just(0)),
    ),
    # at least 20 steps: with hypothesis's short lists (5 steps on average) a group rarely
    # held two gangs to start in one pass, and a scheduler starting one gang per group a
    # pass passed two runs in three
    min_size=20,
    max_size=60,
)


@settings(max_examples=400, deadline=None, database=None)
@given(_STEPS, st.integers(0, 2**16))
def test_grouped_gangs_start_where_one_at_a_time_starts_them(steps, seed) -> None:
    # changes pile up between waits, so a pass may find several gangs of a group to start
    rng = random.Random(seed)
    grouped, reference = clusters = (Cluster([C12, C12_OTHER]), _OneGangAtATime([C12, C12_OTHER]))
    now, joined = 0.0, []
    for i, (kind, what, nodes) in enumerate(steps):
        run_time = rng.choice([10, 50, 200])
        if kind == "wait":
            now += what
        for c in clusters:
            if kind == "submit":
                c.submit(i, what, run_time, now, nodes=nodes)
            elif kind == "join":
                c.node_joined(f"n{i}", what, now)
            elif kind == "remove" and joined:
                c.node_removed(joined[what % len(joined)], now)
            else:
                c.advance(now)
        if kind == "join":
            joined.append(f"n{i}")
        assert [grouped.nodes_of(j) for j in range(i + 1)] == [
            reference.nodes_of(j) for j in range(i + 1)
        ]
        if kind == "wait":  # the demand read, kept between queue changes, is the queue's
            sizes = {j: n for j, (k, _, n) in enumerate(steps[: i + 1]) if k == "submit"}
            waiting = Counter((shape, sizes[j]) for j, shape, _ in grouped.queued_jobs())
            read = grouped.demand(now).queued
            assert {(q.shape, q.node_count): q.count for q in read} == waiting
            assert len(read) == len(waiting)
    assert grouped.demand(now) == reference.demand(now)
    assert grouped.stats(now).waits.tolist() == reference.stats(now).waits.tolist()


def test_a_demand_read_reuses_the_queued_jobs_until_the_queue_changes() -> None:
    c = Cluster()
    c.node_joined("n0", C12, 0)
    for j in range(3):
        c.submit(j, PER_NODE, 100, 0, nodes=4)  # never start: one node
    first = c.demand(10).queued
    assert first == (QueuedJobs(PER_NODE, 3, node_count=4),)
    assert c.demand(20).queued is first  # nothing queued or started since
    c.submit(3, PER_NODE, 100, 30)  # starts on n0
    c.submit(4, PER_NODE, 100, 30, nodes=4)
    assert c.demand(30).queued == (QueuedJobs(PER_NODE, 4, node_count=4),)


@contextlib.contextmanager
def _node_scans() -> Iterator[list[object]]:
    """Every node ``_Node.fits`` is asked about, while the block runs."""
    scans: list[object] = []
    real = cluster_module._Node.fits
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cluster_module._Node, "fits", lambda n, k: scans.append(n) or real(n, k))
        yield scans


def test_a_thousand_gangs_too_wide_for_the_cluster_cost_a_pass_one_scan() -> None:
    # a real log's queue of identical gangs that can never run: each time a node gains
    # room the scheduler tries them, with one scan of the nodes, not one per gang
    c = Cluster([C12])
    for i in range(8):
        c.node_joined(f"n{i}", C12, 0)
    for j in range(1000):
        c.submit(j, PER_NODE, 100, 0, nodes=64)
    c.submit(1000, PER_NODE, 50, 0)  # a 1-node job: its end gives a node room again
    c.advance(0)
    with _node_scans() as scans:
        c.advance(60)
    assert c.stats(60).completed == 1
    assert len(scans) <= 2 * 8  # the gangs' one scan of 8 nodes, and the 1-node queue's
    assert c.queued_count == 1000


def test_gangs_wider_than_the_nodes_of_any_one_shape_cost_no_scan() -> None:
    # a real log's gangs wider than every type's max wait for ever, one group per width
    # and shape: a pass does not scan the nodes for them while no usable shape has as
    # many nodes, and does once one has
    c = Cluster([C12, C12_OTHER])
    for i in range(6):
        c.node_joined(f"n{i}", C12 if i % 2 else C12_OTHER, 0)  # 3 nodes of each shape
    for j, width in enumerate(range(4, 40)):
        c.submit(j, PER_NODE, 100, 0, nodes=width)
    c.submit(100, PER_NODE, 50, 0)  # a 1-node job: its end gives a node room again
    c.advance(0)
    with _node_scans() as scans:
        c.advance(60)
        assert c.stats(60).completed == 1
        assert len(scans) <= 6  # the 1-node queue's scan alone
        c.node_joined("n6", C12, 60)  # 4 nodes of C12: the 4-wide gang starts
        c.advance(60)
    assert c.nodes_of(0) == ("n1", "n3", "n5", "n6")
    assert c.queued_count == 35
