"""The daemon's own wiring (build_controller) over the AWS provider against a local moto server
with EC2's documented inconveniences patched in (tests/moto_fixtures.py): an eventually
consistent DescribeInstances, lost responses, capacity per zone. Time is a FakeClock: the
listing lag, retry backoffs and offering backoffs all run on it; moto's own work is real I/O
on loopback.

Only what the AWS provider changes about a pass is here. The loop's own scenarios are
test_loop.py's and test_drain_restart.py's on the simulated cloud (a drain kept across a
restart by its tag, a stopped instance terminated), and what EC2 adds to them is test_aws.py's
(the tags round trip through EC2, a stopped instance is listed as stopped)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import configs
import pytest
from fake_aws_pricing import FakeAwsPricing, SpotRecord, ec2_product
from moto_fixtures import Ec2Behaviour
from shoal.daemon.config import ShoalConfig, parse_config
from shoal.daemon.demand import DemandUpdate
from shoal.daemon.loop import Controller, PassRecord
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.service import build_controller, build_provider
from shoal.daemon.views import status_json
from shoal.providers.aws import AWSProvisioner
from shoal.runtime.testing import FakeClock, InlineExecutor
from shoal.scaler.model import CapacityType, Demand, Offering, QueuedJobs
from shoal.scaler.shape import Shape

GIB = 2**30
REGION = "us-east-1"
ZONES = ["us-east-1a", "us-east-1b"]
IMAGE = "ami-12c6146b"
T = TypeVar("T")


def config(url: str, node_type: str = "c5.xlarge", **overrides: Any) -> ShoalConfig:
    provider = configs.aws_provider(
        url, region=REGION, zones=ZONES, image_id=IMAGE, **overrides.pop("provider", {})
    )
    scaler = {
        "interval": "30s",
        "debounce": "0s",
        "beta_inertia": 0.0,
        "unneeded_time": "1h",
        "join_timeout": "15m",
        "backoff": {"initial": "1m", "max": "10m"},
        "retry": {"attempts": 4, "initial": "1s", "max": "2s", "deadline": "60s"},
        **overrides.pop("scaler", {}),
    }
    return parse_config(
        configs.config(
            cluster_name="aws-loop",
            provider=provider,
            node_types=[{"type": node_type, "max": 10}],
            scaler=scaler,
            demand={"reports": ["queued", "running"]},
            **overrides,
        )
    )


def jobs(n: int, cores: float = 4, preemptible: bool = False) -> DemandUpdate:
    """``n`` jobs that each need a whole 4-core node (2 h: no two share a core in time)."""
    shape = Shape(7200, GIB, cores, GIB, preemptible)
    return DemandUpdate(Demand(queued=(QueuedJobs(shape, n),)))


class Daemon:
    def __init__(self, clock: FakeClock, provider: AWSProvisioner, controller: Controller):
        self.clock = clock
        self.provider = provider
        self.controller = controller

    async def run(self, awaitable: Awaitable[T]) -> T:
        return await self.clock.run_until(awaitable)

    async def pass_(self, demand: DemandUpdate | None = None) -> PassRecord:
        if demand is not None:
            self.controller.set_demand(demand)
        return await self.run(self.controller.run_pass())

    def sample(self, name: str, **labels: str) -> float:
        value = self.controller.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
async def make_daemon(
    moto_url: str, ec2_behaviour: Ec2Behaviour
) -> AsyncIterator[Callable[..., Awaitable[Daemon]]]:
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    clock = FakeClock()
    ec2_behaviour.now = clock.now  # the listing lag runs on the test's clock
    made: list[AWSProvisioner] = []

    async def make(**overrides: Any) -> Daemon:
        cfg = config(moto_url, **overrides)
        provider = build_provider(cfg, clock)
        assert isinstance(provider, AWSProvisioner)
        made.append(provider)
        controller = await clock.run_until(
            build_controller(cfg, provider, clock, metrics=ShoalMetrics())
        )
        daemon = Daemon(clock, provider, controller)
        await daemon.run(controller.reconcile())
        return daemon

    yield make
    for provider in made:
        await provider.close()


async def test_a_lagging_listing_never_launches_twice(
    make_daemon: Callable[..., Awaitable[Daemon]], ec2_behaviour: Ec2Behaviour
) -> None:
    """EC2 lists new instances 5 s late; demand for 4 nodes is pushed again every 0.3 s and
    the loop plans on each push: 4 instances, one RunInstances, over 40 passes."""
    ec2_behaviour.listing_lag = 5.0
    d = await make_daemon()
    unlisted_seen = 0
    for _ in range(40):
        await d.pass_(jobs(4))
        unlisted_seen = max(unlisted_seen, len(d.controller.tracker.pending()))
        await d.clock.advance(0.3)
    assert d.controller.passes == 40
    assert len(ec2_behaviour._launched_at) == 4  # what EC2 holds
    assert len(ec2_behaviour.requests) == 1
    assert unlisted_seen == 4  # the ledger held them while the listing did not show them
    assert d.controller.tracker.pending() == []  # listed by now
    assert len(await d.provider.getProvisionedWorkers()) == 4
    assert d.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="idle") == 0


async def test_a_launch_whose_answers_were_all_lost_is_held_until_it_is_listed(
    make_daemon: Callable[..., Awaitable[Daemon]], ec2_behaviour: Ec2Behaviour
) -> None:
    """Every retry of a launch fails after EC2 accepted it: the ledger books the request's
    token as 3 placeholder nodes, so the next passes launch nothing; once the instances show
    up in the listing (by their request tag), they stand for the placeholders."""
    ec2_behaviour.listing_lag = 20.0
    d = await make_daemon()
    ec2_behaviour.lose_next_response()
    ec2_behaviour.fail_next("InternalError", "try again", times=10)
    record = await d.pass_(jobs(3))
    assert record.launched == 0 and record.errors
    assert len(ec2_behaviour._launched_at) == 3  # launched by the first, lost, request
    pending = d.controller.tracker.pending()
    assert len(pending) == 3 and all(t.placeholder for t in pending)
    for _ in range(3):
        assert (await d.pass_(jobs(3))).launched == 0
    await d.clock.advance(20)
    await d.pass_(jobs(3))
    assert d.controller.tracker.pending() == []
    assert sorted(t.id for t in d.controller.tracker.all()) == sorted(ec2_behaviour._launched_at)
    assert len(ec2_behaviour._launched_at) == 3


async def test_a_zone_out_of_capacity_falls_back_in_the_same_pass_and_backs_off(
    make_daemon: Callable[..., Awaitable[Daemon]], ec2_behaviour: Ec2Behaviour
) -> None:
    ec2_behaviour.capacity[("c5.xlarge", "us-east-1a")] = 0
    d = await make_daemon()
    record = await d.pass_(jobs(2))
    assert record.launched == 2
    assert [(r["InstanceType"], r["Zone"]) for r in ec2_behaviour.requests] == [
        ("c5.xlarge", "us-east-1a"),
        ("c5.xlarge", "us-east-1b"),
    ]
    empty = Offering("c5.xlarge", "us-east-1a", CapacityType.ON_DEMAND)
    until = d.controller.backoff.entries[empty].until
    assert until == d.clock.now() + 60
    (entry,) = status_json(d.controller)["backoff"]
    assert (entry["offering"], entry["failures"]) == (str(empty), 1)
    labels = {"instance_type": "c5.xlarge", "zone": "us-east-1a", "capacity_type": "on-demand"}
    assert d.sample("shoal_backoff_until_timestamp_seconds", **labels) == until
    # more demand within the backoff: the empty zone is not asked
    await d.clock.advance(30)
    assert (await d.pass_(jobs(3))).launched == 1
    assert ec2_behaviour.requests[-1]["Zone"] == "us-east-1b"
    assert len(ec2_behaviour.requests) == 3
    # after it: asked again, still empty, backed off twice as long
    await d.clock.advance(31)
    assert (await d.pass_(jobs(4))).launched == 1
    assert [r["Zone"] for r in ec2_behaviour.requests[3:]] == ["us-east-1a", "us-east-1b"]
    assert d.controller.backoff.entries[empty].failures == 2
    assert d.controller.backoff.entries[empty].until == d.clock.now() + 120


async def test_the_cost_ceiling_bounds_the_fleet_with_shipped_prices(
    make_daemon: Callable[..., Awaitable[Daemon]], ec2_behaviour: Ec2Behaviour
) -> None:
    d = await make_daemon(node_type="m5.xlarge", scaler={"cost_ceiling_per_hour": 0.45})
    (node_type,) = d.controller.policy.node_types
    assert node_type.price_per_hour == 0.192  # m5.xlarge in us-east-1, from the shipped table
    record = await d.pass_(jobs(8))
    assert record.launched == 2  # 2 x $0.192 fit $0.45; a third would not
    plan = d.controller.last_plan
    assert plan is not None and plan.cost_per_hour == pytest.approx(0.384)
    assert {r for u in plan.unschedulable for r in u.reasons} == {"cost-ceiling"}
    assert sum(u.count for u in plan.unschedulable) == 6


async def refresh_prices(provider: AWSProvisioner) -> None:
    """One price refresh now: what ``provider.start()`` repeats every 12 h in the background,
    run here without that loop, whose sleep on the fake clock would fire whenever the clock
    moves while a call waits on moto."""
    await (await provider._refresher()).refresh_once()


async def test_a_spot_price_refresh_changes_the_plans_cost(
    make_daemon: Callable[..., Awaitable[Daemon]], ec2_behaviour: Ec2Behaviour
) -> None:
    fake = FakeAwsPricing()
    url = await fake.start()
    try:
        fake.add_product(ec2_product("m5.xlarge", REGION, "0.1920000000"))
        for zone, price in (("us-east-1a", "0.0510"), ("us-east-1b", "0.0620")):
            fake.spot.append(SpotRecord("m5.xlarge", zone, price, datetime.now(UTC)))
        d = await make_daemon(
            node_type="m5.xlarge:0.5",
            provider={"price_refresh": True, "pricing_endpoint_url": url},
        )
        (spot,) = d.controller.policy.node_types
        assert spot.price_per_hour == 0.192  # no spot price yet: bounded by on-demand
        await d.pass_(jobs(2, preemptible=True))
        plan = d.controller.last_plan
        assert plan is not None and plan.cost_per_hour == pytest.approx(2 * 0.192)
        await d.run(refresh_prices(d.provider))
        (spot,) = d.controller.policy.node_types
        assert spot.price_per_hour == 0.051  # the first zone's spot price
        await d.pass_(jobs(2, preemptible=True))
        plan = d.controller.last_plan
        assert plan is not None and plan.cost_per_hour == pytest.approx(2 * 0.051)
        assert d.sample("shoal_price_refreshes_total", outcome="ok") == 1
        # a refresh that fails keeps the last good prices, and is counted
        fake.fail_next("DescribeSpotPriceHistory", "UnauthorizedOperation")
        await d.run(refresh_prices(d.provider))
        assert d.sample("shoal_price_refreshes_total", outcome="failed") == 1
        assert d.controller.policy.node_types[0].price_per_hour == 0.051
    finally:
        await fake.stop()
