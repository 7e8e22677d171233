"""Issue 21: a follower's spool is not stranded: it forwards each request to the leader.

The hooks on a follower's host spool there when no leader answered them (the follower
answers 503 when it cannot forward). While that daemon follows, ``SlurmIntegration.follow``
hands each spooled request to the leader's hook endpoint with its request id
(``forward_spool`` is one scan of it). Two power savers on one simulated cloud, each with
its own state folder (two hosts); the leader's hook endpoints on a real loopback port, behind
the same middleware as in ``shoal run``; the election in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from e2e.procs import free_port
from shoal.daemon.http import BearerToken, start_http
from shoal.daemon.leader.forward import LeaderForwarder
from shoal.daemon.leader.gate import follower_middleware
from shoal.daemon.leader.memory import MemoryElection
from shoal.daemon.slurm import spool
from shoal.daemon.slurm.integration import SPOOL_TRIES, LeaderUnavailable
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock
from slurm.test_slurm_power import ZONE, Daemon, start


@dataclass
class Pair:
    leader: Daemon
    follower: Daemon
    forwarder: LeaderForwarder
    app: web.Application
    port: int
    runner: web.AppRunner | None = None

    async def serve(self) -> None:
        """The leader's HTTP API comes up (it was down: nothing listened on its port)."""
        self.runner, _ = await start_http(self.app, "127.0.0.1", self.port)

    @property
    def spool(self) -> Path:
        assert self.follower.slurm.spool_dir is not None
        return self.follower.slurm.spool_dir


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    clock = FakeClock()
    provider = SimulatedProvisioner(clusterName="t", zone=ZONE, clock=clock)
    hosts = [tmp_path / "a", tmp_path / "b"]
    for host in hosts:
        host.mkdir()
    leader, follower = [await start(host, clock, provider) for host in hosts]
    election = MemoryElection(clock, 10.0)
    port = free_port()
    leads = election.elector("a", f"http://127.0.0.1:{port}")
    await leads.campaign()
    follows = election.elector("b", f"http://127.0.0.1:{free_port()}")
    campaign = asyncio.create_task(follows.campaign())
    await clock.settle()
    assert follows.leader is not None and follows.leader.name == "a"
    app = web.Application()
    leader.slurm.add_routes(app)
    app.middlewares.append(follower_middleware(leads))
    forwarder = LeaderForwarder(follows)
    made = Pair(leader, follower, forwarder, app, port)
    try:
        yield made
    finally:
        campaign.cancel()
        await asyncio.gather(campaign, return_exceptions=True)
        await forwarder.close()
        if made.runner is not None:
            await made.runner.cleanup()
        for daemon in (leader, follower):
            await daemon.slurm.close()
        await leads.close()


async def test_a_spooled_request_on_a_followers_host_is_served_by_the_leader_once(
    pair: Pair,
) -> None:
    dropped = []

    @web.middleware
    async def lose_the_first_answer(request: web.Request, handler: object) -> web.StreamResponse:
        response = await handler(request)  # type: ignore[operator]
        if not dropped:  # served, but the answer never reaches the follower
            dropped.append(request.path)
            assert request.transport is not None
            request.transport.close()
        return response

    pair.app.middlewares.insert(0, lose_the_first_answer)
    await pair.serve()
    spool.write(pair.spool, "resume", "cloud1", None, spool.new_request_id())

    assert await pair.follower.slurm.forward_spool(pair.forwarder) == 0
    assert dropped == ["/v1/slurm/resume"]
    assert len(spool.pending(pair.spool)) == 1  # no 2xx seen: kept, sent again next scan
    assert list(pair.leader.power.state.requests) == ["cloud1"]  # ...though the leader has it

    assert await pair.follower.slurm.forward_spool(pair.forwarder) == 0  # answered: repeated
    assert spool.pending(pair.spool) == []
    await pair.leader.served()
    workers = await pair.leader.workers()
    assert list(workers) == ["cloud1"] and len(workers["cloud1"]) == 1
    assert pair.leader.launches() == 1
    assert pair.follower.power.state.requests == {}  # the follower served nothing itself


async def test_a_followers_spool_waits_while_the_leader_is_down_and_is_never_quarantined(
    pair: Pair,
) -> None:
    spool.write(pair.spool, "suspend", "cloud1", None, spool.new_request_id())
    spool.write(pair.spool, "resume", "cloud2", None, spool.new_request_id())
    for _ in range(SPOOL_TRIES + 1):  # nothing listens where the leader is
        assert await pair.follower.slurm.forward_spool(pair.forwarder) == 0
    assert len(spool.pending(pair.spool)) == 2
    assert list(spool.quarantine_dir(pair.spool).iterdir()) == []

    await pair.serve()
    assert await pair.follower.slurm.forward_spool(pair.forwarder) == 2
    assert spool.pending(pair.spool) == []
    await pair.leader.served()
    assert list(await pair.leader.workers()) == ["cloud2"]


async def test_a_request_the_leader_refuses_is_quarantined_on_the_followers_host(
    pair: Pair,
) -> None:
    await pair.serve()
    bad = spool.write(pair.spool, "resume", "cloud[1-", None, spool.new_request_id())
    spool.write(pair.spool, "resume", "cloud3", None, spool.new_request_id())
    assert await pair.follower.slurm.forward_spool(pair.forwarder) == 1  # the next one too
    assert spool.pending(pair.spool) == []
    (kept,) = spool.quarantine_dir(pair.spool).iterdir()
    assert kept.name.endswith(Path(bad).name)
    assert pair.follower.metrics.registry.get_sample_value(
        "shoal_slurm_spool_quarantined_total", {"reason": "refused"}
    )


async def test_a_forwarded_spool_request_carries_the_tokens_current_value(
    pair: Pair, tmp_path: Path
) -> None:
    """The spool forwards with the service's BearerToken: its value as the file holds it now
    (rotated while running: the new one), never the object's text, which every leader
    refuses (401: the request would wait forever)."""
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    pair.follower.slurm.token = BearerToken(token_file)
    token_file.write_text("second-token\n")
    sent: list[dict[str, str]] = []

    class Capture:
        async def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
            sent.append(headers)

    with pytest.raises(LeaderUnavailable):  # no answer: it waits for the next scan
        await pair.follower.slurm._forward(Capture(), "resume", "cloud1", None, "hook-1")  # type: ignore[arg-type]
    assert sent[0]["Authorization"] == "Bearer second-token"
