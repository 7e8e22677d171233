"""The fleet is composed over a ``NodeProvider``, not inherited: a ``Fleet`` of its own drives
the simulated cloud's primitives (zone fallback, tags, events, batched termination), with
the provider's own fleet untouched."""

from __future__ import annotations

import dataclasses

import pytest
from shoal.providers.base import TAG_INSTANCE_TYPE, TAG_REQUEST_ID
from shoal.providers.errors import CapacityError, ProviderError, TerminationError
from shoal.providers.fleet import Fleet
from shoal.providers.node_provider import NodeProvider
from shoal.providers.outcomes import (
    LaunchAttempt,
    LaunchRequest,
    ProviderEvent,
    TerminationResult,
)
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import CapacityType, Offering


async def test_a_fleet_of_its_own_over_the_simulated_cloud() -> None:
    cloud = SimulatedProvisioner("demo", zones=["sim-1a", "sim-1b"], clock=FakeClock())
    assert isinstance(cloud, NodeProvider)
    cloud.set_unavailable("c5.xlarge", False, zone="sim-1a")
    fleet = Fleet(cloud, cluster_name="demo", zones=cloud.zones)
    events: list[ProviderEvent] = []
    fleet.subscribe(events.append)

    launched = await fleet.addNodes(["c5.xlarge"], 3, False, requestId="r-1")

    assert launched == 3
    attempts = [e for e in events if isinstance(e, LaunchAttempt)]
    assert [(a.offering.zone, len(a.ids), a.error is not None) for a in attempts] == [
        ("sim-1a", 0, True),
        ("sim-1b", 3, False),
    ]
    workers = await fleet.getProvisionedWorkers("c5.xlarge")
    assert sorted(w.name for w in workers) == sorted(attempts[1].ids)
    assert {(w.zone, w.tags[TAG_INSTANCE_TYPE], w.tags[TAG_REQUEST_ID]) for w in workers} == {
        ("sim-1b", "c5.xlarge", "r-1")
    }
    assert fleet.offerings(["c5.xlarge"], True) == [
        Offering("c5.xlarge", "sim-1a", CapacityType.SPOT),
        Offering("c5.xlarge", "sim-1b", CapacityType.SPOT),
    ]
    # The provisioner's own fleet saw none of it: the listeners are the fleet's.
    assert cloud.fleet is not fleet

    await fleet.terminateNodes(workers, requestId="t-1")

    (result,) = [e for e in events if isinstance(e, TerminationResult)]
    assert sorted(result.terminated) == sorted(w.name for w in workers)
    assert await fleet.getProvisionedWorkers() == []


async def launch_gang(
    cloud: SimulatedProvisioner, nodes: int
) -> tuple[Fleet, int, list[int], list[ProviderEvent]]:
    """A gang of ``nodes`` c5.xlarge through a fleet of its own: the fleet, how many it
    launched, the workers alive before each offering was tried, and the events."""
    fleet = Fleet(cloud, cluster_name="demo", zones=cloud.zones)
    events: list[ProviderEvent] = []
    fleet.subscribe(events.append)
    seen: list[int] = []

    async def before_offering(offering: Offering, token: str) -> None:
        seen.append(len(cloud.worker_names()))

    launched = await fleet.addNodes(
        ["c5.xlarge"], nodes, False, all_or_nothing=True, before_offering=before_offering
    )
    return fleet, launched, seen, events


async def test_a_gang_falls_back_whole_and_is_never_listed_in_part() -> None:
    """The simulated cloud as EC2: a 4-node gang in a zone with room for 3 launches nothing
    there, then all 4 in the next zone, and no listing between the calls shows part of it."""
    cloud = SimulatedProvisioner("demo", zones=["sim-1a", "sim-1b"], clock=FakeClock())
    cloud.set_capacity("c5.xlarge", 3, zone="sim-1a")

    fleet, launched, seen, events = await launch_gang(cloud, 4)

    assert launched == 4 and seen == [0, 0]
    # refused by the cloud itself, not launched in part and ended by the fleet
    assert not [e for e in events if isinstance(e, TerminationResult)]
    attempts = [e for e in events if isinstance(e, LaunchAttempt)]
    assert [(a.offering.zone, len(a.ids), a.capacity_error) for a in attempts] == [
        ("sim-1a", 0, True),
        ("sim-1b", 4, False),
    ]
    assert {w.zone for w in await fleet.getProvisionedWorkers()} == {"sim-1b"}
    # Without all_or_nothing the same request fills what the zone has, as before.
    assert await fleet.addNodes(["c5.xlarge"], 4, False) == 4
    zones = sorted(w.zone for w in await fleet.getProvisionedWorkers())
    assert zones == ["sim-1a"] * 3 + ["sim-1b"] * 5


async def test_a_gang_no_offering_can_hold_launches_nothing_at_all() -> None:
    cloud = SimulatedProvisioner("demo", zones=["sim-1a", "sim-1b"], clock=FakeClock())
    cloud.set_capacity("c5.xlarge", 3)  # the type's limit, over every zone
    fleet = Fleet(cloud, cluster_name="demo", zones=cloud.zones)
    with pytest.raises(CapacityError) as caught:
        await fleet.addNodes(
            ["c5.xlarge", "m5.xlarge"],
            4,
            False,
            all_or_nothing=True,
            exclude={
                Offering("m5.xlarge", "sim-1a", CapacityType.ON_DEMAND),
                Offering("m5.xlarge", "sim-1b", CapacityType.ON_DEMAND),
            },
        )
    assert len(caught.value.offerings) == 2 and cloud.worker_names() == []


async def test_part_of_a_gang_a_cloud_answers_is_terminated_at_once() -> None:
    """A cloud that answers an all-or-nothing request with fewer (as if MinCount were
    ignored): those are terminated before the next offering is tried, that offering counts as
    out of capacity, and the gang launches whole elsewhere."""
    cloud = SimulatedProvisioner("demo", zones=["sim-1a", "sim-1b"], clock=FakeClock())
    cloud.set_capacity("c5.xlarge", 3, zone="sim-1a")
    real = cloud.launch_offering

    async def min_count_ignored(request: LaunchRequest) -> list[str]:
        return await real(dataclasses.replace(request, min_count=1))

    cloud.launch_offering = min_count_ignored  # type: ignore[method-assign]

    fleet, launched, seen, events = await launch_gang(cloud, 4)

    assert launched == 4 and seen == [0, 0]  # the 3 of sim-1a were gone before sim-1b
    attempts = [e for e in events if isinstance(e, LaunchAttempt)]
    assert [(len(a.ids), a.capacity_error) for a in attempts] == [(0, True), (4, False)]
    (ended,) = [e for e in events if isinstance(e, TerminationResult)]
    assert len(ended.terminated) == 3
    assert {w.zone for w in await fleet.getProvisionedWorkers()} == {"sim-1b"}


async def test_part_of_a_gang_that_cannot_be_terminated_is_told_and_raised() -> None:
    cloud = SimulatedProvisioner("demo", zones=["sim-1a"], clock=FakeClock())
    cloud.set_capacity("c5.xlarge", 2)
    real = cloud.launch_offering

    async def min_count_ignored(request: LaunchRequest) -> list[str]:
        ids = await real(dataclasses.replace(request, min_count=1))
        cloud.fail_termination(ids[0], ProviderError("refused", code="UnauthorizedOperation"))
        return ids

    cloud.launch_offering = min_count_ignored  # type: ignore[method-assign]
    fleet = Fleet(cloud, cluster_name="demo", zones=cloud.zones)
    events: list[ProviderEvent] = []
    fleet.subscribe(events.append)
    with pytest.raises(TerminationError):
        await fleet.addNodes(["c5.xlarge"], 3, False, all_or_nothing=True)
    (attempt,) = [e for e in events if isinstance(e, LaunchAttempt)]
    assert len(attempt.ids) == 2  # told, so the caller books the one still running
    assert len(cloud.worker_names()) == 1
