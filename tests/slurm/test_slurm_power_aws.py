"""The power saver over the AWS provider (moto, tests/moto_fixtures.py), in the daemon's own
wiring and on a fake clock: a multi-node job's resume in ``power_save`` with workers named
by their tag (``workers.slurm.node_name: tag``) launches its nodes as one all-or-nothing
RunInstances, and each instance ends tagged with its own Slurm node name, the one the power
saver pairs it with, through throttling and a daemon stopped between launch and naming.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import configs
import pytest
from aiobotocore.session import get_session
from moto_fixtures import Ec2Behaviour
from shoal.daemon.config import parse_config
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.service import build_controller, build_provider
from shoal.daemon.slurm.constants import TAG_SLURM_NODE
from shoal.daemon.slurm.integration import SlurmIntegration
from shoal.daemon.slurm.power import PowerSaver
from shoal.providers.aws import AWSProvisioner
from shoal.runtime.testing import FakeClock, InlineExecutor
from waits import slurm_requests_served

ZONE = "us-east-1a"
NODES = ["cloud1", "cloud2", "cloud3"]
# SLURM_RESUME_FILE for `sbatch -N3` (as tests/slurm/test_slurm_power.py's THREE_NODE_JOB)
THREE_NODE_JOB = {"jobs": [{"job_id": 1, "nodes": "cloud[1-3]"}], "all_nodes": "cloud[1-3]"}


def config(url: str, tmp_path: Path) -> Any:
    key = tmp_path / "munge.key"
    key.write_bytes(hashlib.sha512(b"gang").digest())
    return parse_config(
        configs.config(
            cluster_name="demo",
            state_dir=str(tmp_path / "state"),
            provider=configs.aws_provider(url, zone=ZONE, cluster_type="slurm"),
            node_types=[{"type": "c5.xlarge", "max": 10}],
            scaler={"retry": {"attempts": 2, "initial": "1s", "max": "1s", "deadline": "5s"}},
            workers={
                "leader": {"address": "10.0.0.5"},
                "slurm": {"munge_key_file": str(key), "node_name": "tag"},
            },
            demand={"api": False, "slurm": True},
            slurm={
                "node_types": {"cloud": "c5.xlarge"},
                "scontrol": str(tmp_path / "no-scontrol"),  # never run here
            },
        )
    )


@dataclass
class Daemon:
    clock: FakeClock
    provider: AWSProvisioner
    power: PowerSaver


@pytest.fixture
async def start(moto_url: str, ec2_behaviour: Ec2Behaviour, tmp_path: Path) -> Any:
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    clock = FakeClock()
    ec2_behaviour.now = clock.now
    made: list[Daemon] = []

    async def make() -> Daemon:
        """A daemon (re)started on the same state directory."""
        cfg = config(moto_url, tmp_path)
        provider = build_provider(cfg, clock)
        assert isinstance(provider, AWSProvisioner)
        controller = await clock.run_until(
            build_controller(cfg, provider, clock, metrics=ShoalMetrics())
        )
        slurm = SlurmIntegration(cfg, clock, controller, ShoalMetrics())
        await clock.run_until(controller.reconcile())
        assert slurm.power is not None
        made.append(Daemon(clock, provider, slurm.power))
        return made[-1]

    yield make
    for daemon in made:
        await daemon.power.close()
        await daemon.provider.close()


async def ec2_names(url: str) -> dict[str, str]:
    """Instance id -> its Slurm node tag, as EC2 holds it."""
    async with get_session().create_client(
        "ec2",  # type: ignore[call-overload]
        region_name="us-east-1",
        endpoint_url=url,
    ) as ec2:
        resp = await ec2.describe_instances()
    return {
        i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}[TAG_SLURM_NODE]
        for r in resp["Reservations"]
        for i in r["Instances"]
    }


async def resume_gang(d: Daemon) -> None:
    await d.power.accept("resume", "cloud[1-3]", THREE_NODE_JOB)
    await d.clock.run_until(slurm_requests_served(d.power))


def paired(d: Daemon) -> dict[str, str]:
    """Instance id -> the node the power saver pairs it with."""
    return {d.power.instance_id(node): node for node in NODES}


async def test_a_three_node_resume_launches_three_instances_each_named(
    start: Any, moto_url: str, ec2_behaviour: Ec2Behaviour
) -> None:
    d = await start()
    await resume_gang(d)
    assert [(r["MinCount"], r["MaxCount"]) for r in ec2_behaviour.requests] == [(3, 3)]
    names = await ec2_names(moto_url)
    assert sorted(names.values()) == NODES
    assert paired(d) == names  # the node the daemon has for each instance is the one it runs
    assert d.power.state.requests == {} and d.power.state.kept_down == {}


async def test_a_throttled_naming_is_retried_with_the_same_instances(
    start: Any, moto_url: str, ec2_behaviour: Ec2Behaviour
) -> None:
    """CreateTags throttled once: the retry layer repeats the launch with its client token,
    which returns the same three instances, and names them."""
    ec2_behaviour.fail_next_create_tags("RequestLimitExceeded")
    d = await start()
    await resume_gang(d)
    assert len(ec2_behaviour.requests) == 2
    names = await ec2_names(moto_url)
    assert len(names) == 3 and paired(d) == names
    assert d.power.state.requests == {} and d.power.state.kept_down == {}


async def test_a_daemon_stopped_between_launch_and_naming_finishes_after_its_restart(
    start: Any, moto_url: str, ec2_behaviour: Ec2Behaviour
) -> None:
    """Every CreateTags of the gang launch throttled, then the daemon stops: the requests stay
    on disk (the launch may have happened, so no node is set DOWN) and the instances carry
    the list of names. The restarted daemon's listing names them, and its replay of the
    requests gets the same instances back: three instances, each its own node's."""
    ec2_behaviour.fail_next_create_tags("RequestLimitExceeded", times=2)  # both tries
    first = await start()
    await resume_gang(first)
    assert sorted(first.power.state.requests) == NODES  # kept for the next try
    assert set((await ec2_names(moto_url)).values()) == {"cloud[1-3]"}  # the list, a hostlist
    await first.power.close()

    second = await start()
    await second.clock.run_until(slurm_requests_served(second.power))
    names = await ec2_names(moto_url)
    assert sorted(names.values()) == NODES
    assert len(ec2_behaviour._launched_at) == 3  # nothing launched twice
    assert paired(second) == names
    assert second.power.state.requests == {}
