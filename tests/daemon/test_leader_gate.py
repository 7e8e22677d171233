"""Issue 21: with ``ha``, only the leader plans and acts; followers serve reads and refuse writes.

Two in-process daemons share one simulated cloud and one in-memory election
(``MemoryElection``) on a FakeClock, each with its HTTP API on a real loopback port. Time
moves only when the test advances it; the waits are on passes (``wait_for_pass``) and on
the electors' own events, never on sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from shoal.daemon.config import load_config
from shoal.daemon.leader.forward import FORWARDED_BY
from shoal.daemon.leader.memory import MemoryElection
from shoal.daemon.service import Service, SystemdNotifier, build_provider
from shoal.runtime.testing import FakeClock, InlineExecutor
from test_service import received, write_config
from waits import wait_for_pass

TTL = 10.0
JOBS = {"jobs": [{"count": 4, "cores": 4, "memory": "6GiB", "wall_time": "2h"}], "running": []}


async def http(service: Service, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{service.port}{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as r:
        body = await r.json() if path != "/metrics" else await r.text()
        return r.status, body


def leader_gauge(metrics_text: str) -> float:
    (line,) = [x for x in metrics_text.splitlines() if x.startswith("shoal_leader ")]
    return float(line.split()[1])


def cluster_view(service: Service) -> dict[str, float]:
    """The non-zero samples of the gauges that describe the cluster, summed per metric."""
    m = service.metrics
    gauges = (m.nodes, m.target_nodes, m.estimated_cost, m.jobs_queued, m.jobs_running)
    gauges += (m.jobs_unschedulable, m.jobs_waiting_for_limit, m.nodes_unlisted)
    gauges += (m.offerings_in_backoff, m.backoff_until, m.nodes_drained_by_others)
    view: dict[str, float] = {}
    for gauge in gauges:
        for metric in gauge.collect():
            for sample in metric.samples:
                if sample.value:
                    view[sample.name] = view.get(sample.name, 0.0) + sample.value
    return view


def launched(service: Service) -> float:
    samples = [s for m in service.metrics.scale_ups.collect() for s in m.samples]
    return sum(s.value for s in samples if s.name.endswith("_total"))


async def start_pair(
    tmp_path: Path,
    clock: FakeClock,
    notifiers: dict[str, SystemdNotifier] | None = None,
    election: MemoryElection | None = None,
    **overrides: Any,
) -> tuple[MemoryElection, list[Service], list[asyncio.Task[int]]]:
    """Daemons ``a`` and ``b`` on one simulated cloud and one in-memory election (``election``
    when given), serving; ``overrides`` merged into both configs."""
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    election = election or MemoryElection(clock, TTL)
    services = []
    provider = None
    for name in ("a", "b"):
        path = write_config(tmp_path / f"{name}.yaml", **{"demand": {"api": True}, **overrides})
        config = load_config(path)
        provider = provider or build_provider(config, clock)  # one cloud for both
        services.append(
            Service(
                config,
                path,
                clock=clock,
                provider=provider,
                install_signals=False,
                elector=election.elector(name, f"http://{config.api.listen}"),
                notifier=(notifiers or {}).get(name),
            )
        )
    tasks = [asyncio.create_task(s.serve()) for s in services]
    for s in services:
        await asyncio.wait_for(s.started.wait(), 10)
    await clock.settle()
    return election, services, tasks


async def stop_all(services: list[Service], tasks: list[asyncio.Task[int]]) -> None:
    for s in services:
        s.stop()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 10) == [0, 0]


async def test_only_the_leader_acts_and_a_cut_off_leader_stops_before_the_other_starts(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    election, services, tasks = await start_pair(tmp_path, clock)
    try:
        leaders = [s for s in services if s.elector is not None and s.elector.is_leader]
        assert len(leaders) == 1
        (old,) = leaders
        (new,) = [s for s in services if s is not old]
        assert old.controller is not None and new.controller is not None
        await asyncio.wait_for(wait_for_pass(old.controller, 1), 10)

        # the follower: healthy, not ready, reads as usual, a write it cannot forward (one
        # forwarded already: test_leader_forward) refused with the leader
        assert await http(new, "GET", "/healthz") == (200, {"healthy": True, "role": "follower"})
        assert (await http(new, "GET", "/readyz"))[0] == 503
        hop = {FORWARDED_BY: "c"}
        status, body = await http(new, "PUT", "/v1/demand", json=JOBS, headers=hop)
        assert status == 503 and body["leader"] == {
            "name": old.elector.me.name,
            "address": old.elector.me.address,
        }  # type: ignore[union-attr]
        _, view = await http(new, "GET", "/v1/status")
        assert view["leadership"]["role"] == "follower" and view["leadership"]["epoch"] is None
        assert view["leadership"]["leader"]["name"] == old.elector.me.name  # type: ignore[union-attr]
        assert leader_gauge((await http(new, "GET", "/metrics"))[1]) == 0
        assert leader_gauge((await http(old, "GET", "/metrics"))[1]) == 1
        _, view = await http(old, "GET", "/v1/status")
        assert view["leadership"] == {
            "name": old.elector.me.name,  # type: ignore[union-attr]
            "role": "leader",
            "epoch": 1,
            "leader": old.elector.me.to_json(),  # type: ignore[union-attr]
        }

        # the leader plans and launches; the follower ran no pass at all
        status, _ = await http(old, "PUT", "/v1/demand", json=JOBS)
        assert status == 200
        passes = old.controller.passes
        waiter = asyncio.ensure_future(wait_for_pass(old.controller, passes + 1))
        await clock.advance(1.0)  # the debounce
        await asyncio.wait_for(waiter, 10)
        assert launched(old) > 0
        assert new.controller.passes == 0 and launched(new) == 0

        # the leader is cut off from the store: it stops acting (no pass after its term
        # ended) BEFORE the other daemon leads, which then reconciles and runs passes
        election.partition(old.elector.me.name)  # type: ignore[union-attr]
        ended = asyncio.ensure_future(old.elector.lost())  # type: ignore[union-attr]
        await clock.run_until(asyncio.shield(ended), limit=2 * TTL)
        stepped_down, passes_then = clock.monotonic(), old.controller.passes
        await clock.run_until(new.elector.campaign(), limit=2 * TTL)  # type: ignore[union-attr]
        assert clock.monotonic() > stepped_down
        await clock.run_until(wait_for_pass(new.controller, 1), limit=2 * TTL)
        await clock.advance(3 * TTL)
        assert old.controller.passes == passes_then and new.controller.passes >= 2
        assert leader_gauge((await http(old, "GET", "/metrics"))[1]) == 0
        assert leader_gauge((await http(new, "GET", "/metrics"))[1]) == 1
        # the deposed leader no longer shows the cluster it saw (a dashboard summing the
        # daemons counted its nodes, targets and cost twice); the new leader shows them
        assert cluster_view(old) == {}
        assert cluster_view(new)["shoal_nodes"] == launched(old)
        # the same demand, pushed to the new leader: it adopted what the old one launched
        # (the shared cloud's listing), so it launches nothing twice
        status, _ = await http(new, "PUT", "/v1/demand", json=JOBS)
        assert status == 200
        waiter = asyncio.ensure_future(wait_for_pass(new.controller, new.controller.passes + 1))
        await clock.advance(TTL)
        await asyncio.wait_for(waiter, 10)
        assert launched(new) == 0 and new.controller.last_plan is not None
        assert len(new.controller.tracker.all()) == launched(old)
    finally:
        await stop_all(services, tasks)


async def test_a_follower_keeps_the_systemd_watchdog_fed_while_it_runs_no_pass(
    tmp_path: Path,
) -> None:
    """A follower's controller runs no pass, so by the loop's liveness it would look wedged
    after 3 intervals and systemd would kill it (WatchdogSec): it is fed while it follows."""
    socks, notifiers = {}, {}
    for name in ("a", "b"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(tmp_path / f"{name}.sock"))
        sock.setblocking(False)
        socks[name] = sock
        env = {"NOTIFY_SOCKET": str(tmp_path / f"{name}.sock"), "WATCHDOG_USEC": "60000000"}
        notifiers[name] = SystemdNotifier(env)
    clock = FakeClock()
    _, services, tasks = await start_pair(tmp_path, clock, notifiers)
    try:
        (follower,) = [s for s in services if s.elector is not None and not s.elector.is_leader]
        name = follower.elector.me.name  # type: ignore[union-attr]
        assert "READY=1" in received(socks[name])  # up, as systemd's Type=notify waits for
        fed = []
        for _ in range(30):  # 30 scale intervals; both sockets read as systemd would
            await clock.advance(30.0)
            got = {n: received(sock) for n, sock in socks.items()}
            fed.append("WATCHDOG=1" in got[name])
        assert follower.controller is not None and follower.controller.passes == 0
        assert all(fed[3:])  # still fed, long after 3 intervals without a pass
    finally:
        await stop_all(services, tasks)
        for sock in socks.values():
            sock.close()


async def test_a_reload_with_a_changed_ha_section_warns_and_keeps_the_old_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The running elector holds a term under the old ``ha`` section (its key, ttl, name): a
    SIGHUP that changes it says so (which keys) and keeps it; the rest of the file applies."""
    caplog.set_level(logging.INFO, logger="shoal")
    clock = FakeClock()
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    ha = {"etcd": ["http://127.0.0.1:2379"], "ttl": "10s", "name": "a"}
    path = write_config(tmp_path / "a.yaml", ha=ha)
    config = load_config(path)
    election = MemoryElection(clock, TTL)
    service = Service(
        config, path, clock=clock, install_signals=False, elector=election.elector("a")
    )
    task = asyncio.create_task(service.serve())
    try:
        await asyncio.wait_for(service.started.wait(), 10)
        listen = config.api.listen
        write_config(
            path,
            ha={**ha, "ttl": "20s", "name": "b"},
            api={"listen": listen},
            node_types=[{"type": "c5.xlarge", "max": 7}],
        )
        assert await service.reload() is True
        assert "event=reload_ha_needs_restart changed=ha.ttl,ha.name" in caplog.text
        assert service.config.ha == config.ha  # the old section, as the elector runs it
        assert service.config.node_types[0].max == 7  # the rest applied

        caplog.clear()  # an unchanged ha section: no warning
        write_config(path, ha=ha, api={"listen": listen})
        assert await service.reload() is True
        assert "reload_ha_needs_restart" not in caplog.text

        write_config(path, api={"listen": listen})  # ha removed: a restart too
        assert await service.reload() is True
        assert "event=reload_ha_needs_restart changed=ha " in caplog.text
        assert service.config.ha == config.ha
    finally:
        service.stop()
        assert await asyncio.wait_for(task, 10) == 0
