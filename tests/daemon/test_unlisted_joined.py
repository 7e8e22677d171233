"""A joined node that drops out of one EC2 listing (DescribeInstances is eventually
consistent: ``SimulatedProvisioner.unlist``) while the scheduler's read leaves it out too
(NOT_RESPONDING for a few seconds, a push that omits it) is still a node that joined: when
the listing shows it again it is missing, replaced only after ``unhealthy_timeout`` as
unhealthy, never terminated at once as a join timeout with a false backoff of its offering.
Across a restart during the omission as well (the durable store keeps what the tracker
remembers of it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from shoal.daemon.nodes import TrackedState
from shoal.scaler.model import Offering
from test_restart_joined import _one_node, aws_like

if TYPE_CHECKING:
    from loop_harness import Harness

OFFERING = Offering("c5.xlarge", "us-west-2a", "on-demand")


async def _joined_node(h: Harness, *, joins: bool = True) -> str:
    """One node launched for one job, read as joined (or never, ``joins`` False); the job
    then ends, so the node is idle."""
    return await _one_node(h, joins=joins, jobs_after=0)


@pytest.mark.parametrize("restart", [False, True], ids=["same-daemon", "restart-while-unlisted"])
async def test_a_joined_node_unlisted_and_unread_at_once_is_no_join_timeout(
    tmp_path: Path, harness_factory: Any, restart: bool
) -> None:
    h: Harness = await harness_factory(state_dir=str(tmp_path), scaler={"unneeded_time": "1h"})
    node_id = await _joined_node(h)
    joined_at = h.controller.tracker.get(node_id).joined_at  # type: ignore[union-attr]
    await h.clock.advance(15 * 60)  # past its launch's join timeout
    h.provider.unlist(node_id, 120)
    h.set_demand(h.jobs(0), joined=set())  # the read leaves it out as well
    assert (await h.pass_()).terminated == ()
    assert h.controller.tracker.get(node_id) is None  # not listed: no capacity
    await h.settle()
    if restart:
        h = await harness_factory(
            provider=h.provider, state_dir=str(tmp_path), scaler={"unneeded_time": "1h"}
        )
        aws_like(h)
        await h.drive(h.controller.reconcile())
    await h.clock.advance(120)  # listed again; the read still leaves it out
    h.set_demand(h.jobs(0), joined=set())
    record = await h.pass_()
    assert record.terminated == ()
    tracked = h.controller.tracker.get(node_id)
    assert tracked is not None and tracked.state is TrackedState.READY
    assert tracked.joined_at == joined_at
    assert OFFERING not in h.controller.backoff.unavailable(h.clock.now())
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="join-timeout") == 0

    await h.clock.advance(10 * 60)  # missing from every read for unhealthy_timeout
    h.set_demand(h.jobs(0), joined=set())
    assert (await h.pass_()).terminated == (node_id,)
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="unhealthy") == 1
    assert OFFERING not in h.controller.backoff.unavailable(h.clock.now())


async def test_a_node_that_never_joined_and_was_unlisted_still_times_out(
    harness_factory: Any,
) -> None:
    """What is remembered of an unlisted node is that it joined: one that never did is
    terminated as a join timeout when the listing shows it again past its timeout."""
    h: Harness = await harness_factory()
    node_id = await _joined_node(h, joins=False)
    h.provider.unlist(node_id, 120)
    h.set_demand(h.jobs(0), joined=set())
    await h.pass_()
    await h.clock.advance(15 * 60)
    h.set_demand(h.jobs(0), joined=set())
    assert node_id in (await h.pass_()).terminated
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="join-timeout") == 1
    assert OFFERING in h.controller.backoff.unavailable(h.clock.now())


async def test_a_node_read_joined_before_the_listing_shows_it_is_no_join_timeout(
    harness_factory: Any,
) -> None:
    """EC2's listing lags a launch by minutes while the scheduler already shows the node
    joined; then the reads leave it out (NOT_RESPONDING) past its join timeout. It joined:
    missing once listed, replaced only as unhealthy (chaos seed 102, ha: the ledger entry
    took no join, so it was timed out and its offering backed off)."""
    h: Harness = await harness_factory(scaler={"unneeded_time": "1h"})
    aws_like(h)
    h.provider.listing_lag = 300.0
    h.set_demand(h.jobs(1))
    assert (await h.pass_()).launched == 1
    (node_id,) = [t.id for t in h.controller.tracker.pending()]
    await h.clock.advance(60)
    h.set_demand(h.jobs(0), joined={node_id})  # joined; the listing does not show it yet
    await h.pass_()
    assert await h.provider.getProvisionedWorkers() == []
    await h.clock.advance(15 * 60)  # listed now, past the join timeout; the reads leave it out
    h.set_demand(h.jobs(0), joined=set())
    assert (await h.pass_()).terminated == ()
    tracked = h.controller.tracker.get(node_id)
    assert tracked is not None and tracked.state is TrackedState.READY
    assert OFFERING not in h.controller.backoff.unavailable(h.clock.now())
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="join-timeout") == 0
