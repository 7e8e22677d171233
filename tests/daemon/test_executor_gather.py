"""The executor runs a plan's branches (per node type; launches, drains, undrains and
terminations within one) concurrently: one branch that raises must not lose what the others
did, or a launch that succeeded goes unbooked and the next pass launches it again."""

from __future__ import annotations

from typing import Any

import pytest
from shoal.daemon.loop import PassOutcome
from shoal.providers.outcomes import LaunchAttempt
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import (
    AddCause,
    Launch,
    NodeAction,
    Plan,
    PlannerState,
    Policy,
    RemoveCause,
    Snapshot,
)

TYPES = [{"type": "c5.xlarge", "max": 4}, {"type": "r5.large", "max": 4}]


class BrokenDrainHook:
    """A drain hook with a bug: it raises what no hook is allowed to (not a DrainError)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def drain(self, node: str) -> None:
        self.calls.append(node)
        raise RuntimeError(f"drain hook bug on {node}")


class Scripted:
    """A planner that returns the plan it is given for the next pass."""

    def __init__(self) -> None:
        self.next: Plan | None = None

    def __call__(self, snapshot: Snapshot, policy: Policy, state: PlannerState, now: float) -> Plan:
        plan, self.next = self.next, None
        return plan or Plan((), (), (), {}, (), state)


@pytest.mark.parametrize("launched_type", ["c5.xlarge", "r5.large"])
async def test_a_drain_that_raises_does_not_lose_a_launch(
    clock: FakeClock, harness_factory: Any, launched_type: str
) -> None:
    """The launch is of another type (another branch) or of the drained node's type (another
    step of the same branch)."""
    planner = Scripted()
    # what a pass launches is only in the ledger: the cloud lists it 5 minutes later
    cloud = SimulatedProvisioner("test", zone="us-west-2a", clock=clock, listing_lag=300)
    h = await harness_factory(cloud, planner, node_types=TYPES)
    h.set_demand(h.jobs(1))
    planner.next = Plan(
        (Launch("r5.large", 1, AddCause.DEMAND, "test"),), (), (), {}, (), PlannerState()
    )
    await h.pass_()
    (r5,) = [t.id for t in h.controller.tracker.all()]
    await h.clock.advance(400)  # listed and joined
    await h.pass_()
    hook = BrokenDrainHook()
    h.controller.executor.drain_hook = hook
    planner.next = Plan(
        (Launch(launched_type, 2, AddCause.DEMAND, "test"),),
        (NodeAction(r5, "r5.large", RemoveCause.IDLE, "test"),),
        (),
        {},
        (),
        PlannerState(),
    )
    events: list[Any] = []
    h.provider.subscribe(events.append)
    record = await h.pass_()
    assert hook.calls == [r5]
    assert record.outcome is PassOutcome.OK
    assert record.launched == 2
    assert any("drain hook bug" in e for e in record.errors)
    # booked in the ledger: the cloud does not list them for 5 minutes
    launched = {i for e in events if isinstance(e, LaunchAttempt) for i in e.ids}
    assert len(launched) == 2
    assert {t.id for t in h.controller.tracker.pending()} == launched
    planner.next = None
    h.set_demand(h.jobs(1))
    await h.pass_()  # nothing launched twice
    assert len(h.launch_calls()) == 2
