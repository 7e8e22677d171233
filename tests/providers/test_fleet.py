"""The fleet is composed over a ``NodeProvider``, not inherited: a ``Fleet`` of its own drives
the simulated cloud's primitives (zone fallback, tags, events, batched termination), with
the provider's own fleet untouched."""

from __future__ import annotations

from shoal.providers.base import TAG_INSTANCE_TYPE, TAG_REQUEST_ID
from shoal.providers.fleet import Fleet
from shoal.providers.node_provider import NodeProvider
from shoal.providers.outcomes import LaunchAttempt, ProviderEvent, TerminationResult
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
