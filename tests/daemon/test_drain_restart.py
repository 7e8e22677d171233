"""Drains survive a restart, and stopped instances are ended: the daemon's own wiring
(``build_controller``) over the simulated cloud on a FakeClock.

A restart is what ``shoal run`` does after a crash: a new controller over the same cloud,
which knows only what the cloud's listing (and its tags) says.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.daemon.demand import DemandUpdate
from shoal.daemon.nodes import TrackedState
from shoal.providers.base import TAG_DRAINING
from shoal.providers.errors import ProviderError, RetryableError
from shoal.scaler.model import Demand, NodeState

if TYPE_CHECKING:
    from loop_harness import Harness


async def listed_tags(h: Harness) -> dict[str, dict[str, str]]:
    return {n.name: n.tags for n in await h.provider.list_instances()}


async def drained_pair(h: Harness) -> tuple[str, str]:
    """Two ready nodes; one runs a job, the other idles past ``unneeded_time`` and is drained.
    Returns (busy, drained)."""
    h.set_demand(h.jobs(8))
    await h.pass_()
    await h.clock.advance(60)
    await h.pass_()
    busy, idle = sorted(h.states())
    h.set_demand(h.running(busy))
    await h.pass_()  # idle noted
    await h.clock.advance(601)
    record = await h.pass_()
    assert record.drained == (idle,)
    return busy, idle


class TagsAtHook:
    """A drain hook that notes the instance's listed tags when it runs."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.seen: dict[str, dict[str, str]] = {}

    async def drain(self, node: str) -> None:
        self.seen[node] = dict((await listed_tags(self.h))[node])


async def test_a_drain_is_tagged_before_the_hook_runs(harness: Harness) -> None:
    """The hook finds the mark already on the instance: a crash once the hook ran leaves a
    node the next daemon knows is draining."""
    h = harness
    hook = TagsAtHook(h)
    h.controller.executor.drain_hook = hook
    busy, idle = await drained_pair(h)
    since = int(hook.seen[idle][TAG_DRAINING])
    assert h.clock.now() - 60 < since <= h.clock.now()  # the drain's start, epoch seconds
    assert (await listed_tags(h))[idle][TAG_DRAINING] == str(since)
    assert TAG_DRAINING not in (await listed_tags(h))[busy]


async def test_a_restart_keeps_a_drained_node_draining_and_never_room(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory()
    busy, idle = await drained_pair(h)

    # the daemon dies before the drained node was terminated; a new one starts
    fresh: Harness = await harness_factory(provider=h.provider)
    await fresh.controller.reconcile()
    assert fresh.states() == {busy: "ready", idle: "draining"}

    # a queued job that needs a whole node: the drained node is no room for it, so the plan
    # takes it back (an undrain), it does not wait on it
    fresh.set_demand(
        Demand(queued=fresh.jobs(1, cores=4).queued, running=fresh.running(busy).running)
    )
    record = await fresh.pass_()
    assert record.undrained == (idle,) and record.launched == 0
    assert fresh.states() == {busy: "ready", idle: "ready"}
    assert TAG_DRAINING not in (await listed_tags(fresh))[idle]  # the mark goes with the drain


async def test_a_restart_terminates_a_drained_node_once_idle(harness_factory: Any) -> None:
    h: Harness = await harness_factory()
    busy, idle = await drained_pair(h)
    fresh: Harness = await harness_factory(provider=h.provider)
    await fresh.controller.reconcile()
    fresh.set_demand(fresh.running(busy))
    # the tag alone vouches for the drain (the source reports no drained nodes): the drain
    # hook runs again first, then -- not another ten minutes of unneeded_time -- it goes
    record = await fresh.pass_()
    assert record.drained == (idle,) and record.terminated == ()
    record = await fresh.pass_()
    assert record.terminated == (idle,)
    assert [n.name for n in await fresh.provider.list_instances()] == [busy]


async def test_a_failed_tag_means_no_drain_this_pass(harness_factory: Any, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    h: Harness = await harness_factory(drain={"command": ["sh", "-c", f"echo {{node}} >> {seen}"]})
    node = await h.one_ready_node()
    h.set_demand(Demand())
    await h.pass_()
    await h.clock.advance(601)
    # refused for good (not retryable), then throttled past the retry deadline
    h.provider.fail_next(ProviderError("not allowed", code="UnauthorizedOperation"), "CreateTags")
    record = await h.pass_()
    assert record.drained == () and "not allowed" in " ".join(record.errors)
    assert not seen.exists() and h.states() == {node: "ready"}
    await h.pass_()  # the node is unneeded again from now: the plan asks again later
    await h.clock.advance(601)
    h.provider.fail_next(RetryableError("slow down", code="RequestLimitExceeded"), "CreateTags", 4)
    record = await h.pass_()  # four throttled attempts: the retry layer gives up
    assert record.drained == () and "slow down" in " ".join(record.errors)
    assert not seen.exists() and TAG_DRAINING not in (await listed_tags(h))[node]
    await h.pass_()
    await h.clock.advance(601)
    record = await h.pass_()  # the cloud answers again: tagged, then drained
    assert record.drained == (node,) and seen.read_text().split() == [node]


async def test_a_failed_drain_hook_takes_the_mark_off_again(harness_factory: Any) -> None:
    h: Harness = await harness_factory(drain={"command": ["sh", "-c", "exit 3"]})
    node = await h.one_ready_node()
    h.set_demand(Demand())
    await h.pass_()
    await h.clock.advance(601)
    record = await h.pass_()
    assert record.drained == () and "exited 3" in " ".join(record.errors)
    assert TAG_DRAINING not in (await listed_tags(h))[node]
    await h.pass_()
    assert h.states() == {node: "ready"}  # the scheduler still sends it work: room


async def test_a_node_the_scheduler_shows_drained_is_never_room(harness_factory: Any) -> None:
    """Someone else's drain (no shoal mark): the node is draining and static -- not room for
    the queued job (a launch), and neither undrained nor removed by shoal. With the mark (a
    drain shoal made), it is shoal's own draining node."""
    h: Harness = await harness_factory()
    node = await h.one_ready_node()
    queued = h.jobs(1, cores=4)
    h.controller.set_demand(DemandUpdate(queued, frozenset(), draining_nodes=frozenset({node})))
    record = await h.pass_()
    assert record.launched == 1 and record.undrained == () and record.terminated == ()
    info = {i.id: i for i in h.controller.tracker.infos()}[node]
    assert info.state is NodeState.DRAINING and info.static

    await h.provider.tag_instances([node], {TAG_DRAINING: "1"})
    h.controller.set_demand(DemandUpdate(Demand(), frozenset(), draining_nodes=frozenset({node})))
    await h.clock.advance(60)
    record = await h.pass_()
    assert node in record.terminated  # shoal's drain, idle: terminated


async def test_a_stopped_instance_is_terminated_and_is_no_capacity(harness: Harness) -> None:
    h = harness
    node = await h.one_ready_node()
    h.provider.stop_instance(node, stopping_for=30)  # an operator stops it
    assert h.provider.instance_state(node) == "stopping"
    record = await h.pass_()
    assert record.terminated == (node,)
    assert record.launched == 1  # the queued job needs a node: the stopped one is none
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="stopped") == 1
    assert h.provider.instance_state(node) == "terminated"
    tracked = h.controller.tracker.get(node)
    assert tracked is not None and tracked.state is TrackedState.TERMINATED


async def test_a_stopped_static_node_is_left_to_its_owner(harness: Harness) -> None:
    h = harness
    (static,) = h.provider.add_static_nodes("c5.xlarge")
    h.provider.stop_instance(static.name)
    h.set_demand(Demand())
    record = await h.pass_()
    assert record.terminated == ()
    assert h.provider.instance_state(static.name) == "stopped"
    assert static.name not in {i.id for i in h.controller.tracker.infos()}  # no capacity
