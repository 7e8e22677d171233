"""Issue 21: a follower forwards writes to the leader (``daemon.leader.forward``).

Two in-process daemons on one simulated cloud and one in-memory election (``start_pair``
of ``test_leader_gate``), each with its HTTP API on a real loopback port: a write sent to
the follower is served by the leader, which says so (``X-Shoal-Served-By``); a request
that was forwarded once is never forwarded again; with no leader known, or a leader that
does not answer, the follower answers 503 with the leader's name, as before (the hook
spools then).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from shoal.daemon.config import load_config
from shoal.daemon.leader.forward import FORWARDED_BY, SERVED_BY
from shoal.daemon.leader.memory import MemoryElection
from shoal.daemon.service import Service
from shoal.runtime.testing import FakeClock, InlineExecutor
from test_leader_gate import JOBS, TTL, start_pair, stop_all
from test_service import free_port, write_config


async def request(
    service: Service, method: str, path: str, **kwargs: Any
) -> tuple[int, Any, dict[str, str]]:
    url = f"http://127.0.0.1:{service.port}{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as r:
        return r.status, await r.json(), dict(r.headers)


def roles(services: list[Service]) -> tuple[Service, Service]:
    (leader,) = [s for s in services if s.elector is not None and s.elector.is_leader]
    (follower,) = [s for s in services if s is not leader]
    return leader, follower


def queued(service: Service) -> int:
    assert service.controller is not None
    return sum(q.count for q in service.controller.demand.queued)


async def test_a_demand_push_to_the_follower_is_served_by_the_leader(tmp_path: Path) -> None:
    clock = FakeClock()
    _, services, tasks = await start_pair(tmp_path, clock)
    try:
        leader, follower = roles(services)
        status, body, headers = await request(follower, "PUT", "/v1/demand", json=JOBS)
        assert status == 200, body
        assert headers[SERVED_BY] == leader.elector.me.name  # type: ignore[union-attr]
        assert queued(leader) == 4 and queued(follower) == 0  # the leader has it, only it
        # a write the leader serves itself says so too
        status, _, headers = await request(leader, "PUT", "/v1/demand", json=JOBS)
        assert status == 200 and headers[SERVED_BY] == leader.elector.me.name  # type: ignore[union-attr]
        # the leader's refusal comes back as it is (a bad body: 400, not a 503 to retry)
        status, body, headers = await request(follower, "PUT", "/v1/demand", json={"x": 1})
        assert status == 400 and headers[SERVED_BY] == leader.elector.me.name  # type: ignore[union-attr]
        assert follower.forwarder is not None and follower.forwarder.forwarded == 2
    finally:
        await stop_all(services, tasks)


async def test_the_leader_checks_the_token_of_a_forwarded_request(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    clock = FakeClock()
    _, services, tasks = await start_pair(tmp_path, clock, api={"token_file": str(token)})
    try:
        leader, follower = roles(services)
        status, _, headers = await request(follower, "PUT", "/v1/demand", json=JOBS)
        assert status == 401 and queued(leader) == 0
        assert headers.get("WWW-Authenticate", "").startswith("Bearer")  # the leader's, passed on
        # header names are case-insensitive: a client's lowercase one is passed on too
        good = {"authorization": "Bearer s3cret"}
        status, _, _ = await request(follower, "PUT", "/v1/demand", json=JOBS, headers=good)
        assert status == 200 and queued(leader) == 4
    finally:
        await stop_all(services, tasks)


async def test_a_forwarded_request_is_never_forwarded_again(tmp_path: Path) -> None:
    clock = FakeClock()
    _, services, tasks = await start_pair(tmp_path, clock)
    try:
        leader, follower = roles(services)
        hop = {FORWARDED_BY: "elsewhere"}
        status, body, _ = await request(follower, "PUT", "/v1/demand", json=JOBS, headers=hop)
        assert status == 503 and "not forwarded again" in body["error"]
        assert body["leader"]["name"] == leader.elector.me.name  # type: ignore[union-attr]
        assert follower.forwarder is not None and follower.forwarder.forwarded == 0
        assert queued(leader) == 0
        # the leader serves a forwarded request (it is the end of the hop)
        status, _, _ = await request(leader, "PUT", "/v1/demand", json=JOBS, headers=hop)
        assert status == 200 and queued(leader) == 4
    finally:
        await stop_all(services, tasks)


async def test_a_stale_leader_address_pointing_at_a_follower_makes_no_loop(
    tmp_path: Path,
) -> None:
    """The key names ``a`` at the address of ``c``, a follower (a wrong ``advertise``, or
    a view of the key older than a restart): ``b`` forwards to ``c``, which does not forward
    a forwarded request on: one hop, then 503."""
    clock = FakeClock()
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    election = MemoryElection(clock, TTL)
    services = []
    ports = [free_port(), free_port()]
    for name, port in zip(("b", "c"), ports, strict=True):
        path = write_config(tmp_path / f"{name}.yaml", api={"listen": f"127.0.0.1:{port}"})
        config = load_config(path)
        elector = election.elector(name, f"http://127.0.0.1:{port}")
        services.append(Service(config, path, clock=clock, install_signals=False, elector=elector))
    leader = election.elector("a", f"http://127.0.0.1:{ports[1]}")  # c's address
    await leader.campaign()
    tasks = [asyncio.create_task(s.serve()) for s in services]
    try:
        for s in services:
            await asyncio.wait_for(s.started.wait(), 10)
        await clock.settle()
        b, c = services
        status, body, headers = await request(b, "PUT", "/v1/demand", json=JOBS)
        assert status == 503 and "not forwarded again" in body["error"]
        assert headers.get("Retry-After") == "1"  # c's, passed on: the caller knows when to retry
        assert b.forwarder is not None and c.forwarder is not None
        assert (b.forwarder.forwarded, c.forwarder.forwarded) == (1, 0)
    finally:
        await leader.close()
        await stop_all(services, tasks)


async def test_with_no_leader_known_or_a_leader_down_the_follower_answers_503(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    election = MemoryElection(clock, TTL)
    election.partition("b")  # b cannot reach the store: it knows no leader
    path = write_config(tmp_path / "b.yaml")
    config = load_config(path)
    elector = election.elector("b", f"http://{config.api.listen}")
    b = Service(config, path, clock=clock, install_signals=False, elector=elector)
    task = asyncio.create_task(b.serve())
    try:
        await asyncio.wait_for(b.started.wait(), 10)
        await clock.settle()
        status, body, _ = await request(b, "PUT", "/v1/demand", json=JOBS)
        assert (status, body["leader"]) == (503, None)

        # a leads, at an address where nothing listens (its host died): 503 with its name
        dead = election.elector("a", f"http://127.0.0.1:{free_port()}")
        await dead.campaign()
        election.heal("b")
        await clock.advance(TTL / 3)  # b's campaign tries again and sees a
        assert elector.leader is not None and elector.leader.name == "a"
        status, body, headers = await request(b, "PUT", "/v1/demand", json=JOBS)
        assert status == 503 and body["leader"]["name"] == "a" and SERVED_BY not in headers
        assert b.forwarder is not None and b.forwarder.failed == 2
        await dead.close()
    finally:
        b.stop()
        assert await asyncio.wait_for(task, 10) == 0
