"""An election in memory, on the injected clock: the unit tests' and the chaos harness's etcd.

``MemoryElection`` is the store, shared by the electors of one test: one key, a lease that
expires ``ttl`` after the store received its last renewal (as etcd's does), a revision that
grows with every write (the epochs). Faults a real store has: ``partition(name)`` cuts an
elector off (its calls raise ``ConnectionError``, as a lost etcd does; its lease runs out on
the store's side), ``heal(name)`` undoes it; ``crash(name)`` stops an elector's renewals
without a word, as kill -9 does.

It also holds the leader's durable state (``state``, JSON text), written by
``daemon.leader.state.MemoryStateBackend`` only while ``holds(epoch)``, as etcd's txn does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from shoal.daemon.leader import LeaderInfo, LeaseElector
from shoal.runtime.clock import Clock, sleep_or_event

__all__ = ["MemoryElection", "MemoryElector"]


@dataclass
class _Hold:
    holder: LeaderInfo
    lease: int
    expires: float  # monotonic, on the store's clock


class MemoryElection:
    def __init__(self, clock: Clock, ttl: float) -> None:
        self.clock = clock
        self.ttl = ttl
        self.revision = 0
        self._hold: _Hold | None = None
        self._changed = asyncio.Event()
        self.cut_off: set[str] = set()
        self.grants: list[tuple[str, int]] = []  # (name, epoch), in order: the terms begun
        self.state: str | None = None  # the leader's durable state (daemon.leader.state)

    def elector(self, name: str, address: str | None = None) -> MemoryElector:
        return MemoryElector(self, LeaderInfo(name, address))

    def partition(self, name: str) -> None:
        self.cut_off.add(name)

    def heal(self, name: str) -> None:
        self.cut_off.discard(name)

    def holder(self) -> LeaderInfo | None:
        hold = self._live()
        return hold.holder if hold is not None else None

    def holds(self, who: LeaderInfo, epoch: int | None) -> bool:
        """Whether the term ``epoch`` still holds the key (etcd: its create revision)."""
        self._reach(who)
        hold = self._live()
        return hold is not None and epoch is not None and hold.lease == epoch

    def _live(self) -> _Hold | None:
        if self._hold is not None and self.clock.monotonic() >= self._hold.expires:
            self._drop()
        return self._hold

    def _drop(self) -> None:
        self._hold = None
        self.revision += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _reach(self, who: LeaderInfo) -> None:
        if who.name in self.cut_off:
            raise ConnectionError(f"{who.name} cannot reach the store")

    def acquire(self, who: LeaderInfo) -> tuple[int | None, Any, LeaderInfo | None]:
        self._reach(who)
        hold = self._live()
        if hold is not None:
            return None, hold.expires, hold.holder
        self.revision += 1
        self._hold = _Hold(who, self.revision, self.clock.monotonic() + self.ttl)
        self.grants.append((who.name, self.revision))
        return self.revision, self.revision, who

    def renew(self, who: LeaderInfo, lease: int) -> bool:
        self._reach(who)
        hold = self._live()
        if hold is None or hold.lease != lease:
            return False
        hold.expires = self.clock.monotonic() + self.ttl
        return True

    def release(self, who: LeaderInfo, lease: int) -> None:
        self._reach(who)
        hold = self._live()
        if hold is not None and hold.lease == lease:
            self._drop()

    async def wait_vacancy(self, expires: float) -> None:
        """Until the key is deleted or its lease could have run out."""
        await sleep_or_event(self.clock, expires - self.clock.monotonic(), self._changed)


class MemoryElector(LeaseElector):
    def __init__(self, election: MemoryElection, me: LeaderInfo) -> None:
        super().__init__(election.clock, me, election.ttl)
        self.election = election
        self.crashed = False

    def crash(self) -> None:
        """kill -9: renewals stop without a word; the lease runs out on the store's side."""
        self.crashed = True
        if self._term is not None:
            for task in self._term.tasks:
                task.cancel()

    async def _acquire(self) -> tuple[int | None, Any, LeaderInfo | None]:
        return self.election.acquire(self.me)

    async def _renew(self, lease: Any) -> bool:
        return self.election.renew(self.me, lease)

    async def _release(self, lease: Any) -> None:
        self.election.release(self.me, lease)

    async def _wait_vacancy(self, token: Any) -> None:
        await self.election.wait_vacancy(token)
