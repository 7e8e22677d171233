"""Gangs from the plan to the cloud: each multi-node job of a launch (``Launch.gangs``) is one
all-or-nothing request, so partial capacity never leaves part of a gang running, through a
pass and through ``Controller.launch`` (a Slurm job-level resume); the simulated cloud on a
FakeClock, the daemon's own wiring and planner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loop_harness import GIB, config_dict, make_harness
from shoal.daemon.config import parse_config
from shoal.scaler.model import AddCause, Demand, Launch, Offering, QueuedJobs
from shoal.scaler.shape import Shape

if TYPE_CHECKING:
    from shoal.runtime.testing import FakeClock

ZONES = ["us-west-2a", "us-west-2b"]


def gang(nodes: int, cores: float = 4) -> Demand:
    """One job of ``nodes`` nodes, each a whole c5.xlarge (4 cores)."""
    shape = Shape(7200, 4 * GIB, cores, GIB, False)
    return Demand(queued=(QueuedJobs(shape, 1, node_count=nodes),))


async def harness(clock: FakeClock, **provider: Any) -> Any:
    config = config_dict(provider={"kind": "simulated", "zone": None, "zones": ZONES, **provider})
    return await make_harness(clock, parse_config(config))


def zones_alive(h: Any) -> list[str]:
    return sorted(h.provider._instances[n].zone for n in h.provider.worker_names())


async def test_a_gang_too_big_for_a_zone_launches_whole_in_the_next(clock: FakeClock) -> None:
    h = await harness(clock)
    h.provider.set_capacity("c5.xlarge", 3, zone="us-west-2a")
    h.set_demand(gang(4))
    record = await h.pass_()
    assert record.launched == 4
    (launch,) = h.controller.last_plan.launches
    assert launch.gangs == (4,)
    assert zones_alive(h) == ["us-west-2b"] * 4
    calls = h.launch_calls()
    assert [c.kwargs["count"] for c in calls] == [4, 4]  # one request, the whole gang
    refused = Offering("c5.xlarge", "us-west-2a", "on-demand")
    assert refused in h.controller.backoff.unavailable(h.clock.now())


async def test_partial_capacity_everywhere_leaves_nothing_of_the_gang(clock: FakeClock) -> None:
    """Room for 3 of a 4-node gang in every zone: the pass launches nothing at all, and the
    gang's offerings are backed off; the single nodes of the same launch still launch."""
    h = await harness(clock)
    for zone in ZONES:
        h.provider.set_capacity("c5.xlarge", 3, zone=zone)
    single = QueuedJobs(Shape(7200, 4 * GIB, 4, GIB, False), 2)
    h.set_demand(Demand(queued=(*gang(4).queued, single)))
    record = await h.pass_()
    (launch,) = h.controller.last_plan.launches
    assert (launch.count, launch.gangs) == (6, (4,))
    assert record.launched == 2  # the two single nodes; nothing of the gang
    assert zones_alive(h) == ["us-west-2a"] * 2
    assert len(h.controller.backoff.unavailable(h.clock.now())) == 2


async def test_a_job_level_launch_is_all_or_nothing(clock: FakeClock) -> None:
    """``Controller.launch(Launch(count=N, gangs=(N,)))``, as a Slurm job's resume: one
    request with the caller's id; with room for 2 of 3 it starts none, then all 3 once the
    capacity is back, with the same request id (its client tokens return nothing twice)."""
    h = await harness(clock, zones=["us-west-2a"])
    h.provider.set_capacity("c5.xlarge", 2)
    (node_type,) = h.controller.policy.node_types
    job = Launch(node_type.name, 3, AddCause.DEMAND, "a 3-node job", gangs=(3,))
    report = await h.drive(h.controller.launch(node_type, job, request_id="job-7"))
    assert [(o.request_id, o.requested, o.launched) for o in report.launches] == [("job-7", 3, 0)]
    assert h.provider.worker_names() == []
    h.provider.set_capacity("c5.xlarge", None)
    offering = Offering("c5.xlarge", "us-west-2a", "on-demand")
    report = await h.drive(h.controller.launch(node_type, job, request_id="job-7", first=offering))
    assert [(o.request_id, o.launched) for o in report.launches] == [("job-7", 3)]
    assert len(h.provider.worker_names()) == 3


async def test_each_gang_of_a_launch_is_its_own_request(clock: FakeClock) -> None:
    h = await harness(clock, zones=["us-west-2a"])
    h.provider.set_capacity("c5.xlarge", 4)
    (node_type,) = h.controller.policy.node_types
    launch = Launch(node_type.name, 6, AddCause.DEMAND, "two 3-node jobs", gangs=(3, 3))
    report = await h.drive(h.controller.launch(node_type, launch, request_id="r"))
    # the first gang fits; the second finds room for 1 and starts none
    assert [(o.request_id, o.requested, o.launched) for o in report.launches] == [
        ("r", 3, 3),
        ("r-1", 3, 0),
    ]
    assert len(h.provider.worker_names()) == 3


async def test_a_node_types_placement_group_goes_with_its_launches(clock: FakeClock) -> None:
    """``node_types[].placement_group`` reaches every launch of that type (the config, the
    planner's node type, the executor, the provider's request), gangs and single nodes."""
    config = config_dict(
        node_types=[
            {"type": "c5.xlarge", "max": 10, "placement_group": "cluster"},
            {"type": "m5.xlarge", "max": 10},
        ]
    )
    h = await make_harness(clock, parse_config(config))
    (c5, m5) = h.controller.policy.node_types
    assert (c5.placement_group, m5.placement_group) == ("cluster", None)
    await h.drive(h.controller.launch(c5, Launch(c5.name, 3, AddCause.DEMAND, "g", gangs=(2,))))
    await h.drive(h.controller.launch(m5, Launch(m5.name, 1, AddCause.DEMAND, "one")))
    assert [
        (
            c.kwargs["offering"].instance_type,
            c.kwargs["count"],
            c.kwargs["min_count"],
            c.kwargs["placement_group"],
        )
        for c in h.launch_calls()
    ] == [("c5.xlarge", 2, 2, "cluster"), ("c5.xlarge", 1, 1, "cluster"), ("m5.xlarge", 1, 1, None)]


async def test_a_gang_is_one_intent_on_disk_rewritten_per_offering(clock: FakeClock) -> None:
    """Before each offering is tried the intent is written: a gang's is its own request, with
    its whole count, the offering about to be tried and (so) that offering's client token."""
    h = await harness(clock)
    h.provider.set_capacity("c5.xlarge", 3, zone="us-west-2a")
    (node_type,) = h.controller.policy.node_types
    journal = h.controller.journal
    written: list[tuple[str, int, str]] = []
    intent = journal.intent

    async def recorded(
        request_id: str, nt: Any, count: int, offering: Offering, now: float, *rest: Any
    ) -> None:
        await intent(request_id, nt, count, offering, now, *rest)
        saved = journal.intents[request_id]
        written.append((request_id, saved["count"], saved["offering"]["zone"]))

    journal.intent = recorded  # type: ignore[method-assign]
    launch = Launch(node_type.name, 5, AddCause.DEMAND, "a 4-node job and 1 more", gangs=(4,))
    report = await h.drive(h.controller.launch(node_type, launch, request_id="r"))
    assert written == [("r", 4, "us-west-2a"), ("r", 4, "us-west-2b"), ("r-1", 1, "us-west-2a")]
    assert [(o.request_id, o.launched) for o in report.launches] == [("r", 4), ("r-1", 1)]
    assert journal.intents == {}  # answered: booked in the ledger instead
    assert zones_alive(h) == ["us-west-2a"] + ["us-west-2b"] * 4
