"""The Slurm demand source and the Slurm drain hook against the real test cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from shoal.daemon.config import parse_config
from shoal.daemon.demand import DemandFailure, DemandUpdate
from shoal.daemon.drain import DrainError
from shoal.daemon.service import build_controller
from shoal.daemon.slurm.client import SlurmClient
from shoal.daemon.slurm.drain import SlurmDrainHook
from shoal.daemon.slurm.integration import SlurmIntegration
from shoal.daemon.slurm.metrics import SlurmMetrics
from shoal.daemon.slurm.source import SlurmDemandSource, SlurmSnapshot
from shoal.providers.base import TAG_DRAINING
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock, InlineExecutor
from shoal.scaler.model import Demand
from slurm.cluster import SlurmCluster
from waits import slurm_requests_served

pytestmark = pytest.mark.slurm
ZONE = "us-west-2a"


def client_of(cluster: SlurmCluster) -> SlurmClient:
    return SlurmClient(cluster.commands(timeout=10))


async def test_reads_demand_then_a_stopped_controller_is_a_failure_that_holds_the_loop(
    slurm_cluster: SlurmCluster,
) -> None:
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    clock = FakeClock()
    metrics = SlurmMetrics()
    seen: list[SlurmSnapshot] = []
    source = SlurmDemandSource(
        client_of(slurm_cluster),
        clock,
        poll_interval=5,
        max_age=20,
        metrics=metrics,
        translate=lambda name: f"i-{name}",
    )
    source.listeners.append(seen.append)
    slurm_cluster.sbatch("-p", "dyn", "-c2", "--mem=300M", "--wrap", "sleep 1")
    slurm_cluster.start_dynamic_slurmd("d1", cpus=1)  # too small for the job: it stays queued
    slurm_cluster.wait_node("d1", lambda flags: "not_responding" not in flags, 15)
    update = await clock.run_until(source.read())
    assert isinstance(update, DemandUpdate)
    assert (update.at, update.max_age) == (clock.now(), 20)
    assert [(q.shape.cores, q.shape.memory, q.count) for q in update.demand.queued] == [
        (2.0, 300 * 2**20, 1)
    ]
    assert update.joined_nodes == {"i-d1"}  # named as the daemon knows the node
    assert seen and seen[-1].node("cloud1") is not None
    assert source.resume_timeout() == 30.0

    # a controller that had this demand, with one idle node it may remove
    config = parse_config(
        {
            "cluster_name": "t",
            "provider": {"kind": "simulated", "zone": ZONE},
            "node_types": [{"type": "c5.xlarge"}],
            "scaler": {"unneeded_time": "1s", "scale_down_budget": 1.0},
        }
    )
    provider = SimulatedProvisioner(clusterName="t", zone=ZONE, clock=clock, boot_delay=0)
    controller = await clock.run_until(build_controller(config, provider, clock))
    await clock.run_until(controller.reconcile())
    await provider.addNodes(["c5.xlarge"], 1, False)
    (node,) = await provider.list_instances()
    controller.set_demand(DemandUpdate(Demand(), frozenset({node.name})))  # joined, idle

    slurm_cluster.stop()
    failure = await clock.run_until(source.read())
    assert isinstance(failure, DemandFailure) and failure.reason.startswith("slurm: ")
    failed = sum(
        metrics.registry.get_sample_value("shoal_slurm_read_failures_total", {"command": c}) or 0
        for c in ("squeue", "sinfo")
    )
    assert failed >= 1 and source.failures == 1
    controller.set_demand(failure)
    assert "demand source failed: slurm" in (controller.demand_stale() or "")
    await clock.advance(600)  # idle far past unneeded_time, on a stale view
    record = await clock.run_until(controller.run_pass())
    assert record.launched == 0 and record.terminated == () and record.drained == ()
    assert "slurm" in record.reason
    assert provider.count() == 1
    # good reads remove the idle node: only the failed read held it
    controller.set_demand(DemandUpdate(Demand(), frozenset({node.name})))
    await clock.run_until(controller.run_pass())  # idle from now
    await clock.advance(2)
    record = await clock.run_until(controller.run_pass())
    assert record.drained == (node.name,)


async def test_poke_reads_at_once(slurm_cluster: SlurmCluster) -> None:
    clock = FakeClock()
    source = SlurmDemandSource(client_of(slurm_cluster), clock, poll_interval=600)
    updates = source.updates()
    await clock.run_until(updates.__anext__())
    source.poke()  # no fake time passes: only the poke can bring the next read
    second = await clock.run_until(updates.__anext__(), limit=1.0)
    assert isinstance(second, DemandUpdate)
    await updates.aclose()


async def test_drain_and_undrain_a_dynamic_node(
    slurm_cluster_factory: Callable[..., SlurmCluster],
) -> None:
    cluster = slurm_cluster_factory(cloud=())
    hook = SlurmDrainHook(client_of(cluster))
    cluster.start_dynamic_slurmd("t-1")
    cluster.wait_node("t-1", lambda flags: "not_responding" not in flags, 15)
    await hook.drain("t-1")
    reason = cluster.run("sinfo", "-h", "-n", "t-1", "-O", "Reason:0").stdout.strip()
    assert "drain" in cluster.node_state("t-1").split("+") and reason == "shoal"
    await hook.undrain("t-1")
    assert "drain" not in cluster.node_state("t-1").split("+")
    # again: Slurm refuses to resume a node that is not drained ("Invalid node state
    # specified"), which is what an undrain wants (only shoal's mark said it drained)
    await hook.undrain("t-1")
    assert "drain" not in cluster.node_state("t-1").split("+")
    with pytest.raises(DrainError, match="Invalid node name"):
        await hook.drain("nosuchnode")
    with pytest.raises(DrainError, match="Invalid node name"):
        await hook.undrain("nosuchnode")


async def test_set_node_addr_gives_slurm_the_instances_address(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    clock = FakeClock()
    config = parse_config(
        {
            "cluster_name": "t",
            "state_dir": str(tmp_path / "state"),
            "provider": {"kind": "simulated", "zone": ZONE, "boot_delay": 0},
            "node_types": [{"type": "c5.xlarge"}],
            "demand": {"api": False, "slurm": True},
            "slurm": {
                "slurm_conf": str(slurm_cluster.conf_path),
                "scontrol": slurm_cluster.program("scontrol"),
                "node_types": {"cloud": "c5.xlarge"},
                "set_node_addr": True,
            },
        }
    )
    provider = SimulatedProvisioner(clusterName="t", zone=ZONE, clock=clock, boot_delay=0)
    controller = await clock.run_until(build_controller(config, provider, clock))
    integration = SlurmIntegration(config, clock, controller)
    await clock.run_until(controller.reconcile())
    assert integration.power is not None
    await integration.power.accept("resume", "cloud2")
    await clock.run_until(slurm_requests_served(integration.power))
    (node,) = await provider.list_instances()

    async def address() -> str:
        while True:
            out = slurm_cluster.run("sinfo", "-h", "-N", "-n", "cloud2", "-o", "%o %n")
            if node.privateIP in out.stdout:
                return " ".join(out.stdout.split())
            await asyncio.sleep(0.05)

    assert await clock.run_until(address()) == f"{node.privateIP} {node.privateIP}"
    await integration.close()


async def test_a_node_slurm_shows_drained_by_shoal_is_adopted_as_draining(
    slurm_cluster_factory: Callable[..., SlurmCluster],
) -> None:
    """External mode, after a restart that lost the instance's draining tag: Slurm still shows
    the node drained with reason "shoal". It is not joined capacity, the adopter puts the tag
    back, and from then on it is shoal's own draining node: the queued job makes the plan
    undrain it with scontrol. (A drain by anyone else: tests/daemon/test_drain_restart.py.)"""
    cluster = slurm_cluster_factory(cloud=())
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    clock = FakeClock()
    config = parse_config(
        {
            "cluster_name": "t",
            "provider": {"kind": "simulated", "zone": ZONE, "boot_delay": 0, "join_delay": 0},
            "node_types": [{"type": "c5.large"}],
            "demand": {"api": False, "slurm": True},
            "slurm": {
                "mode": "external",
                "slurm_conf": str(cluster.conf_path),
                "squeue": cluster.program("squeue"),
                "sinfo": cluster.program("sinfo"),
                "scontrol": cluster.program("scontrol"),
            },
        }
    )
    provider = SimulatedProvisioner(
        clusterName="t", zone=ZONE, clock=clock, boot_delay=0, join_delay=0
    )
    await provider.addNodes(["c5.large"], 1, False)
    (node,) = [n.name for n in await provider.list_instances()]
    cluster.start_dynamic_slurmd(node, cpus=2)  # it registers as a node named after it
    cluster.wait_node(node, lambda flags: "not_responding" not in flags, 15)
    cluster.scontrol("update", f"nodename={node}", "state=drain", "reason=shoal")
    controller = await clock.run_until(build_controller(config, provider, clock))
    integration = SlurmIntegration(config, clock, controller)
    await clock.run_until(controller.reconcile())  # the restart: no tag on the instance

    cluster.sbatch("-p", "dyn", "-c2", "--wrap", "sleep 1")  # nowhere to run: drained
    update = await clock.run_until(integration.source.read())
    assert isinstance(update, DemandUpdate) and update.demand.queued
    assert update.draining_nodes == {node} and node not in (update.joined_nodes or ())
    await clock.settle()  # the adopter's tag call
    assert TAG_DRAINING in (await provider.list_instances())[0].tags

    controller.set_demand(update)
    record = await clock.run_until(controller.run_pass())
    # the drained node is no room for the queued job: the plan takes it back, in Slurm too
    assert record.undrained == (node,) and record.launched == 0 and record.errors == ()
    assert "drain" not in cluster.node_state(node).split("+")
    assert TAG_DRAINING not in (await provider.list_instances())[0].tags
    await integration.close()
