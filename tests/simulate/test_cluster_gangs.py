"""Gangs in the replay's scheduler: N nodes of one type at once, freed together."""

from __future__ import annotations

from shoal.daemon.simulate.cluster import Cluster
from shoal.scaler.model import QueuedJobs
from shoal.scaler.shape import Shape

GiB = 1024**3
C12 = Shape(3600, 47 * GiB, 12, 100 * GiB, False)  # a 12-core type, usable
C12_OTHER = Shape(3600, 95 * GiB, 12, 100 * GiB, False)  # another 12-core type
PER_NODE = Shape(3600, 40 * GiB, 12, 0, False)


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
