"""A partition between the scheduler and every node (or a pusher that sends ``nodes: []``)
replaces no node (issue 17 review, 2): scaler.unhealthy_ok_count and
unhealthy_max_fraction, as Cluster Autoscaler's unready limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from loop_harness import Harness


async def test_every_node_missing_for_the_unhealthy_timeout_replaces_nothing(
    harness_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await harness_factory()
    h.set_demand(h.jobs(20))  # 5 four-core nodes
    assert (await h.pass_()).launched == 5
    await h.clock.advance(60)
    names = {n.name for n in await h.provider.getProvisionedWorkers()}
    h.set_demand(h.jobs(20), joined=names)
    await h.pass_()
    for _ in range(3):  # 15 minutes of reads listing no node: past unhealthy_timeout
        await h.clock.advance(300)
        h.set_demand(h.jobs(20), joined=set())
        record = await h.pass_()
        assert record.terminated == () and record.launched == 0
    held = h.status()["last_plan"]["withheld"]
    assert [(a["node"], a["cause"]) for a in held] == [(n, "unhealthy") for n in sorted(names)]
    assert all("5 of 5 nodes are missing" in a["reason"] for a in held)
    assert "event=plan_remove_withheld" in caplog.text
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="unhealthy") == 0
    # the partition heals: the nodes are listed again, nothing is held any more
    h.set_demand(h.jobs(20), joined=names)
    await h.pass_()
    assert h.status()["last_plan"]["withheld"] == []
