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
  at most one TTL, so a watch that hangs costs one more txn, nothing else.
- resign: ``lease/revoke``: the key goes with it, and the followers' watches fire.

Each endpoint a call tries has a timeout below the lease's margin (``min(margin, ttl/3)``).
A call moves on to the next endpoint when one cannot be reached, does not answer in time, or
answers 5xx or 429 (``etcdserver: no leader``, a request timed out, too many requests); any
other non-200 answer is etcd's word and ends the call. Calls start at the endpoint that last
answered, so a member that hangs (a host powered off, a partition, SIGSTOP) costs one
timeout, once, not one per call: two per renewal, with the renewal period past the lease's
deadline, stepped a leader down for good while two members of three were healthy. The
split-brain guard (``LeaseElector``) does not depend on any of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from shoal.daemon.leader import LeaderInfo, LeaseElector
from shoal.runtime.clock import Clock

__all__ = ["EtcdElector", "EtcdError"]

log = logging.getLogger(__name__)


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

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first endpoint that answers, from the one that answered last; raises
        EtcdError (no endpoint answered, or one answered with etcd's own refusal)."""
        errors = []
        for index in self._order():
            endpoint = self.endpoints[index]
            try:
                async with asyncio.timeout(self.timeout):
                    async with self._http().post(f"{endpoint}/v3/{path}", json=body) as response:
                        answer = await response.json(content_type=None)
                        status = response.status
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                errors.append(f"{endpoint}: {exc!r}")
                continue
            if status >= 500 or status == 429:  # this member cannot serve it now: the next
                errors.append(f"{endpoint}: HTTP {status}: {answer}")
                continue
            self._first = index
            if status != 200:
                raise EtcdError(f"{path}: HTTP {status}: {answer}")
            return dict(answer)
        raise EtcdError("; ".join(errors))

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
        TTL (and a watch on the next endpoint when one cannot be reached)."""
        body = {"create_request": {"key": _b64(self.key), "start_revision": str(int(token) + 1)}}
        try:
            async with asyncio.timeout(self.ttl):
                for endpoint in (self.endpoints[i] for i in self._order()):
                    try:
                        async with self._http().post(f"{endpoint}/v3/watch", json=body) as response:
                            async for line in response.content:
                                if not line.strip():
                                    continue
                                events = json.loads(line).get("result", {}).get("events") or []
                                if any(e.get("type") == "DELETE" for e in events):
                                    return
                    except aiohttp.ClientError as exc:
                        log.debug('event=watch_failed endpoint=%s error="%r"', endpoint, exc)
                await self.clock.sleep(self.renew_every)  # no watch held: try again soon
        except TimeoutError:
            return

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()
