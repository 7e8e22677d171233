"""The control loop over the simulated cloud and a FakeClock: no sleeps, real planner."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

from shoal.daemon.demand import DemandFailure
from shoal.daemon.loop import PassOutcome
from shoal.daemon.nodes import NodeTracker, TrackedState
from shoal.providers.base import TAG_AUTOSCALED, Node
from shoal.providers.errors import ProviderError
from shoal.scaler.model import AddCause, NodeState, NodeType, Offering
from shoal.scaler.shape import Shape
from waits import wait_for_pass

if TYPE_CHECKING:
    from loop_harness import Harness


async def test_demand_launches_on_next_pass(harness: Harness) -> None:
    h = harness
    await h.controller.reconcile()
    h.set_demand(h.jobs(8, cores=1))  # c5.xlarge has 4 cores: 2 nodes
    record = await h.pass_()
    assert record.outcome is PassOutcome.OK
    assert record.launched == 2
    calls = h.launch_calls()
    assert len(calls) == 1  # one API call per node type per scale-up
    assert len(await h.provider.getProvisionedWorkers()) == 2
    assert h.sample("shoal_scale_ups_total", node_type="c5.xlarge") == 2


async def test_demand_change_wakes_the_loop_at_once_debounced(harness: Harness) -> None:
    h = harness
    task = asyncio.create_task(h.controller.run())
    await wait_for_pass(h.controller, 1)
    await h.settle()  # the loop waits for the interval or a demand change
    h.set_demand(h.jobs(4))
    await h.settle()
    await h.clock.advance(0.1)
    assert h.controller.passes == 1  # debouncing
    h.set_demand(h.jobs(8))  # a burst within the debounce window is one pass
    await h.settle()
    await h.clock.advance(0.15)
    await asyncio.wait_for(wait_for_pass(h.controller, 2), 1)
    assert h.controller.passes == 2
    assert len(h.launch_calls()) == 1
    assert len(await h.provider.getProvisionedWorkers()) == 2
    await h.settle()
    await h.clock.advance(29)  # nothing until the interval
    assert h.controller.passes == 2
    await h.clock.advance(1.5)
    await asyncio.wait_for(wait_for_pass(h.controller, 3), 1)
    h.controller.stop()
    await asyncio.wait_for(task, 1)


async def test_booting_nodes_are_capacity_not_relaunched(harness: Harness) -> None:
    h = harness
    h.set_demand(h.jobs(8))
    await h.pass_()
    for _ in range(3):
        await h.clock.advance(5)  # still booting
        record = await h.pass_()
        assert record.launched == 0
    assert len(h.launch_calls()) == 1
    assert set(h.states().values()) == {"booting"}


async def test_nodes_become_ready_when_they_join(harness: Harness) -> None:
    h = harness
    h.set_demand(h.jobs(4))
    await h.pass_()
    await h.clock.advance(60)  # booted and joined in the simulated cloud
    await h.pass_()
    assert set(h.states().values()) == {"ready"}
    (node_id,) = h.states()
    # with a node list from the demand source, that list decides; joined stays joined: a
    # read that leaves the node out marks it missing, not booting again
    h.set_demand(h.jobs(4), joined=set())
    await h.pass_()
    assert h.states() == {node_id: "ready"}
    tracked = h.controller.tracker.get(node_id)
    assert tracked is not None and tracked.missing_since == h.clock.now()
    await h.clock.advance(5)
    h.set_demand(h.jobs(4), joined={node_id})
    await h.pass_()
    assert h.states() == {node_id: "ready"}
    tracked = h.controller.tracker.get(node_id)
    assert tracked is not None and tracked.missing_since is None


async def test_capacity_error_backs_off_and_falls_back(harness_factory: Any) -> None:
    h: Harness = await harness_factory(
        node_types=[{"type": "c5.xlarge", "max": 10}, {"type": "m5.xlarge", "max": 10}]
    )
    h.provider.set_capacity("c5.xlarge", 0)
    h.set_demand(h.jobs(4, cores=1, memory=1 * 2**30))
    record = await h.pass_()
    assert record.outcome is PassOutcome.OK
    assert record.launched == 0
    offering = Offering("c5.xlarge", "us-west-2a", "on-demand")
    assert offering in h.controller.backoff.unavailable(h.clock.now())
    assert h.sample("shoal_scale_up_failures_total", node_type="c5.xlarge", reason="capacity") == 1
    assert h.sample("shoal_offerings_in_backoff") == 1
    status = h.status()
    assert status["backoff"][0]["instance_type"] == "c5.xlarge"

    record = await h.pass_()
    assert record.launched == 1
    plan = h.controller.last_plan
    assert plan is not None
    (launch,) = plan.launches
    assert launch.node_type == "m5.xlarge"
    assert launch.cause is AddCause.FALLBACK
    assert h.sample("shoal_scale_ups_total", node_type="m5.xlarge") == 1


async def test_throttling_is_retried_with_one_request_id(harness: Harness) -> None:
    h = harness
    h.provider.throttle_next(2, operation="RunInstances")
    h.set_demand(h.jobs(4))
    record = await h.pass_()
    assert record.launched == 1
    calls = h.launch_calls()
    assert len(calls) == 3
    assert len({c.kwargs["requestId"] for c in calls}) == 1
    assert len(await h.provider.getProvisionedWorkers()) == 1
    assert h.sample("shoal_scale_up_failures_total", node_type="c5.xlarge", reason="error") == 0


async def test_listing_failure_skips_the_pass(harness: Harness) -> None:
    h = harness
    h.set_demand(h.jobs(4))
    h.provider.fail_next("DescribeInstances", ProviderError("boom", code="InternalError"))
    record = await h.pass_()
    assert record.outcome is PassOutcome.SKIPPED
    assert "listing failed" in record.reason
    assert h.launch_calls() == []
    assert h.sample("shoal_passes_total", outcome="skipped") == 1
    assert (
        h.sample(
            "shoal_provider_errors_total", operation="getProvisionedWorkers", code="InternalError"
        )
        == 1
    )
    assert h.status()["last_pass"]["outcome"] == "skipped"
    record = await h.pass_()
    assert record.outcome is PassOutcome.OK and record.launched == 1


async def test_a_pass_that_raises_is_counted_and_the_loop_goes_on(harness_factory: Any) -> None:
    h0: Harness = await harness_factory()  # skips while the planner is missing
    from shoal.scaler.planner import plan as real_plan

    del h0
    failures = [RuntimeError("planner bug")]

    def flaky_plan(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_plan(*args)

    h: Harness = await harness_factory(planner=flaky_plan)
    h.set_demand(h.jobs(4))
    task = asyncio.create_task(h.controller.run())
    first = await wait_for_pass(h.controller, 1)
    assert first.outcome is PassOutcome.ERROR
    assert "planner bug" in first.reason
    await h.settle()
    await h.clock.advance(30)
    second = await asyncio.wait_for(wait_for_pass(h.controller, 2), 1)
    assert second.outcome is PassOutcome.OK and second.launched == 1
    assert h.sample("shoal_passes_total", outcome="error") == 1
    assert h.sample("shoal_passes_total", outcome="ok") == 1
    h.controller.stop()
    await asyncio.wait_for(task, 1)


async def test_scale_down_drains_then_terminates_idle_nodes_keeps_busy(
    harness_factory: Any, tmp_path: Any
) -> None:
    log = tmp_path / "drained"
    h: Harness = await harness_factory(drain={"command": ["sh", "-c", f"echo {{node}} >> {log}"]})
    h.set_demand(h.jobs(8))
    await h.pass_()
    await h.clock.advance(60)
    await h.pass_()
    busy, idle = sorted(h.states())
    assert h.states() == {busy: "ready", idle: "ready"}

    h.set_demand(h.running(busy))  # one node runs a job, the other has nothing
    await h.pass_()  # idle noted
    assert h.states()[idle] == "ready"
    await h.clock.advance(300)
    await h.pass_()
    assert h.states()[idle] == "ready"  # not yet unneeded for 10 minutes
    await h.clock.advance(301)
    record = await h.pass_()
    assert record.drained == (idle,)
    assert log.read_text().split() == [idle]
    assert h.states()[idle] == "draining"

    record = await h.pass_()
    assert record.terminated == (idle,)
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="idle") == 1
    await h.clock.advance(30)
    await h.pass_()
    assert h.states() == {busy: "ready"}
    assert h.sample("shoal_jobs_running") == 1
    assert h.sample("shoal_nodes", node_type="c5.xlarge", state="ready") == 1
    assert [n.name for n in await h.provider.getProvisionedWorkers()] == [busy]


async def test_join_timeout_terminates_and_backs_off_the_offering(harness: Harness) -> None:
    h = harness
    h.provider.never_join()
    h.set_demand(h.jobs(4))
    await h.pass_()
    (node,) = await h.provider.getProvisionedWorkers()
    node_id = node.name
    await h.clock.advance(15 * 60 + 1)
    record = await h.pass_()
    assert node_id in record.terminated
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="join-timeout") == 1
    offering = Offering("c5.xlarge", "us-west-2a", "on-demand")
    assert offering in h.controller.backoff.unavailable(h.clock.now())
    tracked = h.controller.tracker.get(node_id)
    assert tracked is not None and tracked.state is TrackedState.TERMINATED
    assert len(h.launch_calls()) == 1  # not relaunched into the offering that just failed


async def test_reconcile_adopts_tagged_nodes_and_launches_nothing_twice(
    harness: Harness, harness_factory: Any
) -> None:
    h = harness
    h.set_demand(h.jobs(12))
    await h.pass_()
    assert len(h.launch_calls()) == 1
    launched = {n.name: n.launchTime for n in await h.provider.getProvisionedWorkers()}
    assert len(launched) == 3

    # the daemon crashes; a fresh one starts over the same cloud, with the same demand
    await h.clock.advance(5)
    fresh: Harness = await harness_factory(provider=h.provider)
    await fresh.controller.reconcile()
    assert fresh.controller.ready
    infos = {n.id: n for n in fresh.controller.tracker.infos()}
    assert set(infos) == set(launched)
    assert all(n.state is NodeState.BOOTING and not n.static for n in infos.values())
    assert all(infos[k].launched_at == v.timestamp() for k, v in launched.items())
    fresh.set_demand(fresh.jobs(12))
    record = await fresh.pass_()
    assert record.launched == 0
    assert len(h.launch_calls()) == 1


async def test_stop_launches_nothing_new(harness: Harness) -> None:
    h = harness
    task = asyncio.create_task(h.controller.run())
    await wait_for_pass(h.controller, 1)
    h.set_demand(h.jobs(4))
    h.controller.stop()
    await asyncio.wait_for(task, 1)
    record = await h.pass_()  # even a pass already under way launches nothing
    assert record.outcome is PassOutcome.OK
    assert h.launch_calls() == []


def test_tracker_readiness_membership_and_types() -> None:
    launched = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def node(name: str, joined: bool | None, autoscaled: bool = True, itype: str = "c5.xlarge"):
        tags = {TAG_AUTOSCALED: "true"} if autoscaled else {}
        return Node(None, "10.0.0.1", name, launched, itype, False, tags, zone="z", joined=joined)

    c5 = NodeType("c5.xlarge/c5a.xlarge", ("c5.xlarge", "c5a.xlarge"), Shape(3600, 1, 4, 1, False))
    tracker = NodeTracker([c5])
    workers = [
        node("a", True),
        node("b", False),
        node("c", None),  # a provider that cannot tell: listed means joined
        node("s", True, autoscaled=False),
        node("x", True, itype="z9.huge"),
    ]
    tracker.observe(workers, joined=None, now=100.0)
    infos = {n.id: n for n in tracker.infos()}
    assert {k: v.state.value for k, v in infos.items()} == {
        "a": "ready",
        "b": "booting",
        "c": "ready",
        "s": "ready",
        "x": "ready",
    }
    assert infos["s"].static and not infos["a"].static
    assert infos["a"].node_type == "c5.xlarge/c5a.xlarge" and infos["x"].node_type == ""
    assert infos["a"].launched_at == launched.timestamp()
    assert infos["a"].joined_at == 100.0 and infos["b"].joined_at is None
    # the demand source's list, when given, decides; a node it leaves out that joined before
    # stays ready, missing since the first read without it
    tracker.observe(workers, joined={"b"}, now=200.0)
    tracker.observe(workers, joined={"b"}, now=300.0)
    infos = {n.id: n for n in tracker.infos()}
    assert {k for k, v in infos.items() if v.state is NodeState.READY} == {"a", "b", "c", "s", "x"}
    assert {k: v.missing_since for k, v in infos.items()} == {
        "a": 200.0,
        "b": None,
        "c": 200.0,
        "s": 200.0,
        "x": 200.0,
    }
    assert infos["b"].joined_at == 200.0 and infos["a"].joined_at == 100.0
    # draining and terminated stick; a node no longer listed is forgotten
    tracker.mark("b", TrackedState.DRAINING)
    tracker.mark("a", TrackedState.TERMINATED)
    tracker.observe(workers[:3], joined=None, now=400.0)
    assert tracker.get("c") is not None and tracker.get("c").missing_since is None  # back
    assert {n.id: n.state.value for n in tracker.infos()} == {"b": "draining", "c": "ready"}
    assert tracker.counts()[("c5.xlarge/c5a.xlarge", "terminated")] == 1


async def test_skipped_passes_are_unhealthy_but_alive(harness: Harness) -> None:
    """A cloud outage makes passes skip: /healthz fails, but the loop is alive, so the
    systemd watchdog keeps being fed (a restart would not bring the cloud back)."""
    h = harness
    interval = h.controller.settings.interval
    for _ in range(4):
        h.provider.fail_next("DescribeInstances", ProviderError("down", code="InternalError"))
        assert (await h.pass_()).outcome is PassOutcome.SKIPPED
        await h.clock.advance(interval)
    assert not h.controller.healthy()
    assert h.controller.alive()


async def test_a_wedged_pass_is_not_alive(harness: Harness) -> None:
    h = harness
    h.provider.api_latency = 10 * h.controller.settings.stuck_after  # the listing hangs
    task = asyncio.create_task(h.controller.run_pass())
    await h.settle()  # the pass starts and waits on the listing
    await h.clock.advance(h.controller.settings.stuck_after / 2)
    assert h.controller.alive()  # a long pass (say, waiting out retries) is still alive
    await h.clock.advance(h.controller.settings.stuck_after)
    assert not h.controller.alive()
    h.provider.api_latency = 0
    await h.clock.advance(10 * h.controller.settings.stuck_after)
    await task  # the listing came back: the pass finished
    await h.pass_()
    assert h.controller.alive()


async def test_a_failed_read_makes_the_demand_stale_at_once(harness: Harness) -> None:
    h = harness
    node = await h.one_ready_node()
    h.set_demand(h.running())  # nothing runs: the node is idle
    h.controller.set_demand(DemandFailure("squeue: connection refused", h.clock.now()))
    assert h.controller.demand_stale() == "demand source failed: squeue: connection refused"
    await h.clock.advance(3600)  # far past the unneeded time
    record = await h.pass_()
    assert record.drained == () and record.terminated == ()
    assert record.reason == "demand source failed: squeue: connection refused"
    assert h.states() == {node: "ready"}
    h.set_demand(h.running())  # the source reads again: the idle timer starts only now
    assert h.controller.demand_stale() is None
    await h.pass_()
    assert h.states() == {node: "ready"}
    await h.clock.advance(601)
    assert (await h.pass_()).drained == (node,)


async def test_before_any_demand_nothing_is_removed(harness_factory: Any) -> None:
    """Before any demand has arrived nothing is removed, neither an idle node nor a launch
    past its join timeout; min_nodes launches go on."""
    h: Harness = await harness_factory(node_types=[{"type": "c5.xlarge", "min": 1, "max": 3}])
    h.provider.never_join()
    record = await h.pass_()
    assert record.launched == 1  # min_nodes needs no demand
    assert record.reason == "no demand received yet: removing nothing"
    (static,) = h.provider.add_static_nodes("c5.xlarge")
    await h.clock.advance(3600)  # past the join timeout (15 m) and unneeded_time (10 m)
    record = await h.pass_()
    assert record.drained == () and record.terminated == ()
    assert record.reason == "no demand received yet: removing nothing"
    h.set_demand(h.running())
    (timed_out,) = (await h.pass_()).terminated  # the join timeout, from the first demand on
    assert timed_out != static.name


async def _joined_node(h: Harness) -> str:
    """One node launched, booted and joined (the demand source lists it), idle."""
    h.set_demand(h.jobs(1))
    await h.pass_()
    await h.clock.advance(60)
    (node_id,) = h.states()
    h.set_demand(h.running(), joined={node_id})
    await h.pass_()
    assert h.states() == {node_id: "ready"}
    return node_id


async def test_a_busy_node_missing_from_reads_is_never_terminated(harness: Harness) -> None:
    """Issue 17, bug 1: a joined node running a job drops out of the joined nodes (Slurm
    NOT_RESPONDING, a push that leaves it out) past its launch's join timeout. It is not
    a join timeout (it joined), and while a job runs on it nothing terminates it; once it
    runs nothing and has stayed missing for unhealthy_timeout, it is replaced."""
    h = harness
    node_id = await _joined_node(h)
    await h.clock.advance(15 * 60 + 1)  # past the join timeout of its launch
    for _ in range(3):  # missing from one read, then from several, the job still running
        h.set_demand(h.running(node_id), joined=set())
        record = await h.pass_()
        assert record.terminated == () and record.drained == ()
        assert h.states() == {node_id: "ready"}
        await h.clock.advance(400)  # 20 minutes in all: past unhealthy_timeout (10m)
    h.set_demand(h.running(node_id), joined=set())
    assert (await h.pass_()).terminated == ()
    (shown,) = h.status()["nodes"]["c5.xlarge"]["ready"]
    assert h.clock.now() - shown["missing_since"] == 1200  # /v1/status says since when
    # the job ends; the node is still missing, for longer than unhealthy_timeout: replaced
    h.set_demand(h.jobs(1), joined=set())
    record = await h.pass_()
    assert record.terminated == (node_id,)
    assert record.launched == 1  # its replacement, in the same pass
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="unhealthy") == 1
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="join-timeout") == 0
    offering = Offering("c5.xlarge", "us-west-2a", "on-demand")
    assert offering not in h.controller.backoff.unavailable(h.clock.now())  # it did join


async def test_a_missing_node_counts_until_unhealthy_timeout_of_continuous_absence(
    harness_factory: Any,
) -> None:
    """A joined node missing from reads is capacity (as in Cluster Autoscaler) until it
    has been missing from every read for unhealthy_timeout; a read that lists it again
    restarts the count."""
    h: Harness = await harness_factory(node_types=[{"type": "c5.xlarge", "min": 1, "max": 3}])
    node_id = await _joined_node(h)
    await h.clock.advance(15 * 60 + 1)
    for _ in range(2):  # 500 s missing, back, 500 s missing: 1000 s, never 600 s in a row
        h.set_demand(h.running(), joined=set())
        for _ in range(2):
            record = await h.pass_()
            assert record.terminated == () and record.launched == 0
            assert h.states() == {node_id: "ready"}
            await h.clock.advance(250)
        h.set_demand(h.running(), joined={node_id})
        assert (await h.pass_()).terminated == ()
    h.set_demand(h.running(), joined=set())
    await h.pass_()
    await h.clock.advance(599)
    assert (await h.pass_()).terminated == ()
    await h.clock.advance(1)
    record = await h.pass_()
    assert record.terminated == (node_id,)
    assert record.launched == 1  # min 1: replaced at once


async def test_stale_demand_terminates_nothing(harness_factory: Any) -> None:
    """Stale demand holds everything: a never-joined node past its join timeout and a
    launch the cloud never listed within the ledger's TTL are terminated only once the
    demand source vouches for the demand again."""
    h: Harness = await harness_factory(scaler={"join_timeout": "10m", "launch_ledger_ttl": "5m"})
    h.provider.never_join()
    h.set_demand(h.jobs(4))  # one node
    await h.pass_()  # t=0
    (booting,) = h.states()
    await h.clock.advance(400)
    h.provider.listing_lag = 400  # the next launch is listed only 400 s after it: past the TTL
    h.set_demand(h.jobs(8))  # two nodes
    await h.pass_()  # t=400
    (unlisted,) = set(h.states()) - {booting}
    h.controller.set_demand(DemandFailure("squeue: connection refused", h.clock.now()))
    await h.clock.advance(300)  # t=700: past the join timeout and the ledger's TTL
    for _ in range(2):
        record = await h.pass_()
        assert record.terminated == () and record.launched == 0
        assert record.reason == "demand source failed: squeue: connection refused"
        await h.clock.advance(30)
    h.set_demand(h.jobs(8))  # a fresh read (t=760): the timeouts take effect
    record = await h.pass_()
    assert set(record.terminated) == {booting, unlisted}
    assert h.controller.tracker.get(unlisted) is not None
    assert not h.controller.tracker.get(unlisted).listed  # it was the ledger's expiry


async def test_an_unlisted_launch_running_a_job_is_not_expired(harness_factory: Any) -> None:
    """The launch ledger's TTL does not end a node a running job names (the scheduler has
    it; the cloud's listing lags): it is terminated once it runs nothing."""
    h: Harness = await harness_factory(scaler={"launch_ledger_ttl": "5m"})
    h.provider.listing_lag = 10**6  # launched, never listed
    h.set_demand(h.jobs(4))
    await h.pass_()
    (node_id,) = h.states()
    await h.clock.advance(301)
    h.set_demand(h.running(node_id), joined={node_id})
    record = await h.pass_()
    assert record.terminated == () and record.launched == 0
    h.set_demand(h.running(), joined={node_id})
    record = await h.pass_()
    assert record.terminated == (node_id,)
    assert h.sample("shoal_scale_downs_total", node_type="c5.xlarge", cause="join-timeout") == 1
