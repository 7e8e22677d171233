"""Leader election: of two or three daemons for one cluster, only the leader plans and acts.

A ``LeaderElector`` campaigns for one key held with a lease (etcd's, ``etcd.EtcdElector``;
or ``memory.MemoryElection``'s, on the injected clock, for the unit tests and the chaos
harness). ``campaign()`` returns once this daemon leads; ``lost()`` returns when it leads no
more; ``resign()`` gives the lease back (a clean stop: another daemon leads within
milliseconds); ``epoch`` numbers the term (etcd: the key's create revision, which only grows),
for the fencing (``daemon.leader.state``: the durable state's writes; the request ids and
the ``shoal:epoch`` tag of every launch).

The split-brain guard is here, once, in ``LeaseElector``, under every implementation: a term
has a renewer (renews the lease every ttl/3, and again soon after a failed try) and a guard
that reads no I/O. The guard steps down on a LOCAL deadline, ``ttl - margin`` after the SEND
time of the last renewal the store confirmed (the store's own expiry is at least ``ttl`` after
that send), so a renewer that hangs, dies silently or cannot reach the store never leaves this
daemon acting after its lease could have passed to another: the ``margin`` (``lease_margin``)
is the time actuation has to stop (``daemon.service`` gives the pass in flight half of it, then
cancels). A renewal the store refuses (the lease is gone) steps down at once.

``daemon.leader.gate`` wires it into the daemon: the ``shoal_leader`` gauge, the ``/v1/status``
section, and the followers' answers over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from shoal.runtime.clock import Clock, sleep_or_event

__all__ = ["LeaderElector", "LeaderInfo", "LeaseElector", "Term", "default_name", "lease_margin"]

log = logging.getLogger(__name__)


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_margin(ttl: float) -> float:
    """How long before its lease can expire a leader that could not renew stops acting: a
    quarter of the TTL, at least half a second (a renewal every ttl/3 may fail once)."""
    return max(0.5, ttl / 4)


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """Who holds (or campaigns for) the key: what the key's value carries."""

    name: str
    address: str | None = None  # where followers send callers (the leader's API)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> LeaderInfo:
        address = value.get("address")
        return cls(str(value.get("name", "?")), address if isinstance(address, str) else None)


class LeaderElector(Protocol):
    """One daemon's side of the election."""

    me: LeaderInfo

    @property
    def is_leader(self) -> bool: ...

    @property
    def epoch(self) -> int | None:
        """This term's number while leading (grows from term to term), else None."""
        ...

    @property
    def leader(self) -> LeaderInfo | None:
        """The holder as last seen (this daemon while it leads); None: nobody known."""
        ...

    async def campaign(self) -> None:
        """Return once this daemon leads (at once if it does)."""
        ...

    async def lost(self) -> None:
        """Return once this daemon leads no more (at once if it does not lead)."""
        ...

    async def resign(self) -> None:
        """Stop leading and give the lease back, so another daemon leads at once."""
        ...

    def step_down(self, reason: str) -> None:
        """Stop leading now, keeping the lease (a state write was fenced: another term
        began); ``lost()`` returns and the next ``campaign`` starts over."""
        ...

    async def close(self) -> None: ...


@dataclass(eq=False)
class Term:
    """One term of leadership: its epoch, the lease, and when it must end at the latest."""

    epoch: int
    lease: Any
    deadline: float  # monotonic: step down then unless a renewal moves it
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class LeaseElector:
    """The lease logic every store shares: campaign, renew, guard, step down, resign.
    A store implements ``_acquire`` (put-if-absent with a new lease: the epoch, or None and
    the holder), ``_renew`` (False: the lease is gone), ``_release`` and ``_wait_vacancy``."""

    def __init__(self, clock: Clock, me: LeaderInfo, ttl: float) -> None:
        self.clock = clock
        self.me = me
        self.ttl = ttl
        self.margin = lease_margin(ttl)
        self.renew_every = ttl / 3
        # after a failed renewal, the next try comes this soon: an etcd electing a new raft
        # leader (1-2 s) answers again well within the deadline, which a wait of a whole
        # ``renew_every`` could pass (a 5 s lease stepped down so on losing its raft leader)
        self.retry_every = min(self.renew_every, max(0.1, ttl / 40))
        self._term: Term | None = None
        self._leader: LeaderInfo | None = None
        self.terms = 0  # terms begun, for the tests and the log

    # -- the store's part ---------------------------------------------------------------------

    async def _acquire(self) -> tuple[int | None, Any, LeaderInfo | None]:
        """Put-if-absent: (epoch, lease, me) when this daemon now holds the key, else
        (None, a token for ``_wait_vacancy``, the holder)."""
        raise NotImplementedError

    async def _renew(self, lease: Any) -> bool:
        raise NotImplementedError

    async def _release(self, lease: Any) -> None:
        raise NotImplementedError

    async def _wait_vacancy(self, token: Any) -> None:
        """Return when the key may be free (deleted, or its holder's lease could have
        expired); returning early only costs one more ``_acquire``."""
        raise NotImplementedError

    # -- the protocol -------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._term is not None and not self._term.ended.is_set()

    @property
    def epoch(self) -> int | None:
        return self._term.epoch if self.is_leader and self._term is not None else None

    @property
    def leader(self) -> LeaderInfo | None:
        return self.me if self.is_leader else self._leader

    async def campaign(self) -> None:
        while not self.is_leader:
            sent = self.clock.monotonic()
            try:
                epoch, token, holder = await self._acquire()
            except Exception as exc:
                log.warning('event=campaign_failed name=%s error="%r"', self.me.name, exc)
                await self.clock.sleep(self.renew_every)
                continue
            if epoch is not None:
                self._begin(epoch, token, sent)
                return
            self._leader = holder
            try:
                await self._wait_vacancy(token)
            except Exception as exc:
                log.warning('event=watch_failed name=%s error="%r"', self.me.name, exc)
                await self.clock.sleep(self.renew_every)

    async def lost(self) -> None:
        term = self._term
        if term is not None:
            await term.ended.wait()

    async def resign(self) -> None:
        term = self._term
        if term is None or term.ended.is_set():
            return
        self._end(term, "resigned")
        await self._release(term.lease)

    def step_down(self, reason: str) -> None:
        term = self._term
        if term is not None:
            self._end(term, reason)

    async def close(self) -> None:
        term = self._term
        if term is not None and not term.ended.is_set():
            self._end(term, "closed")
        if term is not None:
            await self._cancel(term)

    # -- a term ---------------------------------------------------------------------------------

    def _begin(self, epoch: int, lease: Any, sent: float) -> None:
        term = Term(epoch, lease, sent + self.ttl - self.margin)
        self._term, self._leader = term, self.me
        self.terms += 1
        term.tasks = [
            asyncio.create_task(self._renewer(term), name="shoal-leader-renew"),
            asyncio.create_task(self._guard(term), name="shoal-leader-guard"),
        ]
        log.info("event=leading name=%s epoch=%d ttl=%.0fs", self.me.name, epoch, self.ttl)

    def _end(self, term: Term, reason: str) -> None:
        """Step down now (no await: nothing can act between the decision and the flag)."""
        if term.ended.is_set():
            return
        term.reason = reason
        term.ended.set()
        self._leader = None
        current = asyncio.current_task()
        for task in term.tasks:
            if task is not current:
                task.cancel()
        log.warning(
            "event=leadership_lost name=%s epoch=%d reason=%s", self.me.name, term.epoch, reason
        )

    async def _cancel(self, term: Term) -> None:
        for task in term.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _renewer(self, term: Term) -> None:
        """Renews every ``renew_every`` from the last renewal SENT (a slow answer does not
        push the next one back), and ``retry_every`` after a failed one. The first failure of
        a run is a warning, the rest debug, and the renewal that ends the run says how long."""
        wait = self.renew_every
        failed, since = 0, 0.0
        while not term.ended.is_set():
            await sleep_or_event(self.clock, wait, term.ended)
            if term.ended.is_set():
                return
            sent = self.clock.monotonic()
            try:
                alive = await self._renew(term.lease)
            except Exception as exc:  # tried again soon; the guard steps down if this goes on
                failed, since = failed + 1, since if failed else sent
                level = logging.WARNING if failed == 1 else logging.DEBUG
                log.log(level, 'event=lease_renew_failed epoch=%d error="%r"', term.epoch, exc)
                wait = self.retry_every
                continue
            if not alive:
                self._end(term, "lease-expired")
                return
            term.deadline = max(term.deadline, sent + self.ttl - self.margin)
            if failed:
                log.info(
                    "event=lease_renewed epoch=%d failures=%d for=%.1fs",
                    term.epoch,
                    failed,
                    sent - since,
                )
                failed = 0
            wait = max(0.0, sent + self.renew_every - self.clock.monotonic())

    async def _guard(self, term: Term) -> None:
        """Steps down at the local deadline; reads only the clock."""
        while not term.ended.is_set():
            left = term.deadline - self.clock.monotonic()
            if left <= 0:
                # no release here: the lease runs out ``margin`` from now, the time the
                # daemon's actuation has to stop (a release would hand the key over now)
                self._end(term, "renewal-deadline")
                return
            await sleep_or_event(self.clock, left, term.ended)
