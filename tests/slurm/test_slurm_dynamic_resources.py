"""What a real slurmctld 22.05 does with a dynamic node that registers as external mode's
launch tags say (``shoal:slurm-resources``: ``CPUs=<n> RealMemory=<MiB> Weight=<n>``, below
the machine's): it is placed by that Weight, and it takes no job asking more memory than
that RealMemory."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from slurm.capture import registered
from slurm.cluster import NodeGroup, SlurmCluster

pytestmark = pytest.mark.slurm


def one_of_each(factory: Callable[..., SlurmCluster], weight: int) -> SlurmCluster:
    """s1 (declared, Weight 2, in the dynamic partition by its feature), up; then a dynamic
    node d1 registered with ``CPUs=1 RealMemory=800 Weight=<weight>``."""
    cluster = factory(
        cloud=(NodeGroup("s", 1, cpus=2, memory_mb=1000, features=("dyn",), weight=2),),
        suspend_time=3600,
        settings={"SlurmdParameters": "config_overrides"},
    )
    cluster.power_up("s1")
    cluster.start_slurmd("s1")
    cluster.wait_node("s1", registered, 30)
    cluster.start_dynamic_slurmd("d1", cpus=1, memory_mb=800, features=("shoal",), weight=weight)
    cluster.wait_node("d1", lambda s: "idle" in s, 30)
    return cluster


def place(cluster: SlurmCluster, *args: str) -> str:
    job = cluster.sbatch("-p", "dyn", *args, "--wrap", "sleep 300")
    cluster.wait_job_state(job, {"RUNNING"}, 30)
    return cluster.run("squeue", "-h", "-j", job, "-o", "%N").stdout.strip()


@pytest.mark.parametrize(("weight", "expected"), [(3, "s1"), (1, "d1")])
def test_a_dynamic_node_is_placed_by_the_weight_it_registers_with(
    slurm_cluster_factory: Callable[..., SlurmCluster], weight: int, expected: str
):
    cluster = one_of_each(slurm_cluster_factory, weight)
    node = cluster.scontrol("show", "node", "d1")
    assert f"Weight={weight}" in node and "RealMemory=800" in node, node
    assert place(cluster, "-c1", "--mem=100M") == expected, cluster.log_tail()


def submit(cluster: SlurmCluster, *args: str) -> tuple[int, str]:
    """sbatch's exit status and its error output (the job is never awaited)."""
    out = cluster.run("sbatch", "--parsable", "-p", "dyn", *args, "--wrap", "true", check=False)
    return out.returncode, out.stderr


def test_a_dynamic_node_takes_no_job_over_its_real_memory(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    """d1 (``shoal`` feature, RealMemory 800 on a machine of gigabytes) takes 800M, and
    Slurm refuses 900M on it at once: it never runs there."""
    cluster = one_of_each(slurm_cluster_factory, 1)
    status, error = submit(cluster, "-C", "shoal", "--mem=900M")
    assert status != 0 and "Requested node configuration is not available" in error
    assert place(cluster, "-C", "shoal", "--mem=800M") == "d1"


def test_one_small_dynamic_node_makes_slurm_refuse_a_job_a_bigger_type_would_take(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    """External mode's partition (a Nodeset of the dynamic nodes' feature): empty, it takes
    a 900M job (pending, PartitionConfig: shoal sees it and launches); with one node of
    RealMemory 800 in it, sbatch refuses the same job, so shoal never sees the demand for a
    bigger type. The lower the registered RealMemory, the more jobs this refuses."""
    cluster = slurm_cluster_factory(cloud=(), suspend_time=3600)
    assert submit(cluster, "--mem=900M")[0] == 0
    cluster.start_dynamic_slurmd("d1", cpus=1, memory_mb=800, weight=1)
    cluster.wait_node("d1", lambda s: "idle" in s, 30)
    status, error = submit(cluster, "--mem=900M")
    assert status != 0 and "Requested node configuration is not available" in error


def test_a_dynamic_node_registered_above_the_machines_memory_is_drained(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    """RealMemory in ``--conf`` above what slurmd measures (the kernel's MemTotal, below the
    instance's nominal memory on EC2): slurmctld drains the node as it registers (Low
    RealMemory, INVALID_REG) and no job ever runs on it. shoal's usable memory is nominal
    memory less the overhead, so a small flat ``scaler.node_memory_overhead`` gets here."""
    measured = int(cluster_measured_memory())
    cluster = slurm_cluster_factory(cloud=(), suspend_time=3600)
    cluster.start_dynamic_slurmd("d1", cpus=1, memory_mb=measured + 100, weight=1)
    state = cluster.wait_node("d1", lambda s: "drain" in s or "idle" in s, 30)
    assert "drain" in state and "invalid_reg" in state, state
    assert "Low RealMemory" in cluster.scontrol("show", "node", "d1")


def cluster_measured_memory() -> int:
    """This machine's memory as slurmd reports it: MemTotal in MiB."""
    with open("/proc/meminfo") as meminfo:
        return int(meminfo.readline().split()[1]) // 1024
