"""A launch made again after a restart (``Controller._replay_intents``) while nodes of its
type that a lowered ``max`` drained are still alive: found by the chaos harness's ``reload``
fault in ha mode (``bench/chaos.py --mode ha --seed 31``: ``over-max``, 5 live c5.large of
max 3), and by the 1,500-seed ha campaign of 2026-12-08 without a reload (seed 2333: a node
drained above the max, terminated in the pass whose replay launched 2 first, and a crash
between the two), reduced here to one daemon and its state file. Fixed: a replay waits while
its type's live nodes, drained ones too, and its placeholders are over the max."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ledger_kit import write_intent
from loop_harness import ZONE, config_dict, make_harness
from shoal.daemon.config import parse_config
from shoal.providers.node_provider import client_token
from shoal.providers.outcomes import LaunchRequest
from shoal.providers.simulated import SimulatedProvisioner
from shoal.scaler.model import CapacityType, Offering

if TYPE_CHECKING:
    from shoal.runtime.testing import FakeClock

A = Offering("c5.xlarge", ZONE, CapacityType.ON_DEMAND)


async def test_a_replay_does_not_launch_past_max_beside_the_nodes_it_drained(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Two idle c5.xlarge run; the last process wrote the intent of a unit of 3 and died
    before its RunInstances (kill -9); the operator lowered ``max`` from 5 to 3 meanwhile.
    The restarted daemon counts 2 ready nodes and the intent's 3 placeholders: 5, over the
    max, so the planner drains the 2 real ones (placeholders cannot be drained). At the
    next pass the drained pair are idle and terminated, and the replay, which counts only
    booting and ready nodes (0) and the 3 it holds against the target of 3, makes the unit
    again first: RunInstances runs before the pass's terminations, so the cloud has 5
    c5.xlarge of a max of 3 until they end. A replay should wait while the type's live
    nodes (drained ones too) and its placeholders are over the max: the pass after, with
    the drained nodes gone, makes it within the max."""
    state = tmp_path / "state"
    cloud = SimulatedProvisioner(clusterName="test", zone=ZONE, clock=clock, boot_delay=20.0)
    old = LaunchRequest(
        offering=A,
        count=2,
        client_token=client_token("shoal-old", A),
        request_id="shoal-old",
        spot_bid=None,
        tags=cloud.worker_tags("c5.xlarge", "shoal-old"),
    )
    ready = await cloud.launch_offering(old)
    await clock.advance(600)
    await write_intent(state, "shoal-unit", A, [], at=clock.now(), count=3, node_type="c5.xlarge")

    data = config_dict(state_dir=str(state), node_types=[{"type": "c5.xlarge", "max": 3}])
    data["scaler"]["unneeded_time"] = "60s"
    h = await make_harness(clock, parse_config(data), cloud)
    live: list[int] = []
    launch = cloud.launch_offering

    async def counted(request: LaunchRequest) -> list[str]:
        ids = await launch(request)
        live.append(cloud.count("c5.xlarge"))
        return ids

    cloud.launch_offering = counted  # type: ignore[method-assign]
    await h.drive(h.controller.reconcile())
    for _ in range(6):  # 12 four-core jobs want 3 nodes
        h.set_demand(h.jobs(12, cores=4), joined=set(ready))
        await h.pass_()
        await clock.advance(60)
    assert live, "the unit was never made again"
    assert max(live) <= 3, f"live c5.xlarge after each RunInstances: {live}"
