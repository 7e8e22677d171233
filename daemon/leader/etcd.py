"""The election on etcd (3.4 or later), through etcd's v3 JSON gateway over aiohttp.

No gRPC client: the five calls it needs are plain JSON POSTs to the gateway every etcd
serves on its client URL (``/v3/...``; keys and values base64):

- campaign: ``lease/grant`` (TTL), then one ``kv/txn``: if the key's create_revision is 0
  (absent), put our name with the lease, else read the holder. The epoch is the revision
  of our put (the key's create revision: it only grows, from term to term and leader to
  leader). A failed campaign revokes the lease it granted.
- renew: ``lease/keepalive``, then ``kv/range``: an answer without a TTL (the lease is gone)
  or a key held under another lease or none (deleted by hand) ends the term at once.
- a follower waits on ``watch`` (a stream of JSON lines) for the key's DELETE from the
  revision its txn saw on, so a deletion between the txn and the watch is not missed; and
  at most one TTL, so a watch that hangs costs one more txn, nothing else. A member that
  has not answered the watch within the timeout is left for the next.
- resign: ``lease/revoke``: the key goes with it, and the followers' watches fire.

Each try at an endpoint has a timeout below the lease's margin (``min(margin, ttl/3)``). A
call moves on to the next endpoint when one cannot be reached, does not answer in time, or
answers 5xx, 408 or 429 (``etcdserver: no leader``, a request timed out, a member shutting
down, too many requests); any other non-200 answer is etcd's word and ends the call. Calls
start at the endpoint that answered last, so a member that hangs (a host powered off, a
partition, SIGSTOP) costs a txn one timeout, once. The keepalive, the read, the revoke and
the grant are hedged (``_hedged``): a new try at the next member every ``timeout/5``, each
member at most every ``timeout/5`` and one try at a time, until one answers or the call's
budget (``timeout`` per member) runs out, since a follower holds a keepalive it forwards to
a raft leader that just hung for 7 s, even past the election. Before (each member tried
once, a timeout each, the next renewal timed from the answer) one hung member of three
listed first stepped a leader down, and a hung raft leader listed second did too when it
hung in the second before a renewal (3 runs of 3 so timed). The split-brain guard
(``LeaseElector``) does not depend on any of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import aiohttp
from shoal.daemon.leader import LeaderInfo, LeaseElector
from shoal.runtime.clock import Clock

__all__ = ["EtcdElector", "EtcdError"]

log = logging.getLogger(__name__)


# answers that say this member cannot serve the call now (another may): a timeout (408: a
# member shutting down, "the client connection is closing"), too many requests; and 5xx
_MEMBER_CANNOT_SERVE = frozenset({408, 429})
# calls sent again to another member without harm (``EtcdElector._hedged``): a lease/grant
# answered twice leaves a lease no key uses, which expires in one TTL. Not a kv/txn: etcd's
# own client never retries a txn once sent (one sent again after a timeout or a 5xx, as
# ``_call`` does, may have been applied: the campaign's compare lets one copy win, and it
# finds itself the holder; a state write's is the same write)
_HEDGED = frozenset({"lease/keepalive", "kv/range", "lease/revoke", "lease/grant"})


class EtcdError(Exception):
    """No endpoint answered, or one answered with an error."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


class EtcdElector(LeaseElector):
    def __init__(
        self, endpoints: Sequence[str], key: str, me: LeaderInfo, ttl: float, clock: Clock
    ) -> None:
        super().__init__(clock, me, ttl)
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.key = key
        self.timeout = min(self.margin, self.renew_every)  # one endpoint's try, at most
        self.hedge = self.timeout / 5  # an idempotent call's next try, if none answered
        self._first = 0  # the endpoint that answered last: where the next call starts
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One v3 gateway call (``daemon.leader.state`` keeps the durable state with it)."""
        return await self._call(path, body)

    def _order(self) -> list[int]:
        """The endpoints' indices, from the one that answered last."""
        n = len(self.endpoints)
        return [(self._first + i) % n for i in range(n)]

    async def _post(self, index: int, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """One try at one endpoint: (HTTP status, answer); raises what the transport raised
        (``aiohttp.ClientError``, ``ValueError``: no JSON)."""
        url = f"{self.endpoints[index]}/v3/{path}"
        async with self._http().post(url, json=body) as response:
            return response.status, await response.json(content_type=None)

    def _answer(self, index: int, path: str, status: int, answer: Any) -> dict[str, Any] | None:
        """An endpoint's answer: the call's result (200 with a JSON object: it becomes the
        first endpoint; a revoke's 404, the lease gone, is one too), None when that member
        cannot serve the call now (the next one may), or EtcdError raised (etcd's own
        refusal of the request, the same from every member)."""
        if status == 200 and isinstance(answer, dict):
            self._first = index
            return answer
        if status == 404 and path == "lease/revoke":  # gone: a try before this one revoked it
            self._first = index
            return {}
        if status == 200 or status >= 500 or status in _MEMBER_CANNOT_SERVE:
            return None
        raise EtcdError(f"{path}: HTTP {status}: {answer}")

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first endpoint that answers, from the one that answered last, each
        try for at most ``timeout``; raises EtcdError (no endpoint answered, or one answered
        with etcd's own refusal). The calls of ``_HEDGED`` are hedged (``_hedged``)."""
        if path in _HEDGED:
            return await self._hedged(path, body)
        errors = []
        for index in self._order():
            try:
                async with asyncio.timeout(self.timeout):
                    status, answer = await self._post(index, path, body)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                errors.append(f"{self.endpoints[index]}: {exc!r}")
                continue
            result = self._answer(index, path, status, answer)
            if result is not None:
                return result
            errors.append(f"{self.endpoints[index]}: HTTP {status}: {answer}")
        raise EtcdError("; ".join(errors))

    async def _hedged(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A call of ``_HEDGED`` (a keepalive, a read, a revoke, a grant): tries at the
        members in turn, a new one every ``hedge`` seconds (at once after a failure, to a
        member not asked within ``hedge``), at most one in flight per member and each for at
        most ``timeout`` (then that member may be asked again); the first answer is taken.
        It goes on for as long as the members one after another would take (``timeout``
        each), however many tries that is: the renewer's guard, not the call, ends a term.

        A member of a cluster whose raft leader just hung holds a keepalive it forwards to
        that leader for 7 s, even after the election a second later, while a new request
        is answered at once: one try per member, each ``timeout`` long, spent 5 s of a
        renewal on a follower and the hung leader, past a 10 s lease's deadline."""
        loop = asyncio.get_running_loop()
        order = self._order()
        end = loop.time() + self.timeout * len(order)
        tries: dict[asyncio.Task[tuple[int, Any]], tuple[int, float]] = {}  # member, sent
        stale: set[asyncio.Task[tuple[int, Any]]] = set()  # cancelled: awaited at the end
        asked: dict[int, float] = {}  # each member's last try, when sent
        errors: dict[int, str] = {}  # each member's last failure
        last, turn, failed = -math.inf, 0, False  # the last try sent; the turn; one failed
        try:
            # every time compared as a deadline (now >= t), the same t the wait is timed to
            while (now := loop.time()) < end:
                for task, (index, sent) in list(tries.items()):
                    if now >= sent + self.timeout:  # that member may be asked again
                        task.cancel()
                        del tries[task]
                        stale.add(task)
                        errors[index] = "no answer in time"
                busy = {index for index, _ in tries.values()}
                idle = [i for i in order if i not in busy]
                ready = [i for i in idle if now >= asked.get(i, -math.inf) + self.hedge]
                if ready and (not tries or failed or now >= last + self.hedge):
                    index = min(ready, key=lambda i: (order.index(i) - turn) % len(order))
                    turn = (order.index(index) + 1) % len(order)
                    asked[index] = last = now
                    failed = False
                    tries[asyncio.create_task(self._post(index, path, body))] = (index, now)
                times = [end, last + self.hedge]
                times += [sent + self.timeout for _, sent in tries.values()]
                times += [asked[i] + self.hedge for i in idle if i in asked]
                after = min(t for t in times if t > now) - now
                if not tries:
                    await asyncio.sleep(after)
                    continue
                done, _ = await asyncio.wait(
                    tries, timeout=after, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    index, _ = tries.pop(task)
                    try:
                        status, answer = task.result()
                    except (aiohttp.ClientError, ValueError, OSError) as exc:
                        errors[index], failed = repr(exc), True
                        continue
                    result = self._answer(index, path, status, answer)
                    if result is not None:
                        return result
                    errors[index], failed = f"HTTP {status}: {answer}", True
            for index, _ in tries.values():
                errors[index] = "no answer in time"
            listed = "; ".join(f"{self.endpoints[i]}: {errors.get(i, 'not asked')}" for i in order)
            raise EtcdError(f"{path}: {listed}")
        finally:
            for task in tries:
                task.cancel()
            await asyncio.gather(*tries, *stale, return_exceptions=True)

    async def _acquire(self) -> tuple[int | None, Any, LeaderInfo | None]:
        grant = await self._call("lease/grant", {"TTL": int(self.ttl)})
        lease = grant["ID"]
        key = _b64(self.key)
        try:
            txn = await self._call(
                "kv/txn",
                {
                    "compare": [
                        {"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
                    ],
                    "success": [
                        {
                            "request_put": {
                                "key": key,
                                "value": _b64(json.dumps(self.me.to_json())),
                                "lease": lease,
                            }
                        }
                    ],
                    "failure": [{"request_range": {"key": key}}],
                },
            )
        except Exception:
            await self._revoke_quietly(lease)
            raise
        revision = int(txn["header"]["revision"])
        if txn.get("succeeded"):
            return revision, lease, self.me
        await self._revoke_quietly(lease)
        kvs = txn["responses"][0]["response_range"].get("kvs") or []
        holder = None
        if kvs:
            try:
                holder = LeaderInfo.from_json(json.loads(_unb64(kvs[0].get("value", ""))))
            except ValueError:
                holder = LeaderInfo("?")
        return None, revision, holder

    async def _revoke_quietly(self, lease: Any) -> None:
        try:
            await self._call("lease/revoke", {"ID": lease})
        except EtcdError as exc:  # it expires by itself
            log.debug('event=lease_revoke_failed lease=%s error="%s"', lease, exc)

    async def _renew(self, lease: Any) -> bool:
        """Keep the lease alive, then check the key is still ours: a key deleted by hand
        leaves the lease alive, and the next campaign would find the key free."""
        answer = await self._call("lease/keepalive", {"ID": lease})
        if int(answer.get("result", {}).get("TTL", 0)) <= 0:
            return False
        kvs = (await self._call("kv/range", {"key": _b64(self.key)})).get("kvs") or []
        return bool(kvs) and str(kvs[0].get("lease")) == str(lease)

    async def _release(self, lease: Any) -> None:
        await self._call("lease/revoke", {"ID": lease})
        log.info("event=lease_revoked name=%s", self.me.name)

    async def _wait_vacancy(self, token: Any) -> None:
        """Watch the key for its DELETE from the revision after the txn's, for at most one
        TTL; a member that has not answered the watch within ``timeout`` (a hung member:
        before, it held the follower for the whole TTL) or cannot be reached, the next."""
        body = {"create_request": {"key": _b64(self.key), "start_revision": str(int(token) + 1)}}
        try:
            async with asyncio.timeout(self.ttl):
                for endpoint in (self.endpoints[i] for i in self._order()):
                    try:
                        async with asyncio.timeout(self.timeout) as answered:
                            url = f"{endpoint}/v3/watch"
                            async with self._http().post(url, json=body) as response:
                                async for line in response.content:
                                    if not line.strip():
                                        continue
                                    answered.reschedule(None)  # held: the TTL bounds it now
                                    result = json.loads(line).get("result", {})
                                    events = result.get("events") or []
                                    if any(e.get("type") == "DELETE" for e in events):
                                        return
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        log.debug('event=watch_failed endpoint=%s error="%r"', endpoint, exc)
                await self.clock.sleep(self.renew_every)  # no watch held: try again soon
        except TimeoutError:
            return

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()
