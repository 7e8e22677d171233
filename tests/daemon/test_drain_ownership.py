"""Whose drain is it, and is it done: the daemon's own wiring (``build_controller``) over the
simulated cloud on a FakeClock (as tests/daemon/test_drain_restart.py).

* A node drained by anyone else counts toward its type's max, is left alone and is shown.
* The ``shoal:draining`` tag alone (no drain made: a crash between the tag and the hook, a
  failed hook whose untag failed too, a tag still listed after an undrain, an adopter's late
  tag) never gets a node terminated as "drained and now idle".
* A drain of shoal's that the scheduler shows with another reason is no longer shoal's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from shoal.daemon.demand import DemandUpdate
from shoal.daemon.drain import DrainError
from shoal.daemon.slurm.constants import DRAIN_REASON
from shoal.daemon.slurm.demand import SlurmDemand
from shoal.daemon.slurm.drain import DrainAdopter
from shoal.daemon.slurm.parse import SlurmNode
from shoal.daemon.slurm.source import SlurmSnapshot
from shoal.providers.base import TAG_DRAINING
from shoal.providers.errors import ProviderError
from shoal.scaler.model import Demand

if TYPE_CHECKING:
    from loop_harness import Harness


async def listed_tags(h: Harness) -> dict[str, dict[str, str]]:
    return {n.name: n.tags for n in await h.provider.list_instances()}


class Hook:
    """A drain hook that records its calls and fails while ``failing``."""

    def __init__(self) -> None:
        self.drains: list[str] = []
        self.undrains: list[str] = []
        self.failing = False

    async def drain(self, node: str) -> None:
        self.drains.append(node)
        if self.failing:
            raise DrainError("scontrol: slurm_update error: Unable to contact slurm controller")

    async def undrain(self, node: str) -> None:
        self.undrains.append(node)


async def ready_nodes(h: Harness, count: int) -> list[str]:
    h.set_demand(h.jobs(4 * count))
    await h.pass_()
    await h.clock.advance(60)
    await h.pass_()
    nodes = sorted(h.states())
    assert len(nodes) == count and set(h.states().values()) == {"ready"}
    return nodes


async def drained_pair(h: Harness) -> tuple[str, str]:
    """Two ready nodes; one runs a job, the other idles past ``unneeded_time`` and is drained
    by shoal's hook. Returns (busy, drained)."""
    busy, idle = await ready_nodes(h, 2)
    h.set_demand(h.running(busy))
    await h.pass_()
    await h.clock.advance(601)
    record = await h.pass_()
    assert record.drained == (idle,) and h.states()[idle] == "draining"
    return busy, idle


def with_hook(h: Harness) -> Hook:
    hook = Hook()
    h.controller.executor.drain_hook = hook
    h.controller.executor.undrain_hook = hook
    return hook


# -- 1. drained by others ---------------------------------------------------------------------


async def test_nodes_drained_by_others_count_toward_max_and_are_shown(
    harness_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Slurm drains each new node itself ("Kill task failed", a failing prolog); the jobs
    are requeued. The drained nodes are no room, but they are instances of the type: with
    max 2 and both drained, nothing more is launched (before: 2 more every time)."""
    caplog.set_level(logging.INFO)
    h: Harness = await harness_factory(node_types=[{"type": "c5.xlarge", "min": 0, "max": 2}])
    nodes = await ready_nodes(h, 2)
    requeued = h.jobs(8)
    h.controller.set_demand(DemandUpdate(requeued, frozenset(), draining_nodes=frozenset(nodes)))
    for _ in range(2):
        record = await h.pass_()
        assert record.launched == 0 and record.undrained == () and record.terminated == ()
        await h.clock.advance(60)
    assert len(await h.provider.list_instances()) == 2
    assert h.sample("shoal_nodes_drained_by_others") == 2
    seen = [r.getMessage() for r in caplog.records if "event=drained_by_others" in r.getMessage()]
    assert sorted(m.split()[1] for m in seen) == [f"node={n}" for n in nodes]  # once each
    assert h.sample("shoal_jobs_waiting_for_limit", reason="max-nodes") == 8

    # an admin resumes one: it is room again, and nothing counts as drained by others then
    resumed = DemandUpdate(h.jobs(4), frozenset(nodes[:1]), draining_nodes=frozenset(nodes[1:]))
    h.controller.set_demand(resumed)
    await h.pass_()
    assert h.sample("shoal_nodes_drained_by_others") == 1


# -- 2. the tag alone is no drain -------------------------------------------------------------


async def test_a_tag_left_by_a_crash_before_the_hook_is_drained_again_not_terminated(
    harness_factory: Any,
) -> None:
    """The daemon tagged the node and died before the drain hook ran: the scheduler still
    sends it work. The next daemon runs the hook first, and terminates it only after."""
    h: Harness = await harness_factory()
    (node,) = await ready_nodes(h, 1)
    await h.provider.tag_instances([node], {TAG_DRAINING: str(int(h.clock.now()))})  # then: crash

    fresh: Harness = await harness_factory(provider=h.provider)
    hook = with_hook(fresh)
    await fresh.controller.reconcile()
    fresh.set_demand(Demand())
    record = await fresh.pass_()
    assert record.terminated == () and record.drained == (node,) and hook.drains == [node]
    record = await fresh.pass_()
    assert record.terminated == (node,)


async def test_a_failed_hook_whose_untag_failed_too_is_never_terminated_as_drained(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory()
    hook = with_hook(h)
    (node,) = await ready_nodes(h, 1)
    h.set_demand(Demand())
    await h.pass_()
    await h.clock.advance(601)
    hook.failing = True
    h.provider.fail_next(ProviderError("not allowed", code="UnauthorizedOperation"), "DeleteTags")
    record = await h.pass_()
    assert record.drained == () and TAG_DRAINING in (await listed_tags(h))[node]
    for _ in range(3):  # the mark stays, the drain keeps failing: drained again, never removed
        record = await h.pass_()
        assert record.terminated == () and node in h.provider.worker_names()
    assert hook.drains == [node] * 4
    hook.failing = False
    record = await h.pass_()
    assert record.drained == (node,) and record.terminated == ()
    record = await h.pass_()
    assert record.terminated == (node,)


async def test_a_tag_still_listed_after_an_undrain_is_ignored_for_a_while(
    harness_factory: Any,
) -> None:
    """The undrain's DeleteTags failed (or EC2 still lists the tag): the node takes work
    again, so the tag does not make it draining (and, idle, terminated) in the next pass. A
    tag still there after the ledger's TTL is a drain to make again."""
    h: Harness = await harness_factory()
    hook = with_hook(h)
    busy, idle = await drained_pair(h)
    h.provider.fail_next(ProviderError("not allowed", code="UnauthorizedOperation"), "DeleteTags")
    h.set_demand(Demand(queued=h.jobs(1, cores=4).queued, running=h.running(busy).running))
    record = await h.pass_()
    assert record.undrained == (idle,) and TAG_DRAINING in (await listed_tags(h))[idle]
    h.set_demand(h.running(busy))  # the queued job went elsewhere: the node idles again
    for _ in range(3):
        record = await h.pass_()
        assert record.terminated == () and h.states()[idle] == "ready"
        await h.clock.advance(60)
    await h.clock.advance(h.controller.tracker.ledger_ttl)
    record = await h.pass_()
    assert record.drained == (idle,) and record.terminated == ()
    assert hook.drains == [idle, idle]


def slurm_node(name: str, reason: str = DRAIN_REASON, drain: bool = True) -> SlurmNode:
    flags = frozenset({"DYNAMIC_NORM", "DRAIN"} if drain else {"DYNAMIC_NORM"})
    return SlurmNode(name, "IDLE", flags, 0, reason=reason)


def slurm_read(at: float, *nodes: SlurmNode) -> SlurmSnapshot:
    return SlurmSnapshot(at, (), nodes, SlurmDemand(Demand(), frozenset()))


async def test_the_adopter_never_tags_across_an_undrain(harness_factory: Any) -> None:
    """The adopter's CreateTags took effect but its answer was lost; while it waits to try
    again, a pass sees the tag (shoal's drain now) and undrains the node for a queued job.
    The retried tag must not land after the undrain's DeleteTags."""
    h: Harness = await harness_factory()
    (node,) = await ready_nodes(h, 1)
    adopter = DrainAdopter(h.controller)
    h.provider.lose_next_response(1, "CreateTags")
    adopter.observe(slurm_read(h.clock.now(), slurm_node(node)))  # drained by shoal, no tag
    await h.settle()
    assert TAG_DRAINING in (await listed_tags(h))[node]  # the lost answer's effect
    ours = frozenset({node})
    h.controller.set_demand(
        DemandUpdate(h.jobs(1, cores=4), frozenset(), draining_nodes=ours, own_drains=ours)
    )
    record = await h.pass_()
    assert record.undrained == (node,)
    await h.clock.advance(10)
    assert TAG_DRAINING not in (await listed_tags(h))[node]
    await adopter.close()


async def test_the_adopter_skips_a_read_from_before_an_undrain(harness_factory: Any) -> None:
    h: Harness = await harness_factory()
    busy, idle = await drained_pair(h)
    h.set_demand(Demand(queued=h.jobs(1, cores=4).queued, running=h.running(busy).running))
    read_before = h.clock.now()  # Slurm read while the node was still drained
    await h.clock.advance(1)
    record = await h.pass_()
    assert record.undrained == (idle,)
    await h.pass_()  # the listing shows the tag gone
    adopter = DrainAdopter(h.controller)
    tags_before = [c for c in h.provider.calls if c.operation == "CreateTags"]
    adopter.observe(slurm_read(read_before, slurm_node(idle)))
    await h.settle()
    assert TAG_DRAINING not in (await listed_tags(h))[idle]
    assert [c for c in h.provider.calls if c.operation == "CreateTags"] == tags_before
    # a read made after the undrain that shows shoal's drain (the tag lost) is adopted
    await h.clock.advance(5)
    adopter.observe(slurm_read(h.clock.now(), slurm_node(idle)))
    await h.settle()
    assert TAG_DRAINING in (await listed_tags(h))[idle]
    await adopter.close()


async def test_the_adopter_adopts_a_drain_the_tracker_already_shows_static(
    harness_factory: Any,
) -> None:
    """A pass saw the node drained (reason shoal's) with no tag: draining and static. The
    adopter still tags it, and it becomes shoal's draining node."""
    h: Harness = await harness_factory()
    (node,) = await ready_nodes(h, 1)
    ours = frozenset({node})
    update = DemandUpdate(Demand(), frozenset(), draining_nodes=ours, own_drains=ours)
    h.controller.set_demand(update)
    await h.pass_()
    tracked = h.controller.tracker.get(node)
    assert tracked is not None and tracked.static
    assert h.sample("shoal_nodes_drained_by_others") == 0  # Slurm shows shoal's reason
    adopter = DrainAdopter(h.controller)
    adopter.observe(slurm_read(h.clock.now(), slurm_node(node)))
    await h.settle()
    assert TAG_DRAINING in (await listed_tags(h))[node]
    record = await h.pass_()
    assert record.terminated == (node,)  # shoal's drain, confirmed by Slurm, idle
    await adopter.close()


# -- 3. someone else's drain over shoal's -----------------------------------------------------


async def test_an_admin_drain_over_shoals_is_not_shoals(harness_factory: Any) -> None:
    """Shoal drained the node; an admin drains it again, "bad GPU". The tag is still there,
    but the node is the admin's now: neither undrained for demand nor terminated idle."""
    h: Harness = await harness_factory()
    hook = with_hook(h)
    busy, idle = await drained_pair(h)
    drained = frozenset({idle})
    queued = Demand(queued=h.jobs(1, cores=4).queued, running=h.running(busy).running)
    h.controller.set_demand(
        DemandUpdate(queued, frozenset({busy}), draining_nodes=drained, own_drains=frozenset())
    )
    record = await h.pass_()
    assert record.undrained == () and record.launched == 1 and hook.undrains == []
    h.controller.set_demand(
        DemandUpdate(
            h.running(busy), frozenset({busy}), draining_nodes=drained, own_drains=frozenset()
        )
    )
    await h.clock.advance(60)
    record = await h.pass_()
    assert idle not in record.terminated and idle in h.provider.worker_names()
    assert h.sample("shoal_nodes_drained_by_others") == 1
    # Slurm shows shoal's own reason again: shoal's drain, terminated once idle
    h.controller.set_demand(
        DemandUpdate(h.running(busy), frozenset({busy}), draining_nodes=drained, own_drains=drained)
    )
    record = await h.pass_()
    assert idle in record.terminated


# -- 4. an admin's resume over shoal's drain --------------------------------------------------


async def test_an_admin_resume_drops_shoals_confirmed_drain(
    harness_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Shoal drained the node (its hook succeeded: confirmed) and Slurm showed the drain; an
    admin then resumes it (``scontrol update state=resume``): "don't drain this node". The
    next read shows it neither drained nor shoal's: the drain and its tag are dropped (it is
    ready, room again), not kept from memory and the node terminated as drained and idle."""
    caplog.set_level(logging.INFO)
    h: Harness = await harness_factory()
    with_hook(h)
    busy, idle = await drained_pair(h)
    adopter = DrainAdopter(h.controller)
    adopter.observe(slurm_read(h.clock.now(), slurm_node(idle)))  # Slurm shows shoal's drain
    await h.settle()
    assert TAG_DRAINING in (await listed_tags(h))[idle]
    await h.clock.advance(20)
    adopter.observe(slurm_read(h.clock.now(), slurm_node(idle, reason="", drain=False)))
    await h.settle()
    assert TAG_DRAINING not in (await listed_tags(h))[idle]
    h.controller.set_demand(
        DemandUpdate(
            h.running(busy),
            frozenset({busy, idle}),
            draining_nodes=frozenset(),
            own_drains=frozenset(),
        )
    )
    record = await h.pass_()
    assert idle not in record.terminated and h.states()[idle] == "ready"
    assert any(f"event=drain_dropped node={idle}" in r.getMessage() for r in caplog.records)
    await adopter.close()


async def test_a_read_from_before_shoals_new_drain_does_not_drop_it(
    harness_factory: Any,
) -> None:
    """Slurm showed shoal's drain; shoal undrained the node for a job, then drained it again.
    A read made between the undrain and the new drain shows the node undrained: that is no
    admin's resume (the read that showed a drain came before the undrain), the drain stays."""
    h: Harness = await harness_factory()
    with_hook(h)
    busy, idle = await drained_pair(h)
    adopter = DrainAdopter(h.controller)
    adopter.observe(slurm_read(h.clock.now(), slurm_node(idle)))
    h.set_demand(Demand(queued=h.jobs(1, cores=4).queued, running=h.running(busy).running))
    await h.clock.advance(1)
    assert (await h.pass_()).undrained == (idle,)
    between = h.clock.now() + 1  # Slurm read then, undrained
    h.set_demand(h.running(busy))
    await h.pass_()
    await h.clock.advance(601)
    assert (await h.pass_()).drained == (idle,)
    adopter.observe(slurm_read(between, slurm_node(idle, reason="", drain=False)))
    await h.settle()
    assert TAG_DRAINING in (await listed_tags(h))[idle] and h.states()[idle] == "draining"
    await adopter.close()
