"""How ``EtcdElector`` picks an endpoint, against loopback endpoints that answer as an etcd
member's v3 JSON gateway does when it cannot serve: 503 (gRPC Unavailable: ``etcdserver: no
leader``, a member cut off from raft's leader), no answer at all (a member whose host is
powered off or SIGSTOPped: the connection is accepted and nothing comes back), or etcd's own
refusal (400: a malformed request; the same answer from every member).

A real 3-member etcd losing a member is ``tests/e2e/test_e2e_ha.py``'s; these pin the rules:
a member that cannot serve moves the call on, a refusal ends it, and the next call starts at
the member that answered last, so a hung member costs one timeout, once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from loopback import serve
from shoal.daemon.leader import LeaderInfo
from shoal.daemon.leader.etcd import EtcdElector, EtcdError
from shoal.runtime.clock import SystemClock

TTL = 2.0  # the per-endpoint timeout: min(margin 0.5 s, ttl/3)


class Members:
    """Loopback endpoints, each with a behaviour; counts the requests each got."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.release = asyncio.Event()  # lets the hung handlers go at teardown
        self.urls: dict[str, str] = {}
        self.runners: list[web.AppRunner] = []
        self.elected = 0.0  # monotonic: "no-leader-until" members answer 503 before it

    async def add(self, name: str, behaviour: str) -> str:
        members = self

        async def handle(request: web.Request) -> web.StreamResponse:
            self.hits[name] += 1
            path = request.match_info["path"]
            if behaviour == "hang" or (behaviour == "holds-the-first" and self.hits[name] == 1):
                await self.release.wait()
                if behaviour == "hang":  # released at teardown: the client has gone
                    return web.Response(status=503)
            if behaviour == "no-leader-until" and time.monotonic() < members.elected:
                return web.json_response({"error": "etcdserver: leader changed"}, status=503)
            if behaviour == "null":  # a 200 that is no answer (a proxy's, a member's bug)
                return web.Response(status=200, body=b"null")
            if behaviour == "lease-gone":
                return web.json_response({"error": "requested lease not found"}, status=404)
            if behaviour.startswith("http-"):
                status = int(behaviour.removeprefix("http-"))
                return web.json_response({"error": "cannot serve", "code": 14}, status=status)
            if path == "watch":  # created, then the key's deletion
                stream = web.StreamResponse()
                await stream.prepare(request)
                await stream.write(b'{"result":{"header":{},"created":true}}\n')
                await stream.write(b'{"result":{"header":{},"events":[{"type":"DELETE"}]}}\n')
                await stream.write_eof()
                return stream
            if behaviour == "no-leader":
                return web.json_response(
                    {"error": "etcdserver: no leader", "code": 14, "message": "no leader"},
                    status=503,
                )
            if behaviour == "refuse":
                return web.json_response(
                    {"error": "etcdserver: key is not provided", "code": 3}, status=400
                )
            return web.json_response({"answered": name, "path": request.path})

        app = web.Application()
        app.router.add_post("/v3/{path:.*}", handle)
        runner, url = await serve(app)
        self.runners.append(runner)
        self.urls[name] = url
        return url

    async def close(self) -> None:
        self.release.set()
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def members() -> AsyncIterator[Members]:
    made = Members()
    try:
        yield made
    finally:
        await made.close()


async def elector(members: Members, *behaviours: tuple[str, str]) -> EtcdElector:
    urls = [await members.add(name, behaviour) for name, behaviour in behaviours]
    return EtcdElector(urls, "/shoal/t/leader", LeaderInfo("a"), TTL, SystemClock())


async def call(e: EtcdElector, path: str = "kv/range") -> dict[str, Any]:
    return await e.call(path, {"key": "eA=="})


async def test_a_member_without_a_raft_leader_moves_the_call_on(members: Members) -> None:
    """503 (``etcdserver: no leader``) is that member's state, not etcd's answer: the next
    member serves the call. Before, the 503 ended it, and a leader stepped down while two
    members of three were healthy."""
    e = await elector(members, ("m0", "no-leader"), ("m1", "ok"))
    try:
        assert (await call(e))["answered"] == "m1"
        assert (await call(e))["answered"] == "m1"
        assert members.hits == {"m0": 1, "m1": 2}  # the second call started at m1
    finally:
        await e.close()


async def test_a_hung_member_costs_one_timeout_once(members: Members) -> None:
    """A member that accepts and never answers: a txn (sent to one member at a time) waits
    one timeout on it, then the next member answers; later calls start there and do not wait
    again. Before, every call waited on it (two per renewal), past the lease's deadline."""
    e = await elector(members, ("m0", "hang"), ("m1", "ok"), ("m2", "ok"))
    try:
        began = time.monotonic()
        assert (await call(e, "kv/txn"))["answered"] == "m1"
        assert time.monotonic() - began >= e.timeout
        began = time.monotonic()
        for _ in range(5):
            assert (await call(e, "kv/txn"))["answered"] == "m1"
        assert time.monotonic() - began < e.timeout  # no call waited on m0 again
        assert members.hits == {"m0": 1, "m1": 6}
    finally:
        await e.close()


async def test_a_read_or_keepalive_is_hedged_past_a_hung_member(members: Members) -> None:
    """An idempotent call does not wait a whole timeout on a member that does not answer:
    the next member is asked ``hedge`` later, and the first answer is taken."""
    e = await elector(members, ("m0", "hang"), ("m1", "ok"))
    try:
        for path in ("kv/range", "lease/keepalive"):
            e._first = 0
            began = time.monotonic()
            assert (await call(e, path))["answered"] == "m1"
            assert time.monotonic() - began < e.timeout
        assert members.hits == {"m0": 2, "m1": 2}
    finally:
        await e.close()


async def test_members_holding_the_first_request_are_asked_again(members: Members) -> None:
    """Just after etcd's raft leader hangs, each follower holds a keepalive it forwards to
    that leader (for 7 s, seen on etcd 3.4) while a request sent after the election is
    answered at once: the hedged call asks the members in turn again, and is answered by
    the second request to m0. One try per member, each a timeout long, failed here."""
    e = await elector(members, ("m0", "holds-the-first"), ("m1", "holds-the-first"))
    try:
        assert (await call(e, "lease/keepalive"))["answered"] == "m0"
        assert members.hits == {"m0": 2, "m1": 1}
    finally:
        await e.close()


async def test_a_hedged_call_goes_on_asking_until_the_election_ends(members: Members) -> None:
    """The raft leader hung (listed first) and the followers answer 503 at once until their
    election ends: the call asks again and again (each member at most every ``hedge``) and
    is answered soon after the election. Before, it sent two tries per member, all spent
    before the election, then waited out the call's whole budget and failed."""
    e = await elector(members, ("m0", "hang"), ("m1", "no-leader-until"), ("m2", "no-leader-until"))
    try:
        began = time.monotonic()
        members.elected = began + e.timeout  # past the old code's six tries (~0.2 s)
        answer = await call(e, "lease/keepalive")
        took = time.monotonic() - began
        assert answer["answered"] in {"m1", "m2"}
        assert members.elected - began <= took < 3 * e.timeout  # within the call's budget
        assert members.hits["m0"] <= 3  # the hung member: once per timeout at most
        assert members.hits["m1"] + members.hits["m2"] <= took / e.hedge * 2 + 2
    finally:
        await e.close()


async def test_a_200_that_is_no_answer_moves_the_call_on(members: Members) -> None:
    e = await elector(members, ("m0", "null"), ("m1", "ok"))
    try:
        for path in ("kv/txn", "kv/range"):  # sent one at a time, and hedged
            e._first = 0
            assert (await call(e, path))["answered"] == "m1"
        assert members.hits == {"m0": 2, "m1": 2}
    finally:
        await e.close()


async def test_a_failure_sends_the_next_try_at_once(members: Members) -> None:
    """A member that fails at once (a 503) while another's try hangs: the next member is
    asked then, not a ``hedge`` later."""
    e = await elector(members, ("m0", "hang"), ("m1", "no-leader"), ("m2", "ok"))
    e.timeout, e.hedge = 5.0, 1.0  # a hedge long enough to tell "at once" from "a hedge later"
    try:
        began = time.monotonic()
        assert (await call(e, "kv/range"))["answered"] == "m2"
        took = time.monotonic() - began  # m1 at +hedge, m2 when m1 failed (before: +2 hedges)
        assert e.hedge <= took < 1.5 * e.hedge
        assert members.hits == {"m0": 1, "m1": 1, "m2": 1}
    finally:
        await e.close()


async def test_a_revoke_answered_lease_not_found_is_done(members: Members) -> None:
    """A hedged revoke whose first try was applied but answered late: the next member says
    the lease is not found. That is what a revoke wants; before, the resignation failed."""
    e = await elector(members, ("m0", "hang"), ("m1", "lease-gone"))
    try:
        assert await e.call("lease/revoke", {"ID": 7}) == {}
        with pytest.raises(EtcdError, match=r"HTTP 404"):  # elsewhere 404 is etcd's word
            await e.call("kv/txn", {})
    finally:
        await e.close()


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_a_member_that_cannot_serve_now_moves_the_call_on(
    members: Members, status: int
) -> None:
    """408 (a member shutting down: "the client connection is closing"), 429 and 5xx are
    that member's state: the next one serves the call, and the next call starts there."""
    e = await elector(members, ("m0", f"http-{status}"), ("m1", "ok"))
    try:
        for path in ("kv/txn", "kv/range"):
            assert (await call(e, path))["answered"] == "m1"
        assert members.hits == {"m0": 1, "m1": 2}
    finally:
        await e.close()


async def test_a_follower_watches_past_a_hung_member(members: Members) -> None:
    """A follower's watch for the key's deletion moves on from a member that has not
    answered it within ``timeout``; before, it sat on the hung member for the whole TTL
    (a follower took over 12 s after a 10 s leader's kill -9)."""
    e = await elector(members, ("m0", "hang"), ("m1", "ok"))
    try:
        began = time.monotonic()
        await e._wait_vacancy(41)
        took = time.monotonic() - began
        assert e.timeout <= took < e.ttl / 2
        assert members.hits == {"m0": 1, "m1": 1}
    finally:
        await e.close()


async def test_etcds_own_refusal_ends_the_call(members: Members) -> None:
    """A 4xx other than 429 is etcd's answer to the request itself (the same from every
    member): raised at once, the next member not asked."""
    e = await elector(members, ("m0", "refuse"), ("m1", "ok"))
    try:
        for path in ("kv/txn", "kv/range"):
            with pytest.raises(EtcdError, match=r"HTTP 400"):
                await call(e, path)
        assert members.hits == {"m0": 2}
    finally:
        await e.close()


@pytest.mark.parametrize("path", ["kv/txn", "kv/range"])
async def test_no_member_serving_raises_with_each_ones_reason(members: Members, path: str) -> None:
    e = await elector(members, ("m0", "no-leader"), ("m1", "hang"))
    try:
        with pytest.raises(EtcdError) as raised:
            await call(e, path)
        text = str(raised.value)
        assert "HTTP 503" in text and ("TimeoutError" in text or "no answer in time" in text)
        assert members.urls["m0"] in text and members.urls["m1"] in text
    finally:
        await e.close()
