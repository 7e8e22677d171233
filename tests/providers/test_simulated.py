"""The simulated cloud: launches, joins, capacity, spot, idempotency and fault knobs, on a
FakeClock only."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from shoal.providers.base import (
    TAG_AUTOSCALED,
    TAG_CLUSTER,
    TAG_DRAINING,
    TAG_INSTANCE_TYPE,
    TAG_REQUEST_ID,
    TAG_ROLE,
)
from shoal.providers.errors import (
    CapacityError,
    ProviderError,
    QuotaError,
    RetryableError,
    TerminationError,
)
from shoal.providers.outcomes import LaunchRequest
from shoal.providers.simulated import (
    TAG_MANAGED_GROUP,
    TOKEN_TTL,
    SimulatedProvisioner,
    load_catalogue,
)
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import CapacityType, Offering

GIB = 2**30
ZONE = "sim-1a"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> SimulatedProvisioner:
    return SimulatedProvisioner("demo", clock=clock, boot_delay=30, join_delay=15)


def od(t: str) -> Offering:
    return Offering(t, ZONE, CapacityType.ON_DEMAND)


def test_catalogue_has_realistic_types() -> None:
    cat = load_catalogue()
    assert len(cat) >= 30
    for family in ("t3.", "m5.", "c5.", "c5a.", "r5.", "m6i.", "i3."):
        assert any(name.startswith(family) for name in cat), family
    m5 = cat["m5.large"]
    assert (m5.cores, m5.memory_gib, m5.storage_gib, m5.on_demand_price) == (2, 8, 0, 0.096)
    assert cat["i3.large"].storage_gib == 475
    assert all(0 < t.spot_price < t.on_demand_price for t in cat.values())


def test_constructor_checks_cluster_type_and_defaults(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="gridengine"):
        SimulatedProvisioner("x", "gridengine", clock=clock)
    sim = SimulatedProvisioner("x", "kubernetes", clock=clock)
    assert sim.cloud == "simulated"
    assert sim.supportedClusterTypes() == {"mesos", "kubernetes"}
    assert (sim.zone, sim.region) == ("sim-1a", "sim-1")
    assert SimulatedProvisioner("x", zone="us-west-2b", clock=clock).region == "us-west-2"


async def test_launch_list_terminate(sim: SimulatedProvisioner, clock: FakeClock) -> None:
    assert await sim.addNodes({"c5.xlarge"}, 3, False, requestId="r1") == 3
    nodes = await sim.getProvisionedWorkers()
    assert [n.name for n in nodes] == ["sim-000001", "sim-000002", "sim-000003"]
    n = nodes[0]
    assert n.nodeType == "c5.xlarge" and not n.preemptible and n.zone == ZONE
    assert n.privateIP == "10.0.0.1" and n.effectiveIP == "10.0.0.1"
    assert n.launchTime.timestamp() == clock.now()
    assert n.tags[TAG_CLUSTER] == "demo"
    assert n.tags[TAG_ROLE] == "worker"
    assert n.tags[TAG_AUTOSCALED] == "true"
    assert n.tags[TAG_INSTANCE_TYPE] == "c5.xlarge"
    assert n.tags[TAG_REQUEST_ID] == "r1"
    assert sim.cost_per_hour() == pytest.approx(3 * 0.17)

    await sim.terminateNodes(nodes[:2])
    await sim.terminateNodes([nodes[0], "sim-999999"])  # gone and unknown: fine
    assert [n.name for n in await sim.getProvisionedWorkers()] == ["sim-000003"]
    assert sim.instance_state("sim-000001") == "terminated"
    assert [c.operation for c in sim.calls] == [
        "DescribeInstanceTypes",
        "RunInstances",
        "DescribeInstances",
        "TerminateInstances",
        "TerminateInstances",
        "DescribeInstances",
    ]
    assert sim.calls[1].kwargs["requestId"] == "r1"
    assert sim.calls[1].time == clock.now()


async def test_filters(sim: SimulatedProvisioner) -> None:
    await sim.addNodes({"c5.xlarge"}, 2, False)
    await sim.addNodes({"m5.large"}, 1, True, spotBid=1.0)
    assert len(await sim.getProvisionedWorkers()) == 3
    assert len(await sim.getProvisionedWorkers(instance_type="c5.xlarge")) == 2
    assert [n.nodeType for n in await sim.getProvisionedWorkers(preemptible=True)] == ["m5.large"]
    assert await sim.getProvisionedWorkers("m5.large", preemptible=False) == []
    assert sim.cost_per_hour() == pytest.approx(2 * 0.17 + 0.038)


async def test_boot_and_join_follow_the_clock(sim: SimulatedProvisioner, clock: FakeClock) -> None:
    await sim.addNodes({"m5.large"}, 1, False)
    (node,) = await sim.getProvisionedWorkers()
    assert node.joined is False and sim.instance_state(node.name) == "booting"
    await clock.advance(29.9)
    assert sim.instance_state(node.name) == "booting"
    await clock.advance(0.1)
    assert sim.instance_state(node.name) == "running"
    assert (await sim.getProvisionedWorkers())[0].joined is False
    await clock.advance(15)
    assert sim.instance_state(node.name) == "joined"
    assert (await sim.getProvisionedWorkers())[0].joined is True
    assert node.joined is False  # an earlier listing is a snapshot: not changed under the caller


async def test_capacity_limit_launches_partially(clock: FakeClock) -> None:
    sim = SimulatedProvisioner("demo", clock=clock, capacity={"c5.xlarge": 3})
    assert await sim.addNodes({"c5.xlarge"}, 5, False) == 3
    with pytest.raises(CapacityError) as info:
        await sim.addNodes({"c5.xlarge"}, 1, False)
    assert info.value.code == "InsufficientInstanceCapacity"
    assert info.value.offerings == (od("c5.xlarge"),)
    assert sim.api_errors["RunInstances", "InsufficientInstanceCapacity"] == 1
    # capacity counts live instances: terminating one makes room
    await sim.terminateNodes(["sim-000001"])
    assert await sim.addNodes({"c5.xlarge"}, 4, False) == 1
    sim.set_capacity("c5.xlarge", None)
    assert await sim.addNodes({"c5.xlarge"}, 4, False) == 4


async def test_alternatives_in_preference_order(sim: SimulatedProvisioner) -> None:
    sim.set_capacity("c5.xlarge", 0)
    sim.set_capacity("c5a.xlarge", 2)
    # a set is tried sorted: c5.xlarge (none), c5a.xlarge (2), then m5.xlarge for the rest
    assert await sim.addNodes({"m5.xlarge", "c5a.xlarge", "c5.xlarge"}, 5, False) == 5
    types = [n.nodeType for n in await sim.getProvisionedWorkers()]
    assert types == ["c5a.xlarge"] * 2 + ["m5.xlarge"] * 3
    # a list keeps the caller's order
    assert await sim.addNodes(["m5.xlarge", "c5a.xlarge"], 1, False) == 1
    assert (await sim.getProvisionedWorkers())[-1].nodeType == "m5.xlarge"
    asked = [c.kwargs["offering"].instance_type for c in sim.calls if c.operation == "RunInstances"]
    assert asked == ["c5.xlarge", "c5a.xlarge", "m5.xlarge", "m5.xlarge"]


async def test_capacity_error_carries_every_offering_tried(sim: SimulatedProvisioner) -> None:
    sim.set_capacity("c5.xlarge", 0)
    sim.set_unavailable("c5a.xlarge", preemptible=False)
    with pytest.raises(CapacityError) as info:
        await sim.addNodes(["c5a.xlarge", "c5.xlarge"], 2, False)
    assert info.value.offerings == (od("c5a.xlarge"), od("c5.xlarge"))
    assert info.value.code == "InsufficientInstanceCapacity"
    assert "c5a.xlarge/sim-1a/on-demand" in str(info.value)
    # unavailable on-demand does not touch spot; clearing restores it
    assert await sim.addNodes({"c5a.xlarge"}, 1, True, spotBid=1.0) == 1
    sim.set_unavailable("c5a.xlarge", code=None)
    assert await sim.addNodes({"c5a.xlarge"}, 1, False) == 1


async def test_spot_bid_below_price(sim: SimulatedProvisioner) -> None:
    with pytest.raises(CapacityError) as info:
        await sim.addNodes({"c5.xlarge"}, 1, True, spotBid=0.01)
    assert info.value.code == "SpotMaxPriceTooLow"
    assert info.value.offerings == (Offering("c5.xlarge", ZONE, CapacityType.SPOT),)
    assert await sim.addNodes({"c5.xlarge"}, 1, True, spotBid=0.07) == 1
    # no bid given: the bid set by setAutoscaledNodeTypes for that set is used
    await sim.setAutoscaledNodeTypes([({"m5.large"}, 0.001)])
    with pytest.raises(CapacityError, match="SpotMaxPriceTooLow"):
        await sim.addNodes({"m5.large"}, 1, True)


async def test_request_id_is_idempotent(sim: SimulatedProvisioner) -> None:
    assert await sim.addNodes({"m5.large"}, 3, False, requestId="abc") == 3
    assert await sim.addNodes({"m5.large"}, 3, False, requestId="abc") == 3
    assert len(await sim.getProvisionedWorkers()) == 3
    assert await sim.addNodes({"m5.large"}, 3, False, requestId="def") == 3
    assert len(await sim.getProvisionedWorkers()) == 6


async def test_partial_launch_is_remembered_by_request_id(clock: FakeClock) -> None:
    sim = SimulatedProvisioner("demo", clock=clock, capacity={"m5.large": 2})
    assert await sim.addNodes({"m5.large"}, 5, False, requestId="r") == 2
    sim.set_capacity("m5.large", None)
    assert await sim.addNodes({"m5.large"}, 5, False, requestId="r") == 2
    assert sim.count("m5.large") == 2


async def test_failed_request_id_can_be_retried(sim: SimulatedProvisioner) -> None:
    sim.set_capacity("m5.large", 0)
    with pytest.raises(CapacityError):
        await sim.addNodes({"m5.large"}, 1, False, requestId="r")
    sim.set_capacity("m5.large", 1)
    assert await sim.addNodes({"m5.large"}, 1, False, requestId="r") == 1


async def test_throttle_then_success(sim: SimulatedProvisioner) -> None:
    sim.throttle_next(2, operation="RunInstances")
    await sim.getProvisionedWorkers()  # other operations are not throttled
    for _ in range(2):
        with pytest.raises(RetryableError) as info:
            await sim.addNodes({"m5.large"}, 1, False, requestId="t")
        assert info.value.code == "RequestLimitExceeded"
        assert info.value.operation == "RunInstances"
        assert SimulatedProvisioner.retryPredicate(info.value)
    assert await sim.addNodes({"m5.large"}, 1, False, requestId="t") == 1
    assert sim.api_errors["RunInstances", "RequestLimitExceeded"] == 2
    assert len([c for c in sim.calls if c.operation == "RunInstances"]) == 3
    assert sim.count() == 1


async def test_throttle_any_operation(sim: SimulatedProvisioner) -> None:
    sim.throttle_next(1)
    with pytest.raises(RetryableError):
        await sim.getProvisionedWorkers()
    assert await sim.getProvisionedWorkers() == []


@pytest.mark.parametrize("order", ["exc-first", "operation-first"])
async def test_fail_next(sim: SimulatedProvisioner, order: str) -> None:
    error = ProviderError("boom", code="InternalError")
    if order == "exc-first":
        sim.fail_next(error, "DescribeInstances")
    else:
        sim.fail_next("DescribeInstances", error)
    await sim.addNodes({"m5.large"}, 1, False)
    with pytest.raises(ProviderError, match="boom"):
        await sim.getProvisionedWorkers()
    assert len(await sim.getProvisionedWorkers()) == 1
    assert sim.api_errors["DescribeInstances", "InternalError"] == 1
    assert not SimulatedProvisioner.retryPredicate(error)
    assert not SimulatedProvisioner.retryPredicate(CapacityError("x", offerings=()))


async def test_reset_faults(sim: SimulatedProvisioner) -> None:
    sim.throttle_next(5)
    sim.never_join()
    sim.reset_faults()
    await sim.addNodes({"m5.large"}, 1, False)
    assert sim.count() == 1


async def test_instance_limit_is_a_quota_error(sim: SimulatedProvisioner) -> None:
    sim.set_instance_limit(2)
    assert await sim.addNodes({"m5.large"}, 3, False) == 2
    with pytest.raises(QuotaError) as info:
        await sim.addNodes({"c5.large", "m5.large"}, 1, False)
    assert info.value.code == "InstanceLimitExceeded"
    assert info.value.offerings == (od("c5.large"), od("m5.large"))


async def test_never_join(sim: SimulatedProvisioner, clock: FakeClock) -> None:
    sim.never_join("c5.large")
    sim.never_join(1)
    await sim.addNodes({"c5.large"}, 2, False)
    await sim.addNodes({"m5.large"}, 2, False)  # the first of these takes the count of 1
    await clock.advance(3600)
    joined = {n.name: (n.nodeType, n.joined) for n in await sim.getProvisionedWorkers()}
    assert joined == {
        "sim-000001": ("c5.large", False),
        "sim-000002": ("c5.large", False),
        "sim-000003": ("m5.large", False),
        "sim-000004": ("m5.large", True),
    }
    assert sim.instance_state("sim-000001") == "running"
    sim.never_join()
    await sim.addNodes({"r5.large"}, 1, False)
    await clock.advance(3600)
    assert (await sim.getProvisionedWorkers("r5.large"))[0].joined is False


async def test_preempt(sim: SimulatedProvisioner, clock: FakeClock) -> None:
    await sim.addNodes({"m5.large"}, 2, True, spotBid=0.1)
    await sim.addNodes({"m5.large"}, 1, False)
    sim.preempt("sim-000001")
    assert [n.name for n in await sim.getProvisionedWorkers()] == ["sim-000002", "sim-000003"]
    assert sim.interruptions == [("sim-000001", clock.now())]
    with pytest.raises(ValueError, match="on-demand"):
        sim.preempt("sim-000003")
    with pytest.raises(KeyError):
        sim.preempt("sim-000001")


async def test_worker_names_is_the_clouds_truth_whatever_the_listing_shows(
    sim: SimulatedProvisioner, clock: FakeClock
) -> None:
    sim.listing_lag = 60.0
    await sim.addNodes({"m5.large"}, 2, False)
    sim.stop_instance("sim-000001")
    assert await sim.getProvisionedWorkers() == []  # not listed yet
    assert sim.worker_names() == ["sim-000001", "sim-000002"]  # stopped or not, they exist
    await sim.terminate_instances(["sim-000001"])
    assert sim.worker_names() == ["sim-000002"]


async def test_spot_interruptions_on_the_clock_are_seeded(clock: FakeClock) -> None:
    async def run(seed: int) -> list[tuple[str, float]]:
        c = FakeClock()
        sim = SimulatedProvisioner("d", clock=c, spot_interruption_rate=1.0, seed=seed)
        await sim.addNodes({"m5.large"}, 50, True, spotBid=1.0)
        await sim.addNodes({"m5.large"}, 50, False)
        await c.advance(3600)
        alive = await sim.getProvisionedWorkers()
        assert len(alive) == 100 - len(sim.interruptions)
        assert all(not n.preemptible for n in alive[len(alive) - 50 :])
        return sim.interruptions

    first = await run(7)
    assert first == await run(7)
    assert first != await run(8)
    # rate 1 per node-hour: about 63% of 50 spot nodes are gone after an hour
    assert 20 <= len(first) <= 45
    assert all(1_700_000_000 < at <= 1_700_003_600 for _, at in first)


async def test_next_interruption_is_when_the_next_one_happens(clock: FakeClock) -> None:
    sim = SimulatedProvisioner("d", clock=clock, spot_interruption_rate=1.0, seed=3)
    assert sim.next_interruption() is None
    await sim.addNodes({"m5.large"}, 3, False)
    assert sim.next_interruption() is None  # on-demand nodes are never interrupted
    await sim.addNodes({"m5.large"}, 3, True, spotBid=1.0)
    seen = []
    while (at := sim.next_interruption()) is not None:
        assert at > clock.now()
        await clock.advance(at - clock.now())
        assert sim.count() == 6 - len(seen) - 1  # gone exactly then
        seen.append(at)
        assert sim.interruptions[-1][1] == at
    assert len(seen) == 3 and seen == sorted(seen)
    # a terminated spot node's draw no longer counts
    await sim.addNodes({"m5.large"}, 1, True, spotBid=1.0)
    assert sim.next_interruption() is not None
    await sim.terminateNodes([n.name for n in await sim.getProvisionedWorkers() if n.preemptible])
    assert sim.next_interruption() is None


async def test_api_latency_waits_on_the_clock(clock: FakeClock) -> None:
    sim = SimulatedProvisioner("d", clock=clock, api_latency=2.0)
    task = asyncio.create_task(sim.addNodes({"m5.large"}, 1, False))
    await clock.settle()
    assert not task.done() and clock.pending() == 1  # DescribeInstanceTypes takes 2 s
    await clock.advance(2)
    assert not task.done() and clock.pending() == 1  # then RunInstances 2 s more
    await clock.advance(2)
    assert await task == 1
    describe, run = sim.calls
    assert (describe.time, run.time) == (clock.now() - 4, clock.now() - 2)


async def test_node_shape(clock: FakeClock) -> None:
    sim = SimulatedProvisioner(
        "d", clock=clock, nodeStorage=80, nodeStorageOverrides=["m5.large:200"]
    )
    shape = await sim.getNodeShape("c5.xlarge")
    assert (shape.wallTime, shape.cores, shape.memory, shape.disk) == (3600, 4, 8 * GIB, 80 * GIB)
    assert shape.preemptible is False
    assert (await sim.getNodeShape("m5.large", True)).disk == 200 * GIB
    assert (await sim.getNodeShape("m5.large", True)).preemptible is True
    i3 = await sim.getNodeShape("i3.large")
    assert (i3.disk, i3.memory) == (475 * GIB, int(15.25 * GIB))
    assert sim.instancePrice("c5.xlarge") == 0.17
    assert sim.instancePrice("c5.xlarge", True) == 0.07
    assert sim.instancePrice("r5.large") is None  # never looked up: unknown, not free


async def test_unknown_type_names_near_ones(sim: SimulatedProvisioner) -> None:
    with pytest.raises(ProviderError, match=r"'c5.xlarg'.*c5\.xlarge"):
        await sim.getNodeShape("c5.xlarg")
    with pytest.raises(ProviderError, match=r"unknown instance type 'zz9\.huge'"):
        await sim.addNodes({"zz9.huge"}, 1, False)
    assert sim.count() == 0


async def test_static_nodes_are_listed_not_autoscaled(sim: SimulatedProvisioner) -> None:
    static = sim.add_static_nodes("r5.large", 2)
    await sim.addNodes({"r5.large"}, 1, False)
    nodes = await sim.getProvisionedWorkers("r5.large")
    assert [n.name for n in nodes] == [n.name for n in static] + ["sim-000003"]
    assert [n.tags[TAG_AUTOSCALED] for n in nodes] == ["false", "false", "true"]
    assert [n.joined for n in nodes] == [True, True, False]
    assert not sim.add_static_nodes("r5.large", joined=False)[0].joined


async def test_leader_and_destroy_cluster(sim: SimulatedProvisioner, clock: FakeClock) -> None:
    with pytest.raises(ProviderError, match="no leader"):
        await sim.getLeader()
    await sim.createClusterSettings()
    await sim.launchCluster("t3.large", 50, "me", userTags={"team": "x"})
    leader = await sim.getLeader()
    assert leader.tags[TAG_ROLE] == "leader" and leader.tags["team"] == "x"
    assert leader.publicIP is not None and leader.effectiveIP == leader.publicIP
    with pytest.raises(ProviderError, match="already has a leader"):
        await sim.launchCluster("t3.large")
    await sim.readClusterSettings()
    assert set(sim.settings) >= {"created", "read"}
    sim.add_static_nodes("m5.large")
    await sim.addNodes({"m5.large"}, 2, False)
    assert leader.name not in {n.name for n in await sim.getProvisionedWorkers()}
    assert sim.count() == 4
    await sim.destroyCluster()
    await sim.destroyCluster()
    assert sim.count() == 0 and sim.cost_per_hour() == 0
    assert await sim.getProvisionedWorkers() == []


async def test_managed_nodes(sim: SimulatedProvisioner) -> None:
    await sim.addManagedNodes({"m5.large"}, 2, 4, False)
    (group,) = sim.managed_groups
    nodes = await sim.getProvisionedWorkers()
    assert len(nodes) == 2
    assert all(n.tags[TAG_AUTOSCALED] == "false" for n in nodes)
    assert all(n.tags[TAG_MANAGED_GROUP] == group for n in nodes)
    await sim.terminateNodes(nodes[:1])  # the group replaces it on the next call
    assert len(await sim.getProvisionedWorkers()) == 2
    assert sim.set_managed_desired(group, 10) == 4
    assert sim.count() == 4
    assert sim.set_managed_desired(group, 0) == 2
    assert sim.count() == 2
    with pytest.raises(ValueError):
        await sim.addManagedNodes({"m5.large"}, 3, 1, False)


async def test_recorded_calls_are_bounded(clock: FakeClock) -> None:
    sim = SimulatedProvisioner("d", clock=clock, record_calls=10)
    for _ in range(25):
        await sim.getProvisionedWorkers()
    assert 10 <= len(sim.calls) <= 11


def test_kubernetes_autoscaler_commands_are_harmless(clock: FakeClock) -> None:
    sim = SimulatedProvisioner("x", "kubernetes", clock=clock)
    script = sim.getKubernetesAutoscalerSetupCommands({"CLUSTER_NAME": "it's"})
    assert script.startswith("#") and "echo" in script
    assert [line for line in script.splitlines() if not line.startswith("#")] == [
        "echo 'shoal: no cluster autoscaler to set up for simulated cluster ''it'\"'\"'s'"
    ]
    assert sim.getKubernetesCloudProvider() is None


async def test_ten_thousand_nodes(sim: SimulatedProvisioner, clock: FakeClock) -> None:
    assert await sim.addNodes({"c5.large"}, 6000, False) == 6000
    assert await sim.addNodes({"m5.large"}, 4000, True, spotBid=1.0) == 4000
    await clock.advance(45)
    nodes = await sim.getProvisionedWorkers()
    assert len(nodes) == 10_000 and all(n.joined for n in nodes)
    assert len({n.privateIP for n in nodes}) == 10_000
    assert len(await sim.getProvisionedWorkers("m5.large", preemptible=True)) == 4000
    assert sim.count("c5.large") == 6000
    await sim.terminateNodes(nodes[::2])
    assert len(await sim.getProvisionedWorkers()) == 5000
    assert sim.cost_per_hour() == pytest.approx(3000 * 0.085 + 2000 * 0.038)


async def test_listing_is_eventually_consistent(clock: FakeClock) -> None:
    sim = SimulatedProvisioner("d", clock=clock, listing_lag=4.0)
    assert await sim.addNodes(["m5.large"], 2, False) == 2
    assert sim.count("m5.large") == 2  # they exist, and cost money
    assert await sim.getProvisionedWorkers() == []  # but the listing does not show them yet
    await clock.advance(3.9)
    assert await sim.getProvisionedWorkers() == []
    await clock.advance(0.1)
    assert len(await sim.getProvisionedWorkers()) == 2
    assert len(sim.add_static_nodes("m5.large")) == 1  # static nodes have run for a while
    assert len(await sim.getProvisionedWorkers()) == 3


async def test_a_lost_response_launched_and_the_retry_returns_the_same_nodes(
    sim: SimulatedProvisioner,
) -> None:
    sim.lose_next_response()
    with pytest.raises(RetryableError) as info:
        await sim.addNodes(["m5.large"], 3, False, requestId="r")
    assert info.value.code == "InternalError" and sim.retryPredicate(info.value)
    assert sim.count("m5.large") == 3  # launched, answer lost
    assert await sim.addNodes(["m5.large"], 3, False, requestId="r") == 3
    assert sim.count("m5.large") == 3  # the same token: nothing launched twice


async def test_client_tokens_are_kept_a_day_not_for_ever(
    sim: SimulatedProvisioner, clock: FakeClock
) -> None:
    """A cloud that runs for months (``shoal run`` on the simulated cloud, a month-long
    ``shoal simulate``) keeps a launch's client token for ``TOKEN_TTL``, not every token
    ever sent: a launch an hour for 30 days leaves a day's tokens, and a retry within the
    day still launches nothing more."""
    for i in range(24 * 30):
        assert await sim.addNodes(["m5.large"], 1, False, requestId=f"r{i}") == 1
        await clock.advance(3600)
    assert len(sim._tokens) <= TOKEN_TTL / 3600 + 1
    assert await sim.addNodes(["m5.large"], 1, False, requestId=f"r{24 * 30 - 1}") == 1
    assert sim.count("m5.large") == 24 * 30


async def test_a_client_token_sent_again_with_other_arguments_is_a_mismatch(
    sim: SimulatedProvisioner,
) -> None:
    """As EC2 documents: a token sent again with the same arguments returns what it
    launched; with other arguments (count, bid, tags, placement) it is
    IdempotentParameterMismatch, and nothing is launched either way. A token whose launch
    failed is not kept: a later launch with it may succeed."""
    offering = sim.offerings(["m5.large"], False)[0]

    def request(count: int = 2, **changes: object) -> LaunchRequest:
        base = LaunchRequest(offering, count, "tok", "req", None, {"team": "a"})
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    ids = await sim.launch_offering(request())
    assert await sim.launch_offering(request()) == ids
    for other in (
        request(3),
        request(min_count=2),
        request(tags={"team": "b"}),
        request(placement_group="cluster"),
    ):
        with pytest.raises(ProviderError) as caught:
            await sim.launch_offering(other)
        assert caught.value.code == "IdempotentParameterMismatch"
    assert sim.count("m5.large") == 2
    sim.set_unavailable("m5.large", False)
    with pytest.raises(CapacityError):
        await sim.launch_offering(request(client_token="tok2"))
    sim.set_unavailable("m5.large", False, code=None)
    assert len(await sim.launch_offering(request(3, client_token="tok2"))) == 3


async def test_zones_in_order_and_an_offering_unavailable_in_one_zone(clock: FakeClock) -> None:
    sim = SimulatedProvisioner("d", clock=clock, zones=["sim-1a", "sim-1b"])
    assert (sim.zone, sim.zones) == ("sim-1a", ("sim-1a", "sim-1b"))
    sim.set_unavailable("m5.large", False, zone="sim-1a")
    assert await sim.addNodes(["m5.large"], 2, False) == 2
    assert {n.zone for n in await sim.getProvisionedWorkers()} == {"sim-1b"}
    sim.set_unavailable("m5.large", False, code=None, zone="sim-1a")
    await sim.addNodes(["m5.large"], 1, False)
    assert sorted(n.zone or "" for n in await sim.getProvisionedWorkers()) == [
        "sim-1a",
        "sim-1b",
        "sim-1b",
    ]


async def test_a_termination_can_fail_per_node(sim: SimulatedProvisioner) -> None:
    await sim.addNodes(["m5.large"], 2, False)
    a, b = (n.name for n in await sim.getProvisionedWorkers())
    sim.fail_termination(a, ProviderError("not allowed", code="OperationNotPermitted"))
    with pytest.raises(TerminationError) as info:
        await sim.terminateNodes([a, b])
    assert set(info.value.failed) == {a} and not info.value.retryable
    assert [n.name for n in await sim.getProvisionedWorkers()] == [a]
    sim.fail_termination(a, None)
    await sim.terminateNodes([a])
    assert sim.count() == 0


async def test_tags_change_every_id_or_none_and_show_in_the_next_listing(
    sim: SimulatedProvisioner, clock: FakeClock
) -> None:
    await sim.addNodes(["m5.large"], 2, False)
    first, second = sorted(n.name for n in await sim.list_instances())
    before = {n.name: n for n in await sim.list_instances()}
    await sim.tag_instances([first], {TAG_DRAINING: "1700000000"})
    listed = {n.name: n for n in await sim.list_instances()}
    assert listed[first].tags[TAG_DRAINING] == "1700000000"
    assert TAG_DRAINING not in before[first].tags  # an earlier listing is not changed
    assert TAG_DRAINING not in listed[second].tags
    with pytest.raises(ProviderError) as info:
        await sim.tag_instances([second, "sim-999999"], {TAG_DRAINING: "1"})
    assert info.value.code == "InvalidInstanceID.NotFound"
    assert TAG_DRAINING not in {n.name: n for n in await sim.list_instances()}[second].tags
    sim.throttle_next(1, operation="DeleteTags")
    with pytest.raises(RetryableError):
        await sim.untag_instances([first], [TAG_DRAINING])
    await sim.untag_instances([first, second], [TAG_DRAINING])
    assert all(TAG_DRAINING not in n.tags for n in await sim.list_instances())
    assert [c.operation for c in sim.calls if "Tags" in c.operation] == [
        "CreateTags",
        "CreateTags",
        "DeleteTags",
        "DeleteTags",
    ]


async def test_a_stopped_instance_lists_stopping_then_stopped_until_terminated(
    sim: SimulatedProvisioner, clock: FakeClock
) -> None:
    await sim.addNodes(["m5.large"], 2, False)
    assert {n.cloud_state for n in await sim.list_instances()} == {"pending"}
    await clock.advance(45)
    stopped, running = sorted(n.name for n in await sim.list_instances())
    sim.stop_instance(stopped, stopping_for=20)
    nodes = {n.name: n for n in await sim.list_instances()}
    assert (nodes[stopped].cloud_state, nodes[stopped].joined) == ("stopping", False)
    assert nodes[stopped].stopped and not nodes[running].stopped
    assert (nodes[running].cloud_state, nodes[running].joined) == ("running", True)
    await clock.advance(20)
    assert sim.instance_state(stopped) == "stopped"
    assert {n.name: n.cloud_state for n in await sim.list_instances()}[stopped] == "stopped"
    await sim.terminateNodes([stopped])
    assert [n.name for n in await sim.list_instances()] == [running]
    with pytest.raises(KeyError):
        sim.stop_instance(stopped)
