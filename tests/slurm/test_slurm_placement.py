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
    cluster = slurm_cluster_factory(
        cloud=(NodeGroup("p", len(NODES), cpus=4, memory_mb=1000),),
        dynamic_partition=None,
        suspend_time=3600,  # no node powers down while the test runs
        # the host has fewer cores than the nodes declare: use what slurm.conf says
        settings={"SlurmdParameters": "config_overrides"},
    )
    cluster.power_up(*NODES)
    for name in NODES:
        cluster.start_slurmd(name)
    for name in NODES:
        cluster.wait_node(name, registered, 30)
    placed = []
    for cores in CORES:
        job = cluster.sbatch(f"-c{cores}", f"--mem={cores * 100}M", "--wrap", "sleep 300")
        cluster.wait_job_state(job, {"RUNNING"}, 30)
        out = cluster.run("squeue", "-h", "-j", job, "-o", "%N").stdout.strip()
        placed.append(out)
    assert placed == modelled("best-fit"), cluster.log_tail()
