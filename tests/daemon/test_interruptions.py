"""Spot interruptions end to end on moto: the shipped CloudFormation template creates the queue
and the EventBridge rules, events put on the bus reach the queue through those rules, and the
daemon's interruption handler (built by the ``interruptions`` integration from the config)
reads them and acts on the controller that ``build_controller`` wires over the AWS provider.

Time is a FakeClock (the controller's passes, the backoff); the queue is short-polled
(``WaitTimeSeconds`` 0: moto would hold a long poll for real seconds) and each test calls
``poll_once`` itself, so nothing waits for a background loop.
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import configs
import pytest
from aiobotocore.session import get_session
from aiohttp import web
from moto_fixtures import Ec2Behaviour
from shoal.daemon.config import ConfigError, ShoalConfig, parse_config
from shoal.daemon.demand import DemandUpdate
from shoal.daemon.drain import CommandDrainHook, WebhookDrainHook
from shoal.daemon.integration import integration_kinds
from shoal.daemon.interruptions import INTERRUPTIONS, InterruptionHandler
from shoal.daemon.loop import Controller
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.nodes import TrackedState
from shoal.daemon.service import build_controller, build_provider
from shoal.daemon.slurm.client import SlurmClient, SlurmCommands
from shoal.daemon.slurm.drain import SlurmDrainHook, drained_by_shoal
from shoal.daemon.slurm.parse import SlurmNode
from shoal.providers.aws import AWSProvisioner
from shoal.providers.aws_interruptions import QueueMessage
from shoal.providers.base import TAG_DRAINING
from shoal.providers.errors import AuthError, RetryableError
from shoal.runtime.testing import FakeClock, InlineExecutor
from shoal.scaler.model import CapacityType, Demand, Offering, QueuedJobs, RunningJob
from shoal.scaler.shape import Shape

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "interruption-queue.yaml"
REGION = "us-east-1"
ZONE = "us-east-1a"
OTHER_ZONE = "us-east-1b"  # where a replacement goes while ZONE's spot offering backs off
CLUSTER = "spot-loop"
QUEUE = f"shoal-{CLUSTER}-interruptions"
GIB = 2**30
NOTICE = 120.0  # EC2's spot interruption warning comes two minutes before
WHOLE_NODE = Shape(7200, GIB, 4, GIB, True)  # one job fills a 4-core c5.xlarge
# moto's CloudFormation skips the queue policy with this warning (tests/test_interruption_queue.py
# checks the policy on its own)
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS..SQS..QueuePolicy:UserWarning")


class RecordingDrainHook:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    async def drain(self, node: str, reason: str | None = None) -> None:
        self.calls.append((node, reason))


@dataclass
class Spot:
    clock: FakeClock
    config: ShoalConfig
    provider: AWSProvisioner
    controller: Controller
    handler: InterruptionHandler
    sqs: Any
    events: Any
    queue_url: str
    hook: RecordingDrainHook = field(default_factory=RecordingDrainHook)

    async def run(self, awaitable: Any) -> Any:
        return await self.clock.run_until(awaitable)

    async def pass_(self, demand: Demand | None = None) -> Any:
        if demand is not None:
            self.controller.set_demand(DemandUpdate(demand))
        return await self.run(self.controller.run_pass())

    async def put(self, source: str, detail_type: str, detail: dict[str, Any]) -> None:
        """An event on the default bus; the template's rules route it to the queue."""
        answer = await self.events.put_events(
            Entries=[{"Source": source, "DetailType": detail_type, "Detail": json.dumps(detail)}]
        )
        assert answer["FailedEntryCount"] == 0

    async def warn(self, instance_id: str) -> None:
        detail = {"instance-id": instance_id, "instance-action": "terminate"}
        await self.put("aws.ec2", "EC2 Spot Instance Interruption Warning", detail)

    async def poll(self) -> int:
        return int(await self.run(self.handler.poll_once()))

    async def in_queue(self) -> int:
        """Messages the queue holds, visible or in flight."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        answer = await self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)
        return sum(int(answer["Attributes"][n]) for n in names)

    def sample(self, name: str, **labels: str) -> float:
        value = self.controller.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def one_busy_spot_node(self) -> str:
        """One spot node, joined, running one job that fills it; nothing queued."""
        await self.pass_(Demand(queued=(QueuedJobs(WHOLE_NODE, 1),)))
        (node,) = [t.id for t in self.controller.tracker.all()]
        running = Demand(running=(RunningJob(WHOLE_NODE, node, elapsed=600),))
        self.controller.set_demand(DemandUpdate(running, joined_nodes=frozenset({node})))
        await self.pass_()
        assert self.controller.tracker.get(node).state is TrackedState.READY  # type: ignore[union-attr]
        return node


def config(url: str) -> ShoalConfig:
    provider = configs.aws_provider(url, zones=[ZONE, OTHER_ZONE], interruption_queue=QUEUE)
    scaler = {
        "interval": "10m",  # a pass within the notice comes from the wake, not the timer
        "debounce": "0s",
        "beta_inertia": 0.0,
        "unneeded_time": "1h",
        "join_timeout": "15m",
        "retry": {"attempts": 3, "initial": "1s", "max": "2s", "deadline": "30s"},
    }
    return parse_config(
        configs.config(
            cluster_name=CLUSTER,
            provider=provider,
            node_types=[{"type": "c5.xlarge:0.5", "max": 4}],
            scaler=scaler,
            demand={"reports": ["queued", "running"]},
        )
    )


async def deploy_template(url: str) -> str:
    """The shipped template on moto's CloudFormation; the queue's URL at moto."""
    session = get_session()
    async with session.create_client("cloudformation", region_name=REGION, endpoint_url=url) as cfn:
        await cfn.create_stack(
            StackName=f"shoal-{CLUSTER}",
            TemplateBody=TEMPLATE.read_text(),
            Parameters=[{"ParameterKey": "ClusterName", "ParameterValue": CLUSTER}],
        )
    async with session.create_client("sqs", region_name=REGION, endpoint_url=url) as sqs:
        return str((await sqs.get_queue_url(QueueName=QUEUE))["QueueUrl"])


@pytest.fixture
async def spot(moto_url: str, ec2_behaviour: Ec2Behaviour) -> AsyncIterator[Spot]:
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    clock = FakeClock()
    ec2_behaviour.now = clock.now
    queue_url = await deploy_template(moto_url)
    cfg = config(moto_url)
    provider = build_provider(cfg, clock)
    assert isinstance(provider, AWSProvisioner)
    session = get_session()
    async with (
        session.create_client("sqs", region_name=REGION, endpoint_url=moto_url) as sqs,
        session.create_client("events", region_name=REGION, endpoint_url=moto_url) as events,
    ):
        try:
            metrics = ShoalMetrics()
            controller = await clock.run_until(
                build_controller(cfg, provider, clock, metrics=metrics)
            )
            await clock.run_until(controller.reconcile())
            assert INTERRUPTIONS in integration_kinds(cfg)
            integration = INTERRUPTIONS.build(cfg, clock, metrics, controller)
            handler = integration.handler
            handler.queue.wait_time = 0  # a short poll: moto holds a long one for real seconds
            s = Spot(clock, cfg, provider, controller, handler, sqs, events, queue_url)
            controller.executor.drain_hook = s.hook
            yield s
        finally:
            await provider.close()


async def test_a_warned_spot_node_is_drained_replaced_within_the_notice_and_backed_off(
    spot: Spot,
) -> None:
    node = await spot.one_busy_spot_node()
    offering = Offering("c5.xlarge", ZONE, CapacityType.SPOT)
    passes: asyncio.Queue[Any] = asyncio.Queue()
    spot.controller.on_pass.append(passes.put_nowait)
    run = asyncio.ensure_future(spot.controller.run())  # the loop, as the service runs it
    try:
        await asyncio.wait_for(passes.get(), 30)  # its first pass; then it waits 10 minutes
        warned_at = spot.clock.now()
        await spot.warn(node)
        # the fake clock stands still from here: a pass now can only be the notice's wake
        assert await spot.handler.poll_once() == 1
        # drained at once, with the interruption's reason, and marked for a restart
        assert spot.hook.calls == [(node, "spot interruption")]
        tracked = spot.controller.tracker.get(node)
        assert tracked is not None and tracked.state is TrackedState.DRAINING
        assert tracked.drain_confirmed
        listed = {n.name: n for n in await spot.provider.list_instances()}
        assert TAG_DRAINING in listed[node].tags  # a restarted daemon adopts it as draining
        # its offering backed off, as Karpenter marks it unavailable
        assert offering in spot.controller.backoff.unavailable(spot.clock.now())
        # the message is gone from the queue, and counted
        assert await spot.in_queue() == 0
        assert spot.sample("shoal_interruptions_total", kind="spot_interruption") == 1
        assert spot.sample("shoal_interruption_messages_total", outcome="handled") == 1
        # the woken pass (one woken by the set-up's demand may come first, planned before
        # the notice): the first to launch
        while (record := await asyncio.wait_for(passes.get(), 30)).launched == 0:
            pass
    finally:
        spot.controller.stop()
        await asyncio.wait_for(run, 30)
    assert spot.clock.now() == warned_at  # no timer moved: the notice woke the loop
    assert record.launched == 1
    plan = spot.controller.last_plan
    assert plan is not None
    (launch,) = plan.launches
    assert launch.count == 1  # the job running on the warned node needs a node again
    assert not plan.undrains  # the warned node is never taken back as room
    (replacement,) = [t for t in spot.controller.tracker.all() if t.id != node]
    assert replacement.node.launchTime.timestamp() - warned_at < NOTICE
    assert replacement.offering() == Offering("c5.xlarge", OTHER_ZONE, CapacityType.SPOT)


async def test_a_warned_node_is_no_room_for_queued_jobs(spot: Spot) -> None:
    """Push setup: an idle joined node would take the next queued job; once warned it counts
    as no room, so that job gets a new node."""
    await spot.pass_(Demand(queued=(QueuedJobs(WHOLE_NODE, 1),)))
    (node,) = [t.id for t in spot.controller.tracker.all()]
    spot.controller.set_demand(DemandUpdate(Demand(), joined_nodes=frozenset({node})))
    await spot.pass_()
    record = await spot.pass_(Demand(queued=(QueuedJobs(WHOLE_NODE, 1),)))
    assert record.launched == 0  # before the warning, the idle node is the job's room
    await spot.warn(node)
    assert await spot.poll() == 1
    record = await spot.pass_()
    assert record.launched == 1
    plan = spot.controller.last_plan
    assert plan is not None and not plan.undrains and not plan.drains


async def test_a_malformed_message_is_deleted_and_counted(spot: Spot) -> None:
    await spot.sqs.send_message(QueueUrl=spot.queue_url, MessageBody="{not json")
    await spot.sqs.send_message(QueueUrl=spot.queue_url, MessageBody=json.dumps({"detail": 1}))
    assert await spot.poll() == 2
    assert await spot.in_queue() == 0
    assert spot.sample("shoal_interruption_messages_total", outcome="malformed") == 2
    assert spot.hook.calls == []


async def test_a_notice_for_another_clusters_instance_is_ignored(spot: Spot) -> None:
    node = await spot.one_busy_spot_node()
    async with get_session().create_client(
        "ec2", region_name=REGION, endpoint_url=spot.provider.endpoint_url
    ) as ec2:  # an instance of no cluster of ours, in the same account
        other = (await ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1))[
            "Instances"
        ][0]["InstanceId"]
    await spot.warn(other)
    assert await spot.poll() == 1
    assert await spot.in_queue() == 0  # deleted: nothing to do with it, ever
    assert spot.hook.calls == []
    assert spot.controller.backoff.unavailable(spot.clock.now()) == {}
    assert spot.sample("shoal_interruption_messages_total", outcome="ignored") == 1
    assert spot.sample("shoal_interruptions_total", kind="spot_interruption") == 0
    assert spot.controller.tracker.interrupted() == frozenset()
    assert spot.controller.tracker.get(node).state is TrackedState.READY  # type: ignore[union-attr]


async def test_a_crash_before_delete_redelivers_and_handling_again_changes_nothing(
    spot: Spot,
) -> None:
    node = await spot.one_busy_spot_node()
    # re-delivery at once instead of after the visibility timeout (30 s by default)
    await spot.sqs.set_queue_attributes(
        QueueUrl=spot.queue_url, Attributes={"VisibilityTimeout": "0"}
    )
    await spot.warn(node)

    async def crash(message: Any) -> None:
        raise RuntimeError("the daemon died before DeleteMessage")

    delete = spot.handler.queue.delete
    spot.handler.queue.delete = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await spot.poll()
    spot.handler.queue.delete = delete  # type: ignore[method-assign]
    assert await spot.in_queue() == 1  # still there
    entry = spot.controller.backoff.entries[Offering("c5.xlarge", ZONE, CapacityType.SPOT)]
    assert await spot.poll() == 1  # delivered again, handled again, deleted this time
    assert await spot.in_queue() == 0
    assert spot.hook.calls == [(node, "spot interruption")]  # drained once
    again = spot.controller.backoff.entries[Offering("c5.xlarge", ZONE, CapacityType.SPOT)]
    assert again == entry  # not backed off twice for one interruption
    assert spot.sample("shoal_interruptions_total", kind="spot_interruption") == 2
    assert spot.controller.tracker.interrupted() == frozenset({node})


async def test_a_state_change_to_shutting_down_retires_the_shared_listing(spot: Spot) -> None:
    node = await spot.one_busy_spot_node()
    await spot.run(spot.controller.list_workers(max_age=3600))
    assert spot.controller._listing is not None
    await spot.put(
        "aws.ec2",
        "EC2 Instance State-change Notification",
        {"instance-id": node, "state": "shutting-down"},
    )
    assert await spot.poll() == 1
    assert spot.controller._listing is None
    assert spot.sample("shoal_interruptions_total", kind="state_change") == 1


async def test_a_rebalance_recommendation_is_counted_and_drains_nothing(spot: Spot) -> None:
    node = await spot.one_busy_spot_node()
    await spot.put("aws.ec2", "EC2 Instance Rebalance Recommendation", {"instance-id": node})
    assert await spot.poll() == 1
    assert spot.hook.calls == []
    assert spot.sample("shoal_interruptions_total", kind="rebalance") == 1
    assert spot.controller.tracker.interrupted() == frozenset()


async def scheduled_change(spot: Spot, node: str) -> None:
    detail = {
        "service": "EC2",
        "eventTypeCategory": "scheduledChange",
        "eventTypeCode": "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED",
        "affectedEntities": [{"entityValue": node}],
    }
    await spot.put("aws.health", "AWS Health Event", detail)
    assert await spot.poll() == 1


async def test_a_scheduled_change_drains_without_backing_off(spot: Spot) -> None:
    node = await spot.one_busy_spot_node()
    await scheduled_change(spot, node)
    assert spot.hook.calls == [(node, "scheduled change")]
    assert spot.controller.backoff.unavailable(spot.clock.now()) == {}


async def test_with_slurm_the_warned_node_is_drained_by_scontrol_with_the_reason(
    spot: Spot, tmp_path: Path
) -> None:
    """The Slurm drain hook over the real client, its scontrol a script that records argv."""
    log = tmp_path / "scontrol.log"
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IXUSR)
    spot.controller.executor.drain_hook = SlurmDrainHook(
        SlurmClient(SlurmCommands(scontrol=str(scontrol)))
    )
    node = await spot.one_busy_spot_node()
    await spot.warn(node)
    assert await spot.poll() == 1
    assert log.read_text().splitlines() == [
        f"update NodeName={node} State=DRAIN Reason=spot interruption"
    ]
    # and Slurm's answer is read back as shoal's drain, not someone else's
    drained = SlurmNode(node, "IDLE", frozenset({"DRAIN"}), 0, reason="spot interruption")
    assert drained_by_shoal(drained)


def test_the_queue_is_an_aws_setting_and_off_by_default(moto_url: str) -> None:
    assert INTERRUPTIONS in integration_kinds(config(moto_url))
    plain = config(moto_url).model_dump()
    plain["provider"].pop("interruption_queue")
    assert parse_config(plain).provider.interruption_queue is None  # type: ignore[union-attr]
    assert INTERRUPTIONS not in integration_kinds(parse_config(plain))
    simulated = {"kind": "simulated", "zone": "sim-1a", "interruption_queue": QUEUE}
    with pytest.raises(ConfigError, match="interruption_queue"):
        parse_config({**plain, "provider": simulated})


class FlakyQueue:
    """A queue whose first receive fails past the retry layer (an SQS outage), then holds
    one malformed message."""

    queue = "flaky"

    def __init__(self) -> None:
        self.receives = 0
        self.deleted: list[QueueMessage] = []

    async def receive(self) -> list[QueueMessage]:
        self.receives += 1
        if self.receives == 1:
            raise RetryableError("receive_message: ServiceUnavailable", code="ServiceUnavailable")
        if self.receives == 2:
            return [QueueMessage("m", "r", "{not json")]
        await asyncio.Event().wait()  # a long poll that never ends
        return []

    async def delete(self, message: QueueMessage) -> None:
        self.deleted.append(message)


async def test_the_reader_survives_a_queue_outage_and_polls_again(spot: Spot) -> None:
    queue = FlakyQueue()
    handler = InterruptionHandler(spot.controller, queue, spot.handler.metrics, error_pause=10)  # type: ignore[arg-type]
    task = asyncio.ensure_future(handler.run())
    try:
        await spot.clock.settle()
        assert queue.receives == 1  # failed; waits 10 s on the clock
        await spot.clock.advance(9)
        assert queue.receives == 1
        await spot.clock.advance(1)
        assert queue.receives == 3  # polled again, handled the message, polls on
        assert [m.receipt_handle for m in queue.deleted] == ["r"]
        assert spot.sample("shoal_interruption_messages_total", outcome="malformed") == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_command_or_webhook_drain_hook_gets_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "drained"
    hook = CommandDrainHook(["sh", "-c", f'echo "$0|$1" >> {out}', "{node}", "{reason}"])
    await hook.drain("i-1", "spot interruption")
    await hook.drain("i-2")  # a plan's drain: shoal's own reason
    assert out.read_text().splitlines() == ["i-1|spot interruption", "i-2|shoal"]
    bodies: list[Any] = []

    async def record(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/drain", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        webhook = WebhookDrainHook(f"http://127.0.0.1:{port}/drain")
        await webhook.drain("i-1", "spot interruption")
        await webhook.drain("i-2")
    finally:
        await runner.cleanup()
    assert bodies == [{"node": "i-1", "reason": "spot interruption"}, {"node": "i-2"}]


async def test_a_drain_that_cannot_be_marked_leaves_the_message_for_redelivery(
    spot: Spot, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await spot.one_busy_spot_node()
    await spot.sqs.set_queue_attributes(
        QueueUrl=spot.queue_url, Attributes={"VisibilityTimeout": "0"}
    )
    await spot.warn(node)

    async def refused(ids: Any, tags: Any) -> None:
        raise AuthError("CreateTags: UnauthorizedOperation", code="UnauthorizedOperation")

    tag = spot.provider.tag_instances
    monkeypatch.setattr(spot.provider, "tag_instances", refused)
    assert await spot.poll() == 1
    assert spot.sample("shoal_interruption_messages_total", outcome="failed") == 1
    assert await spot.in_queue() == 1  # not deleted: the drain is owed
    assert spot.hook.calls == []  # no mark, no drain
    assert spot.controller.tracker.interrupted() == frozenset({node})  # but no room already
    monkeypatch.setattr(spot.provider, "tag_instances", tag)
    assert await spot.poll() == 1
    assert spot.hook.calls == [(node, "spot interruption")]
    assert await spot.in_queue() == 0


async def test_a_node_drained_for_a_scheduled_change_is_terminated_once_its_jobs_end(
    spot: Spot,
) -> None:
    """A retirement is scheduled days or weeks ahead: the cloud does not take the node
    within minutes as it does a spot one, so shoal must not leave it running, drained and
    idle, until then."""
    node = await spot.one_busy_spot_node()
    await scheduled_change(spot, node)
    await spot.pass_()
    # the job still runs on the drained node: it is not removed under it
    assert node not in {a.node_id for a in spot.controller.last_plan.terminations}  # type: ignore[union-attr]
    everyone = frozenset(t.id for t in spot.controller.tracker.all())  # a replacement too
    idle = DemandUpdate(Demand(), joined_nodes=everyone)
    spot.controller.set_demand(idle)  # the job ended
    await spot.pass_()
    await spot.clock.advance(2 * 3600)  # past unneeded_time, long before any retirement
    spot.controller.set_demand(idle)
    await spot.pass_()
    removed = {a.node_id for a in spot.controller.last_plan.terminations}  # type: ignore[union-attr]
    tracked = spot.controller.tracker.get(node)
    assert node in removed or tracked is None or tracked.state is TrackedState.TERMINATED


async def test_a_restarted_daemon_never_undrains_a_warned_node(spot: Spot) -> None:
    """The interrupted mark outlives the daemon: a restart after a scheduled change's
    notice (deleted once handled) still knows the cloud takes the node, so demand that
    returns gets a new node, never the warned one undrained."""
    node = await spot.one_busy_spot_node()
    await scheduled_change(spot, node)
    assert await spot.in_queue() == 0
    restarted = await spot.run(
        build_controller(spot.config, spot.provider, spot.clock, metrics=ShoalMetrics())
    )
    await spot.run(restarted.reconcile())
    restarted.executor.drain_hook = spot.hook
    busy = Demand(
        queued=(QueuedJobs(WHOLE_NODE, 1),),
        running=(),
    )
    restarted.set_demand(DemandUpdate(busy, joined_nodes=frozenset({node})))
    await spot.run(restarted.run_pass())
    plan = restarted.last_plan
    assert plan is not None
    assert node not in {a.node_id for a in plan.undrains}
    assert node in restarted.tracker.interrupted()
    assert sum(launch.count for launch in plan.launches) == 1


async def test_with_slurm_power_saving_an_idle_interrupted_node_is_left_to_slurm(
    spot: Spot, moto_url: str, tmp_path: Path
) -> None:
    """Power saving: Slurm decides which nodes run and is not told of shoal's drain there;
    it suspends the idle node itself (its suspend hook terminates it), so the loop does not
    terminate it under a job Slurm may be placing on it."""
    plain = config(moto_url).model_dump(exclude_none=True)
    power_save = parse_config(
        {
            **plain,
            "demand": {"slurm": True, "api": False},
            "slurm": {"mode": "power_save"},
            "state_dir": str(tmp_path),
        }
    )
    INTERRUPTIONS.build(power_save, spot.clock, ShoalMetrics(), spot.controller)
    node = await spot.one_busy_spot_node()
    await scheduled_change(spot, node)
    idle = DemandUpdate(Demand(), joined_nodes=frozenset({node}))
    spot.controller.set_demand(idle)
    await spot.pass_()
    removed = {a.node_id for a in spot.controller.last_plan.terminations}  # type: ignore[union-attr]
    assert node not in removed
    assert spot.controller.tracker.get(node).state is TrackedState.DRAINING  # type: ignore[union-attr]


class StuckDrainHook:
    """A drain hook that answers only when released (a slow scontrol, a webhook that hangs
    until its timeout)."""

    def __init__(self, expected: int) -> None:
        self.started: list[str] = []
        self.expected = expected
        self.all_started = asyncio.Event()
        self.release = asyncio.Event()

    async def drain(self, node: str, reason: str | None = None) -> None:
        self.started.append(node)
        if len(self.started) == self.expected:
            self.all_started.set()
        await self.release.wait()


async def test_a_slow_drain_does_not_hold_back_the_other_warnings_of_a_receive(
    spot: Spot,
) -> None:
    """EC2 reclaims spot capacity in bulk: one receive brings several warnings, and each
    node must be out of the view, draining and replaced within its two minutes, not after
    the drains of the nodes before it."""
    await spot.pass_(Demand(queued=(QueuedJobs(WHOLE_NODE, 2),)))
    nodes = sorted(t.id for t in spot.controller.tracker.all())
    assert len(nodes) == 2
    spot.controller.set_demand(DemandUpdate(Demand(), joined_nodes=frozenset(nodes)))
    await spot.pass_()
    hook = StuckDrainHook(len(nodes))
    spot.controller.executor.drain_hook = hook
    for node in nodes:
        await spot.warn(node)
    poll = asyncio.ensure_future(spot.handler.poll_once())
    try:
        # a bound for the failure only: with the drains made together this returns at once
        await asyncio.wait_for(hook.all_started.wait(), 20)
        assert sorted(hook.started) == nodes  # both drains under way at once
        assert spot.controller.tracker.interrupted() == frozenset(nodes)
    finally:
        hook.release.set()
        assert await spot.run(poll) == 2
    assert await spot.in_queue() == 0


async def test_a_restarted_daemon_reads_no_warning_before_it_knows_its_nodes(spot: Spot) -> None:
    """Warnings queue up while the daemon is down (SQS keeps them five minutes). The reader
    starts beside the loop: read before the first listing, every one would be "not this
    cluster's" and deleted, and the nodes would never be drained nor replaced."""
    node = await spot.one_busy_spot_node()
    await spot.warn(node)  # while the daemon is down
    restarted = await spot.run(
        build_controller(spot.config, spot.provider, spot.clock, metrics=ShoalMetrics())
    )
    restarted.executor.drain_hook = spot.hook
    handler = INTERRUPTIONS.build(spot.config, spot.clock, restarted.metrics, restarted).handler
    handler.queue.wait_time = 0
    handler.idle_pause = 60.0  # on the fake clock: no busy loop on an empty short poll
    known_at_receive: list[bool] = []
    deleted = asyncio.Event()
    receive, delete = handler.queue.receive, handler.queue.delete

    async def recording_receive() -> list[QueueMessage]:
        known_at_receive.append(restarted.ready)
        return await receive()

    async def recording_delete(message: QueueMessage) -> None:
        await delete(message)
        deleted.set()

    handler.queue.receive = recording_receive  # type: ignore[method-assign]
    handler.queue.delete = recording_delete  # type: ignore[method-assign]
    task = asyncio.ensure_future(handler.run())  # started with the loop, as the service does
    try:
        await spot.run(restarted.reconcile())  # the loop's first listing
        await asyncio.wait_for(deleted.wait(), 30)  # a bound for the failure only
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert known_at_receive and all(known_at_receive)
    assert restarted.tracker.interrupted() == frozenset({node})
    assert spot.hook.calls == [(node, "spot interruption")]


async def test_a_scheduled_change_launches_no_room_for_the_jobs_still_running_there(
    spot: Spot,
) -> None:
    """A retirement is days or weeks ahead: the job running on the node finishes there, so a
    node launched for it now would only idle beside it. (A spot warning's jobs die within
    two minutes: their room is launched at once, as the first test shows.)"""
    node = await spot.one_busy_spot_node()
    await scheduled_change(spot, node)
    record = await spot.pass_()
    assert record.launched == 0
    assert [t.id for t in spot.controller.tracker.all()] == [node]
    # new work gets a new node: the drained one is no room
    running = Demand(
        queued=(QueuedJobs(WHOLE_NODE, 1),),
        running=(RunningJob(WHOLE_NODE, node, elapsed=900),),
    )
    record = await spot.pass_(running)
    assert record.launched == 1
