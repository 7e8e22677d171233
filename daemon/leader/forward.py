"""A follower hands writes to the leader: ``LeaderForwarder``.

A follower takes no demand and runs no power saver, but callers (a scheduler's demand push,
the Slurm hooks on this host) keep calling the daemon they know. So every request that
changes something is sent on to the leader's advertised address (``LeaderInfo.address``,
from the election key's value: ``ha.advertise``, else ``http://<api.listen>``, loopback by
default) and the leader's answer returned as it is::

    caller ─► follower: same method, path, body, Content-Type and Authorization (the leader
              checks the token itself), plus ``X-Shoal-Forwarded-By: <follower>``
           ◄─ the leader's status and body, with ``X-Shoal-Served-By: <leader>``

- **No loops.** A request carrying ``X-Shoal-Forwarded-By`` is never forwarded again: a
  follower that receives one (its view of the leader is stale, or the leader's address
  leads back to a follower) answers 503 (``leader.gate``).
- **Bounded.** One try, ``FORWARD_TIMEOUT`` in all (below the hook's own 5 s), so the caller
  always hears back in time to fall back: no leader known, the leader not reachable or not
  answering, and the follower answers 503 with the leader's name as before; the hook then
  spools the request on this host (``daemon.slurm.spool``).
- **Idempotent by the caller's id.** A forward whose answer is lost may still have been
  served: the hook's ``request_id`` (in the body, forwarded unchanged) makes the leader's
  power saver answer a second delivery as repeated, and a demand push is a PUT of the whole
  demand. The spool a follower forwards (``daemon.slurm.integration``'s ``follow``) relies on
  the same: each file is deleted only after the leader answered 2xx.

``send`` is the one HTTP call, shared by the middleware and the spool's forwarding.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import NamedTuple

import aiohttp
from aiohttp import web
from shoal.daemon.leader import LeaderElector, LeaderInfo

__all__ = [
    "FORWARDED_BY",
    "FORWARD_TIMEOUT",
    "SERVED_BY",
    "Forwarded",
    "LeaderForwarder",
]

log = logging.getLogger(__name__)

FORWARDED_BY = "X-Shoal-Forwarded-By"  # the hop guard: set by the follower that forwarded
SERVED_BY = "X-Shoal-Served-By"  # the daemon that served a write (set by the leader)
FORWARD_TIMEOUT = 3.0  # seconds, connect and answer: below the hook's 5 s (it spools then)
_PASSED_ON = ("authorization", "content-type")  # compared in lower case, as HTTP does
# what the leader's answer carries for its caller: when to retry a 503, how to authenticate
_PASSED_BACK = ("Retry-After", "WWW-Authenticate")


class Forwarded(NamedTuple):
    """The leader's answer to a forwarded request."""

    status: int
    body: bytes
    content_type: str
    served_by: str
    headers: tuple[tuple[str, str], ...] = ()  # the leader's ``_PASSED_BACK`` headers, as they are


class LeaderForwarder:
    """Sends a follower's writes to the leader the elector last saw."""

    def __init__(self, elector: LeaderElector, timeout: float = FORWARD_TIMEOUT) -> None:
        self.elector = elector
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self.forwarded = 0  # answers relayed (any status)
        self.failed = 0  # leader unknown, unreachable or silent

    def target(self) -> LeaderInfo | None:
        """The leader to forward to, or None: none known, no address, or this daemon."""
        leader = self.elector.leader
        me = self.elector.me
        if leader is None or not leader.address or self.elector.is_leader:
            return None
        if leader.name == me.name or leader.address == me.address:
            return None
        return leader

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def send(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> Forwarded | None:
        """One try at the leader; its answer, or None when there is none to be had (no
        leader known, a connection error, a timeout)."""
        leader = self.target()
        if leader is None:
            self.failed += 1
            return None
        assert leader.address is not None
        url = leader.address.rstrip("/") + path
        sent = {k: v for k, v in headers.items() if k.lower() in _PASSED_ON}
        sent[FORWARDED_BY] = self.elector.me.name
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http().request(
                    method, url, data=body, headers=sent, allow_redirects=False
                ) as response:
                    raw = await response.read()
                    answer = Forwarded(
                        response.status,
                        raw,
                        response.content_type,
                        response.headers.get(SERVED_BY, leader.name),
                        tuple(
                            (name, response.headers[name])
                            for name in _PASSED_BACK
                            if name in response.headers
                        ),
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.failed += 1
            log.warning(
                'event=forward_failed method=%s path=%s leader=%s address=%s error="%r"',
                method,
                path,
                leader.name,
                leader.address,
                exc,
            )
            return None
        self.forwarded += 1
        log.info(
            "event=forwarded method=%s path=%s leader=%s status=%d",
            method,
            path,
            answer.served_by,
            answer.status,
        )
        return answer

    async def forward(self, request: web.Request) -> web.Response | None:
        """The leader's answer to ``request`` as this daemon's, or None (answer 503)."""
        body = await request.read()  # bounded by the app's client_max_size
        answer = await self.send(request.method, request.path_qs, body, request.headers)
        if answer is None:
            return None
        headers = dict(answer.headers)
        headers[SERVED_BY] = answer.served_by
        return web.Response(
            status=answer.status,
            body=answer.body,
            content_type=answer.content_type,
            headers=headers,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
