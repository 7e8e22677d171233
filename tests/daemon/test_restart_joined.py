"""Joined stays joined across a restart (daemon/durable.py's ``joined``, the tracker's
``restore_joined``), whichever of the first Slurm read and the first cloud listing comes
first after the restart: ``Service`` starts the demand pumps and ``controller.run()``
together, so both orders happen.

The cloud here is AWS-like: ``Node.joined`` is None (EC2 cannot tell), so only the demand
source's joined nodes say which nodes joined.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from shoal.daemon.nodes import TrackedState
from shoal.scaler.model import Offering

if TYPE_CHECKING:
    from loop_harness import Harness

OFFERING = Offering("c5.xlarge", "us-west-2a", "on-demand")
ORDERS = ["read-first", "listing-first"]


def aws_like(h: Harness) -> None:
    """The provider cannot tell whether a node joined (``Node.joined`` None), as EC2."""
    real = h.provider.getProvisionedWorkers

    async def listing() -> list[Any]:
        nodes = []
        for node in await real():
            node = copy.copy(node)
            node.joined = None
            nodes.append(node)
        return nodes

    h.provider.getProvisionedWorkers = listing  # type: ignore[method-assign]


async def _one_node(h: Harness, *, joins: bool, jobs_after: int = 1) -> str:
    """One node launched for one job; the reads list it as joined (or never, ``joins``
    False), with ``jobs_after`` jobs queued (0: the job ended, the node is idle); the
    background write of what changed is done."""
    aws_like(h)
    h.set_demand(h.jobs(1))
    assert (await h.pass_()).launched == 1
    await h.clock.advance(60)
    (node,) = await h.provider.getProvisionedWorkers()
    h.set_demand(h.jobs(jobs_after), joined={node.name} if joins else set())
    await h.pass_()
    await h.settle()
    return node.name


async def _restart(h: Harness, harness_factory: Any, order: str, **config: Any) -> Harness:
    """A new daemon over the same cloud; its first read (the node NOT_RESPONDING: no node
    joined) comes before or after its first listing."""
    fresh: Harness = await harness_factory(provider=h.provider, **config)
    if order == "read-first":
        fresh.set_demand(fresh.jobs(1), joined=set())
        await fresh.drive(fresh.controller.reconcile())
    else:
        await fresh.drive(fresh.controller.reconcile())
        fresh.set_demand(fresh.jobs(1), joined=set())
    return fresh


@pytest.mark.parametrize("order", ORDERS)
async def test_a_node_that_joined_is_not_a_join_timeout_after_a_restart(
    tmp_path: Path, harness_factory: Any, order: str
) -> None:
    """Issue 17 review, 1a: it joined before the restart, and the first read after it leaves
    it out, past its launch's join timeout. It stays ready (missing), is no join timeout
    and backs off nothing; it is replaced, as unhealthy, only after unhealthy_timeout."""
    h: Harness = await harness_factory(state_dir=str(tmp_path))
    node_id = await _one_node(h, joins=True)
    await h.clock.advance(15 * 60)  # past the join timeout of its launch
    fresh = await _restart(h, harness_factory, order, state_dir=str(tmp_path))
    record = await fresh.pass_()
    assert record.terminated == ()
    tracked = fresh.controller.tracker.get(node_id)
    assert tracked is not None and tracked.state is TrackedState.READY
    assert tracked.joined_at is not None and tracked.joined_at <= fresh.clock.now() - 15 * 60
    assert OFFERING not in fresh.controller.backoff.unavailable(fresh.clock.now())

    await fresh.clock.advance(10 * 60)  # missing from every read for unhealthy_timeout
    fresh.set_demand(fresh.jobs(1), joined=set())
    record = await fresh.pass_()
    assert record.terminated == (node_id,)
    assert fresh.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="unhealthy") == 1
    assert OFFERING not in fresh.controller.backoff.unavailable(fresh.clock.now())


@pytest.mark.parametrize("order", ORDERS)
async def test_a_node_that_never_joined_still_times_out_after_a_restart(
    tmp_path: Path, harness_factory: Any, order: str
) -> None:
    """Issue 17 review, 1b: it never joined before the restart (the reads never listed it).
    A first listing before any read must not take it for joined: it is terminated as a join
    timeout at its launch's join timeout, and its offering backs off."""
    h: Harness = await harness_factory(state_dir=str(tmp_path))
    node_id = await _one_node(h, joins=False)
    fresh = await _restart(h, harness_factory, order, state_dir=str(tmp_path))
    aws_like(fresh)
    tracked = fresh.controller.tracker.get(node_id)
    assert tracked is not None and tracked.joined_at is None
    await fresh.clock.advance(15 * 60)  # 16 minutes after its launch: past the join timeout
    fresh.set_demand(fresh.jobs(1), joined=set())
    record = await fresh.pass_()
    assert node_id in record.terminated
    assert fresh.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="join-timeout") == 1
    assert OFFERING in fresh.controller.backoff.unavailable(fresh.clock.now())


@pytest.mark.parametrize("order", ORDERS)
async def test_without_state_dir_an_adopted_node_is_never_a_join_timeout(
    harness_factory: Any, order: str
) -> None:
    """Without state_dir a restart cannot know which nodes joined: a node of the first
    listing is taken as joined then, so one the first read leaves out is replaced as
    unhealthy after unhealthy_timeout from the start, never terminated at once as a join
    timeout with a false backoff of its offering."""
    h: Harness = await harness_factory()
    node_id = await _one_node(h, joins=True)
    await h.clock.advance(15 * 60)
    fresh = await _restart(h, harness_factory, order)
    assert (await fresh.pass_()).terminated == ()
    await fresh.clock.advance(5 * 60)
    fresh.set_demand(fresh.jobs(1), joined=set())
    assert (await fresh.pass_()).terminated == ()
    await fresh.clock.advance(5 * 60)
    fresh.set_demand(fresh.jobs(1), joined=set())
    assert (await fresh.pass_()).terminated == (node_id,)
    assert fresh.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="join-timeout") == 0
    assert OFFERING not in fresh.controller.backoff.unavailable(fresh.clock.now())


def removed(record: Any) -> tuple[str, ...]:
    return (*record.drained, *record.terminated)


async def test_idle_timers_wait_for_the_first_demand(harness_factory: Any) -> None:
    """Issue 17 review, 5b: before any demand arrived nothing is removed, and the unneeded
    timers do not run on the empty demand either: a node idle by the first read is removed
    unneeded_time after it, not at it."""
    h: Harness = await harness_factory()
    node_id = await _one_node(h, joins=True)
    fresh: Harness = await harness_factory(provider=h.provider)  # a restart
    await fresh.drive(fresh.controller.reconcile())
    for _ in range(30):  # 15 minutes of timer passes with no demand yet
        assert removed(await fresh.pass_()) == ()
        await fresh.clock.advance(30)
    fresh.set_demand(fresh.jobs(0), joined={node_id})  # the first read: the node is idle
    assert removed(await fresh.pass_()) == ()
    await fresh.clock.advance(9 * 60)
    fresh.set_demand(fresh.jobs(0), joined={node_id})
    assert removed(await fresh.pass_()) == ()
    await fresh.clock.advance(60)  # unneeded_time (10m) after the first read
    fresh.set_demand(fresh.jobs(0), joined={node_id})
    assert removed(await fresh.pass_()) == (node_id,)
