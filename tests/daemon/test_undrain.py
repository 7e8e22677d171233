"""Taking a draining node back: the undrain hook (command or webhook; the drain hook's twin,
tested here with it) and the executor step that calls it and marks the node ready, then the
planner sees it as capacity again."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import configs
import pytest
from aiohttp import web
from shoal.daemon.config import parse_config
from shoal.daemon.drain import (
    CommandDrainHook,
    CommandUndrainHook,
    DrainError,
    DrainTimeout,
    NoUndrainHook,
    WebhookDrainHook,
    WebhookUndrainHook,
    make_undrain_hook,
)
from shoal.daemon.executor import Executor
from shoal.daemon.http import start_http
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.nodes import NodeTracker, TrackedState
from shoal.providers.base import TAG_DRAINING, Node
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import AddCause, NodeAction, NodeType, Plan, PlannerState, Policy
from shoal.scaler.shape import Shape

ZONE = "us-west-2a"


def make_provider(clock: FakeClock) -> SimulatedProvisioner:
    return SimulatedProvisioner(clusterName="test", clusterType="mesos", zone=ZONE, clock=clock)


C5 = NodeType("c5.xlarge", ("c5.xlarge",), Shape(3600, 8 * 1024**3, 4, 50 * 1024**3, False))


# A drain and an undrain run their command and post their webhook through the same code; each
# hook is checked for both, by its own name in what it says.
HOOKS = {
    "drain": (CommandDrainHook, WebhookDrainHook),
    "undrain": (CommandUndrainHook, WebhookUndrainHook),
}


@pytest.mark.parametrize("verb", list(HOOKS))
async def test_hook_command_substitutes_the_node_and_fails_loudly(
    verb: str, tmp_path: Path
) -> None:
    command = HOOKS[verb][0]
    out = tmp_path / "out"
    await getattr(command(["sh", "-c", f"echo {{node}} > {out}"]), verb)("i-7")
    assert out.read_text().strip() == "i-7"
    with pytest.raises(DrainError, match=f"^{verb} command 'sh' exited 3"):
        await getattr(command(["sh", "-c", "exit 3"]), verb)("i-7")
    with pytest.raises(DrainTimeout, match=f"^{verb} command 'sleep' timed out"):
        await getattr(command(["sleep", "5"], timeout=0.2), verb)("i-7")


@pytest.mark.parametrize("verb", list(HOOKS))
async def test_hook_webhook_posts_the_node_and_fails_on_errors(verb: str) -> None:
    seen: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        return web.json_response({}, status=503 if body["node"] == "bad" else 204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner, port = await start_http(app, "127.0.0.1", 0)
    webhook = HOOKS[verb][1](f"http://127.0.0.1:{port}/hook", timeout=5)
    try:
        await getattr(webhook, verb)("i-1")
        with pytest.raises(DrainError, match=f"^{verb} webhook answered HTTP 503"):
            await getattr(webhook, verb)("bad")
    finally:
        await runner.cleanup()
    assert seen == [{"node": "i-1"}, {"node": "bad"}]
    with pytest.raises(DrainError, match=f"^{verb} webhook failed"):  # nothing listens now
        await getattr(webhook, verb)("gone")


def test_undrain_hook_follows_the_config(tmp_path: Path) -> None:
    drain = parse_config(
        configs.config(drain={"undrain_command": ["scontrol", "update", "{node}", "resume"]})
    ).drain
    assert isinstance(
        make_undrain_hook(drain.undrain_command, drain.undrain_webhook), CommandUndrainHook
    )
    web_drain = parse_config(
        configs.config(drain={"undrain_webhook": "http://127.0.0.1:1/u"})
    ).drain
    hook = make_undrain_hook(web_drain.undrain_command, web_drain.undrain_webhook)
    assert isinstance(hook, WebhookUndrainHook) and hook.url == "http://127.0.0.1:1/u"
    assert isinstance(make_undrain_hook(None, None), NoUndrainHook)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    async def undrain(self, node: str) -> None:
        self.calls.append(node)
        if self.fail:
            raise DrainError("scheduler said no")


async def _tracker(
    provider: SimulatedProvisioner, *states: TrackedState
) -> tuple[NodeTracker, list[str]]:
    """Workers launched on the simulated cloud, joined, listed, then set to ``states``."""
    await provider.addNodes(["c5.xlarge"], len(states), False)
    clock = provider.clock
    assert isinstance(clock, FakeClock)
    await clock.advance(provider.boot_delay + provider.join_delay)
    tracker = NodeTracker([C5], default_zone=ZONE)
    tracker.observe(await provider.list_instances(), None, 0.0)
    names = [t.id for t in tracker.all()]
    for name, state in zip(names, states, strict=True):
        tracker.mark(name, state)
    return tracker, names


def _plan(*node_ids: str) -> Plan:
    return Plan(
        launches=(),
        drains=(),
        terminations=(),
        targets={"c5.xlarge": len(node_ids)},
        unschedulable=(),
        state=PlannerState(),
        undrains=tuple(
            NodeAction(n, "c5.xlarge", AddCause.DEMAND, "2 queued jobs need 1 x c5.xlarge")
            for n in node_ids
        ),
    )


@pytest.mark.parametrize("fail", [False, True], ids=["hook-succeeds", "hook-fails"])
async def test_executor_undrains_through_the_hook_and_marks_ready(fail: bool) -> None:
    clock = FakeClock()
    provider = make_provider(clock)
    hook = Recorder(fail=fail)
    executor = Executor(provider, clock, ShoalMetrics(), undrain_hook=hook)
    tracker, (n1, n2) = await _tracker(provider, TrackedState.DRAINING, TrackedState.READY)
    await provider.tag_instances([n1], {TAG_DRAINING: "1700000000"})  # as the drain left it
    report = await executor.execute(_plan(n1, n2), Policy(node_types=(C5,)), tracker, set())
    assert hook.calls == [n1]  # n2 is not draining: nothing to take back
    listed = {n.name: n.tags for n in await provider.list_instances()}
    if fail:
        assert tracker.get(n1).state is TrackedState.DRAINING  # type: ignore[union-attr]
        assert report.undrained == [] and "scheduler said no" in report.errors[0]
        assert listed[n1][TAG_DRAINING] == "1700000000"  # still draining after a restart
    else:
        assert tracker.get(n1).state is TrackedState.READY  # type: ignore[union-attr]
        assert report.undrained == [n1] and report.errors == []
        assert TAG_DRAINING not in listed[n1]  # the mark is gone with the drain
        # the planner sees it as ready capacity again, not a node to terminate
        tracker.observe(await provider.list_instances(), None, 0.0)
        assert {i.id: i.state.value for i in tracker.infos()} == {n1: "ready", n2: "ready"}


async def test_executor_refuses_to_undrain_a_static_node() -> None:
    clock = FakeClock()
    provider = make_provider(clock)
    hook = Recorder()
    tracker = NodeTracker([C5], default_zone=ZONE)
    static = Node(
        None, "10.0.0.9", "s1", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "c5.xlarge", False
    )
    tracker.observe([static], None, 0.0)
    tracker.mark("s1", TrackedState.DRAINING)
    executor = Executor(provider, clock, ShoalMetrics(), undrain_hook=hook)
    report = await executor.execute(_plan("s1"), Policy(node_types=(C5,)), tracker, set())
    assert hook.calls == [] and report.undrained == []
    assert tracker.get("s1").state is TrackedState.DRAINING  # type: ignore[union-attr]
