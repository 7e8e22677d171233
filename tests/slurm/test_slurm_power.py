"""The power saver in the daemon's own wiring, on the simulated cloud and a fake clock.

What is checked here needs no Slurm command (a resume that launches, a suspend that
terminates, idempotency and restarts); the paths that change Slurm's node states (a failed
launch held DOWN, ResumeTimeout) run against a real slurmctld in ``test_slurm_e2e.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from shoal.daemon.config import parse_config
from shoal.daemon.durable import DurableStore
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.service import build_controller
from shoal.daemon.slurm.integration import SlurmIntegration
from shoal.daemon.slurm.power import PowerSaver, hold_planner
from shoal.daemon.slurm.state import PowerState
from shoal.providers.base import TAG_REQUEST_ID
from shoal.providers.clock import FakeClock, InlineExecutor
from shoal.providers.simulated import SimulatedProvisioner
from shoal.providers.slurm import TAG_SLURM_NODE
from shoal.scaler.model import Demand, PlannerState, QueuedJobs, Snapshot
from shoal.scaler.shape import Shape

ZONE = "us-west-2a"


def config(tmp_path: Path, **slurm: Any) -> Any:
    return parse_config(
        {
            "cluster_name": "t",
            "state_dir": str(tmp_path / "state"),
            "provider": {"kind": "simulated", "zone": ZONE},
            "node_types": [{"type": "c5.xlarge", "max": 10}, {"type": "r5.large", "max": 10}],
            "scaler": {"retry": {"attempts": 2, "initial": "1s", "max": "1s", "deadline": "5s"}},
            "demand": {"api": False, "slurm": True},
            "slurm": {
                "node_types": {"cloud": "c5.xlarge", "mem[1-2]": "r5.large"},
                # never run here: a call would fail loudly
                "scontrol": str(tmp_path / "no-scontrol"),
                **slurm,
            },
        }
    )


def saved(tmp_path: Path) -> PowerState:
    """The power saver's state as a restarted daemon would read it from disk."""
    return PowerState(DurableStore.open(tmp_path / "state"))


@dataclass
class Daemon:
    clock: FakeClock
    provider: SimulatedProvisioner
    slurm: SlurmIntegration
    metrics: ShoalMetrics

    @property
    def power(self) -> PowerSaver:
        assert self.slurm.power is not None
        return self.slurm.power

    async def served(self) -> None:
        await self.clock.run_until(self.power.drain_requests())

    async def workers(self) -> dict[str, list[str]]:
        """Slurm node -> its live instances, as the cloud lists them."""
        out: dict[str, list[str]] = {}
        for node in await self.provider.list_instances():
            out.setdefault(node.tags.get(TAG_SLURM_NODE, "-"), []).append(node.name)
        return out

    def launches(self) -> int:
        return sum(1 for c in self.provider.calls if c.operation == "RunInstances")


async def start(
    tmp_path: Path, clock: FakeClock, provider: SimulatedProvisioner | None = None, **slurm: Any
) -> Daemon:
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    cfg = config(tmp_path, **slurm)
    provider = provider or SimulatedProvisioner(clusterName="t", zone=ZONE, clock=clock)
    metrics = ShoalMetrics()
    controller = await build_controller(cfg, provider, clock, metrics=metrics)
    slurm_side = SlurmIntegration(cfg, clock, metrics)
    slurm_side.attach(controller)
    await clock.run_until(controller.reconcile())
    return Daemon(clock, provider, slurm_side, metrics)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_resume_launches_one_instance_per_named_node_of_its_type(
    tmp_path: Path, clock: FakeClock
) -> None:
    d = await start(tmp_path, clock)
    answer = await d.power.accept(
        "resume", "cloud[1-2],mem1", {"jobs": [{"job_id": 7, "nodes": "cloud[1-2]"}]}
    )
    assert answer == {"kind": "resume", "accepted": ["cloud1", "cloud2", "mem1"], "repeated": []}
    # persisted before the answer: a daemon killed now serves it after its restart
    assert set(saved(tmp_path).requests) == {"cloud1", "cloud2", "mem1"}
    assert saved(tmp_path).requests["cloud1"].jobs == ("7",)
    await d.served()
    workers = await d.workers()
    assert sorted(workers) == ["cloud1", "cloud2", "mem1"]
    assert all(len(ids) == 1 for ids in workers.values())
    types = {n.tags[TAG_SLURM_NODE]: n.nodeType for n in await d.provider.list_instances()}
    assert types == {"cloud1": "c5.xlarge", "cloud2": "c5.xlarge", "mem1": "r5.large"}
    assert saved(tmp_path).requests == {}
    assert (
        d.metrics.registry.get_sample_value("shoal_slurm_requests_total", {"kind": "resume"}) == 3
    )
    assert d.power.instance_id("cloud1") == workers["cloud1"][0]


async def test_a_repeated_resume_launches_nothing(tmp_path: Path, clock: FakeClock) -> None:
    d = await start(tmp_path, clock)
    await d.power.accept("resume", "cloud1")
    await d.served()
    again = await d.power.accept("resume", "cloud1")
    await d.served()
    assert again["accepted"] == ["cloud1"]  # a new request (a new power-up)...
    assert (
        d.launches() == 1 and len((await d.workers())["cloud1"]) == 1
    )  # ...served by the instance


async def test_a_resume_sent_twice_before_it_is_served_is_one_request(
    tmp_path: Path, clock: FakeClock
) -> None:
    d = await start(tmp_path, clock)
    await d.power.accept("resume", "cloud1")
    assert (await d.power.accept("resume", "cloud1"))["repeated"] == ["cloud1"]
    await d.served()
    assert d.launches() == 1


async def test_after_a_restart_a_launch_whose_answer_was_lost_is_not_repeated(
    tmp_path: Path, clock: FakeClock
) -> None:
    """kill -9 after the cloud launched but before the state file noted it, on a cloud whose
    listing lags (EC2): the restarted daemon cannot see the instance, launches again with the
    request's id, and the client token makes the cloud answer with the same instance."""
    provider = SimulatedProvisioner(clusterName="t", zone=ZONE, clock=clock, listing_lag=300)
    first = await start(tmp_path, clock, provider)
    await first.power.accept("resume", "cloud1")
    request_id = first.power.state.requests["cloud1"].request_id
    await first.power.close()  # the daemon dies before its worker ran...
    # ...but the launch it was making reached the cloud:
    await provider.addNodes(
        ["c5.xlarge"], 1, False, requestId=request_id, tags={TAG_SLURM_NODE: "cloud1"}
    )
    assert await provider.list_instances() == []  # not listed yet
    second = await start(tmp_path, clock, provider)  # the restarted daemon, same state file
    await second.served()
    tokens = [c.kwargs["client_token"] for c in provider.calls if c.operation == "RunInstances"]
    assert len(tokens) == 2 and tokens[0] == tokens[1]  # launched again, with the same token
    assert provider.count() == 1  # and the cloud answered with the instance it had
    await clock.advance(300)
    (only,) = await provider.list_instances()
    assert only.tags[TAG_REQUEST_ID] == request_id
    assert second.power.state.requests == {}


async def test_suspend_terminates_the_nodes_instance(tmp_path: Path, clock: FakeClock) -> None:
    d = await start(tmp_path, clock)
    await d.power.accept("resume", "cloud[1-2]")
    await d.served()
    await d.power.accept("suspend", "cloud1")
    await d.served()
    assert sorted(await d.workers()) == ["cloud2"]
    terminated = d.metrics.registry.get_sample_value(
        "shoal_scale_downs_total", {"node_type": "c5.xlarge", "cause": "idle"}
    )
    assert terminated == 1


async def test_a_suspend_queued_behind_its_resume_leaves_nothing_running(
    tmp_path: Path, clock: FakeClock
) -> None:
    d = await start(tmp_path, clock)
    await d.power.accept("resume", "cloud1")
    await d.power.accept("suspend", "cloud1")
    await d.served()
    assert await d.workers() == {} and d.power.state.requests == {}


async def test_requests_wait_for_the_first_reconcile(tmp_path: Path, clock: FakeClock) -> None:
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    cfg = config(tmp_path)
    provider = SimulatedProvisioner(clusterName="t", zone=ZONE, clock=clock)
    controller = await build_controller(cfg, provider, clock)
    slurm_side = SlurmIntegration(cfg, clock)
    slurm_side.attach(controller)
    assert slurm_side.power is not None
    await slurm_side.power.accept("resume", "cloud1")
    await clock.advance(60)
    assert provider.count() == 0
    await clock.run_until(controller.reconcile())
    await clock.run_until(slurm_side.power.drain_requests())
    assert provider.count() == 1


@pytest.mark.parametrize(
    ("kind", "hostlist", "message"),
    [
        pytest.param("reboot", "cloud1", "unknown request kind", id="kind"),
        pytest.param("resume", "cloud[1-", "not a Slurm hostlist", id="hostlist"),
        pytest.param("resume", "", "no node names", id="empty"),
    ],
)
async def test_malformed_requests_are_refused(
    tmp_path: Path, clock: FakeClock, kind: str, hostlist: str, message: str
) -> None:
    d = await start(tmp_path, clock)
    with pytest.raises(ValueError, match=message):
        await d.power.accept(kind, hostlist)
    assert d.power.state.requests == {}


def test_the_planner_stands_aside_in_power_saving_mode(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    shapes = {"c5.xlarge": Shape(3600, 8 * 2**30, 4, 0, False)}
    shapes["r5.large"] = Shape(3600, 16 * 2**30, 2, 0, False)
    policy = cfg.policy(shapes)
    demand = Demand(queued=(QueuedJobs(Shape(60, 2**30, 1, 0, False), 50),))
    plan = hold_planner(Snapshot(demand, ()), policy, PlannerState(), 0.0)
    assert plan.is_noop
    assert plan.targets == {"c5.xlarge": 0, "r5.large": 0}
