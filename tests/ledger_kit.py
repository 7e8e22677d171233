"""Set-ups the launch ledger's tests share (``tests/daemon/test_ledger_review_*.py``): one
node type, instances as a listing shows them, a unit's intent on disk as a ``kill -9``
leaves it, a cloud and a daemon in three zones, and a process restarted on a state dir."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from loop_harness import config_dict, make_harness
from shoal.daemon.config import parse_config
from shoal.daemon.durable import DurableStore, LaunchJournal, offering_to_json
from shoal.daemon.nodes import NodeTracker
from shoal.providers.base import TAG_AUTOSCALED, TAG_REQUEST_ID, Node
from shoal.providers.errors import ProviderError
from shoal.providers.outcomes import LaunchRequest
from shoal.providers.simulated import SimulatedProvisioner
from shoal.scaler.model import CapacityType, NodeType, Offering
from shoal.scaler.shape import Shape

if TYPE_CHECKING:
    from loop_harness import Harness
    from shoal.runtime.testing import FakeClock

__all__ = [
    "C5",
    "T0",
    "ZONELESS",
    "ZONE_A",
    "ZONE_B",
    "ZONE_C",
    "A",
    "B",
    "C",
    "in_three_zones",
    "killed_before",
    "listed",
    "restart",
    "three_zones",
    "write_intent",
]

C5 = NodeType("c5", ("c5.xlarge",), Shape(3600, 1, 4, 1, False))
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
ZONE_A, ZONE_B, ZONE_C = "us-west-2a", "us-west-2b", "us-west-2c"
A, B, C = (Offering("c5.xlarge", z, CapacityType.ON_DEMAND) for z in (ZONE_A, ZONE_B, ZONE_C))
ZONELESS = Offering("c5.xlarge", "", CapacityType.ON_DEMAND)


def listed(name: str, zone: str = "z", request_id: str = "slurm-r") -> Node:
    """An on-demand c5.xlarge of ``request_id`` as a listing shows it, launched at T0."""
    return Node(
        None,
        "10.0.0.1",
        name,
        dt.datetime.fromtimestamp(T0, dt.UTC),
        "c5.xlarge",
        False,
        {TAG_AUTOSCALED: "true", TAG_REQUEST_ID: request_id},
        zone=zone,
    )


async def write_intent(
    state: Path,
    request_id: str,
    offering: Offering,
    answered: Sequence[tuple[str | None, Offering]],
    *,
    at: float = T0,
    count: int = 1,
    node_type: str = "c5",
) -> None:
    """On disk, the ledger alone: a unit's intent for ``count`` at ``offering``, naming the
    ids its earlier offerings ``answered``, and no entries (``kill -9`` landed once the
    intent was written, before its launch was answered)."""
    store = DurableStore.open(state)
    intent = {
        "node_type": node_type,
        "count": count,
        "offering": offering_to_json(offering),
        "at": at,
        "answered": [{"id": i, "offering": offering_to_json(o)} for i, o in answered],
        "replay": {"tags": {}, "gang": False, "cause": "demand"},
    }
    store.section("ledger", lambda: {"intents": {request_id: intent}, "entries": []})
    await store.flush()
    store.close()


def restart(
    state: Path, default_zone: str = "us-west-2a", ttl: float = 600.0
) -> tuple[NodeTracker, LaunchJournal, DurableStore]:
    """A fresh process on ``state``: its tracker with the ledger restored (close the store)."""
    store = DurableStore.open(state)
    tracker = NodeTracker([C5], default_zone=default_zone, ledger_ttl=ttl)
    journal = LaunchJournal(store)
    journal.restore(tracker)
    return tracker, journal, store


def three_zones(clock: FakeClock) -> SimulatedProvisioner:
    """A simulated cloud in zones a, b and c whose listing lags 60 s."""
    return SimulatedProvisioner(
        clusterName="test", zones=[ZONE_A, ZONE_B, ZONE_C], clock=clock, listing_lag=60.0
    )


async def in_three_zones(clock: FakeClock, state: Path, cloud: SimulatedProvisioner) -> Harness:
    """A daemon's controller on ``cloud`` launching in zones a, b and c, its state in ``state``."""
    data = config_dict(state_dir=str(state))
    data["provider"] = {**data["provider"], "zone": None, "zones": [ZONE_A, ZONE_B, ZONE_C]}
    return await make_harness(clock, parse_config(data), cloud)


async def killed_before(h: Harness, zone: str, state: Path, crashed: Path) -> None:
    """A pass of ``h`` planning one unit of 3 four-core nodes, and ``kill -9`` landing as its
    launch reaches ``zone``: what disk (``state``) holds then is copied to ``crashed``, and
    that offering is never asked (the launches before it happened)."""
    cloud = h.provider
    real = cloud.launch_offering

    async def killed(request: LaunchRequest) -> list[str]:
        if request.offering.zone == zone:
            shutil.copytree(state, crashed)  # what disk holds when kill -9 lands
            raise ProviderError("the daemon is gone")  # never reached the cloud
        return await real(request)

    cloud.launch_offering = killed  # type: ignore[method-assign]
    try:
        h.set_demand(h.jobs(12))
        await h.pass_()
    finally:
        cloud.launch_offering = real  # type: ignore[method-assign]
