"""Where a real slurmctld puts 1-node jobs, against the replay's placement models.

``shoal simulate --placement best-fit`` claims to place 1-node jobs as Slurm's cons_tres
does through 25.11 (``daemon/simulate/cluster.py``): among runs of consecutive nodes (in
slurm.conf order) where the job fits, the run with the fewest free cores, and in it the
node with the fewest. This test submits a sequence of jobs, one at a time, to four
4-core nodes and compares where each lands with what the replay's scheduler says under
each model. The sequence is chosen so that the three candidate models differ: first fit
(``--placement first-fit``, Slurm 26.05's single-node path with equal weights), best fit
over runs of nodes (cons_tres), and best fit over single nodes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from shoal.daemon.simulate.cluster import Cluster
from shoal.scaler.shape import Shape
from slurm.capture import registered
from slurm.cluster import NodeGroup, SlurmCluster

pytestmark = pytest.mark.slurm

NODES = ["p1", "p2", "p3", "p4"]
CORES = [2, 3, 1, 3, 1]  # each job's cores, submitted one after another
MIB = 1024 * 1024
DAY = 86400.0


def modelled(placement: str) -> list[str]:
    """Where the replay's scheduler puts the sequence's jobs under ``placement``."""
    cluster = Cluster(placement=placement)
    for name in NODES:
        cluster.node_joined(name, Shape(DAY, 400 * MIB, 4, 0, False), 0.0)
    where = []
    for i, cores in enumerate(CORES):
        cluster.submit(i, Shape(DAY, cores * 100 * MIB, cores, 0, False), DAY, float(i + 1))
        cluster.advance(float(i + 1))
        (node,) = cluster.nodes_of(i)
        where.append(node)
    return where


# Jobs pinned to a node (``-w``) first, then one job Slurm places: (node, cores, MiB) each.
# "memory": p2 has 3 free cores but 100 MiB, too little for the job: it splits the run, so
# {p1}: 2 free cores against {p3, p4}: 5 and p1 (were p2 in the run, p3, the fullest node).
# "cores": p2's 1 free core is too few for the 2-core job and splits the run likewise:
# {p1}: 3 against {p4}: 3, the first (were p2 in the run, {p1, p2}: 4 and p4).
PINNED = {
    "memory": ([("p1", 2, 100), ("p2", 1, 900), ("p3", 3, 100)], (1, 200), "p1", "p3"),
    "cores": (
        [("p1", 1, 100), ("p2", 3, 100), ("p3", 4, 100), ("p4", 1, 100)],
        (2, 100),
        "p1",
        "p4",
    ),
}


def pin(cluster: Cluster, name: str, job_id: int, cores: int, mib: int) -> None:
    """Start a job on node ``name`` alone, as ``-w name`` does (the others cordoned)."""
    others = [n for n in cluster.joined_nodes() if n != name]
    for other in others:
        cluster.cordon(other, 0.0)
    cluster.submit(job_id, Shape(DAY, mib * MIB, cores, 0, False), DAY, 0.0)
    cluster.advance(0.0)
    assert cluster.nodes_of(job_id) == (name,)
    for other in others:
        cluster.uncordon(other, 0.0)


def next_job(cluster: Cluster, cores: int, mib: int) -> str:
    """The node the replay starts a job of ``cores`` and ``mib`` on, a second later."""
    cluster.submit(0, Shape(DAY, mib * MIB, cores, 0, False), DAY, 1.0)
    cluster.advance(1.0)
    (node,) = cluster.nodes_of(0)
    return node


def modelled_after(pinned: list[tuple[str, int, int]], cores: int, mib: int) -> str:
    """Where the replay's best fit puts a job of ``cores`` and ``mib`` after ``pinned``."""
    cluster = Cluster(placement="best-fit")
    for name in NODES:
        cluster.node_joined(name, Shape(DAY, 1000 * MIB, 4, 0, False), 0.0)
    for i, (name, pin_cores, pin_mib) in enumerate(pinned):
        pin(cluster, name, 100 + i, pin_cores, pin_mib)
    return next_job(cluster, cores, mib)


def test_the_models_differ_on_this_sequence():
    first, best = modelled("first-fit"), modelled("best-fit")
    assert first == ["p1", "p2", "p1", "p3", "p1"]
    assert best == ["p1", "p2", "p2", "p3", "p1"]
    # best fit over single nodes would take p3 (1 free core) for the last job, not p1 (2
    # free): cons_tres first picks the run of nodes with the fewest free cores ({p1}: 2,
    # against {p3, p4}: 5, p2 being full)


def test_slurmctld_places_one_node_jobs_as_best_fit_models(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    cluster = four_nodes(slurm_cluster_factory)
    placed = [place(cluster, f"-c{cores}", f"--mem={cores * 100}M") for cores in CORES]
    assert placed == modelled("best-fit"), cluster.log_tail()


def started(factory: Callable[..., SlurmCluster], *groups: NodeGroup) -> SlurmCluster:
    """A cluster of ``groups`` (slurm.conf in their order), every node up and registered."""
    cluster = factory(
        cloud=groups,
        dynamic_partition=None,
        suspend_time=3600,  # no node powers down while the test runs
        # the host has fewer cores than the nodes declare: use what slurm.conf says
        settings={"SlurmdParameters": "config_overrides"},
    )
    names = [name for group in groups for name in group.names()]
    cluster.power_up(*names)
    for name in names:
        cluster.start_slurmd(name)
    for name in names:
        cluster.wait_node(name, registered, 30)
    return cluster


def four_nodes(factory: Callable[..., SlurmCluster]) -> SlurmCluster:
    """Four 4-core 1000 MB nodes p1..p4, up and registered."""
    return started(factory, NodeGroup("p", len(NODES), cpus=4, memory_mb=1000))


def place(cluster: SlurmCluster, *args: str) -> str:
    """Submit a job that sleeps; the node it runs on."""
    job = cluster.sbatch(*args, "--wrap", "sleep 300")
    cluster.wait_job_state(job, {"RUNNING"}, 30)
    return cluster.run("squeue", "-h", "-j", job, "-o", "%N").stdout.strip()


@pytest.mark.parametrize("case", list(PINNED))
def test_slurmctld_a_node_the_job_does_not_fit_splits_the_run(
    slurm_cluster_factory: Callable[..., SlurmCluster], case: str
):
    """A node with free cores but too little memory (``--mem``), or fewer free cores than
    the job's ``-c``, is no part of a run (cons_tres clears it from the node map)."""
    pinned, (cores, mib), expected, joined = PINNED[case]
    assert modelled_after(pinned, cores, mib) == expected != joined
    cluster = four_nodes(slurm_cluster_factory)
    for name, pin_cores, pin_mib in pinned:
        assert place(cluster, "-w", name, f"-c{pin_cores}", f"--mem={pin_mib}M") == name
    assert place(cluster, f"-c{cores}", f"--mem={mib}M") == expected, cluster.log_tail()


def modelled_weights(placement: str) -> str:
    """b1 (weight 2, joined first, 1 free core of 4) and a1 (weight 1, 4 free): where the
    replay puts a 1-core job."""
    cluster = Cluster(placement=placement)
    cluster.node_joined("b1", Shape(DAY, 1000 * MIB, 4, 0, False), 0.0, weight=2)
    cluster.cordon("b1", 0.0)  # its filler goes to b1 alone (as ``-w b1``)
    cluster.node_joined("a1", Shape(DAY, 1000 * MIB, 4, 0, False), 0.0, weight=1)
    cluster.cordon("a1", 0.0)
    cluster.uncordon("b1", 0.0)
    cluster.submit(100, Shape(DAY, 300 * MIB, 3, 0, False), DAY, 0.0)
    cluster.advance(0.0)
    assert cluster.nodes_of(100) == ("b1",)
    cluster.uncordon("a1", 0.0)
    return next_job(cluster, 1, 100)


def test_slurmctld_takes_the_lowest_weight_first_as_both_placements_model(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    """The Weight that ``shoal slurm-conf`` writes by price comes before any fit rule: the
    job goes to a1 (weight 1, empty), not to b1 (weight 2, declared first, fullest)."""
    assert modelled_weights("first-fit") == modelled_weights("best-fit") == "a1"
    cluster = started(
        slurm_cluster_factory,
        NodeGroup("b", 1, cpus=4, memory_mb=1000, weight=2),
        NodeGroup("a", 1, cpus=4, memory_mb=1000, weight=1),
    )
    assert place(cluster, "-w", "b1", "-c3", "--mem=300M") == "b1"
    assert place(cluster, "-c1", "--mem=100M") == "a1", cluster.log_tail()


# Declared in this order, one node each: (name, Weight, cores pinned before the job).
# x1 (weight 2, empty) lies between a1 and b1; c1 is full.
WEIGHT_RUNS = [("a1", 1, 2), ("x1", 2, 4), ("b1", 1, 2), ("c1", 1, 4), ("d1", 1, 1)]


def modelled_weight_runs(placement: str) -> str:
    """Where the replay puts a 1-core job after ``WEIGHT_RUNS``' pins."""
    cluster = Cluster(placement=placement)
    for name, weight, _ in WEIGHT_RUNS:
        cluster.node_joined(name, Shape(DAY, 1000 * MIB, 4, 0, False), 0.0, weight=weight)
    for i, (name, _, cores) in enumerate(WEIGHT_RUNS):
        if cores:
            pin(cluster, name, 100 + i, cores, 100)
    return next_job(cluster, 1, 100)


def test_slurmctld_best_fit_runs_of_one_weight(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    """Where best fit's runs of the lowest weight end: d1 ({a1, b1}: 4 free cores, {d1}: 3),
    as modelled, so x1 (weight 2, full) between a1 and b1 does not split their run; were it
    to, a1 ({a1}: 2). slurmctld 22.05 placed the job on d1 with x1 empty too."""
    assert modelled_weight_runs("best-fit") == "d1" != modelled_weight_runs("first-fit")
    cluster = started(
        slurm_cluster_factory,
        *(NodeGroup(name[0], 1, cpus=4, memory_mb=1000, weight=w) for name, w, _ in WEIGHT_RUNS),
    )
    for name, _, pin in WEIGHT_RUNS:
        if pin:
            assert place(cluster, "-w", name, f"-c{pin}", "--mem=100M") == name
    assert place(cluster, "-c1", "--mem=100M") == "d1", cluster.log_tail()


def modelled_gang() -> tuple[str, ...]:
    """b1, b2 (4 cores, weight 2) joined before a1, a2 (8 cores, weight 1): where the replay
    puts a 2-node job of 2 cores a node."""
    cluster = Cluster()
    for name, cores, weight in (("b1", 4, 2), ("b2", 4, 2), ("a1", 8, 1), ("a2", 8, 1)):
        cluster.node_joined(name, Shape(DAY, 1000 * MIB, cores, 0, False), 0.0, weight=weight)
    cluster.submit(0, Shape(DAY, 100 * MIB, 2, 0, False), DAY, 1.0, nodes=2)
    cluster.advance(1.0)
    return cluster.nodes_of(0)


def test_slurmctld_a_gang_takes_the_lowest_weight_nodes_as_modelled(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    """A 2-node job goes to a1 and a2 (weight 1), not to b1 and b2 (weight 2, declared
    first), as ``Cluster`` puts a gang."""
    cluster = started(
        slurm_cluster_factory,
        NodeGroup("b", 2, cpus=4, memory_mb=1000, weight=2),
        NodeGroup("a", 2, cpus=8, memory_mb=1000, weight=1),
    )
    assert modelled_gang() == ("a1", "a2")
    assert place(cluster, "-N2", "-c2", "--mem=100M") == "a[1-2]", cluster.log_tail()
