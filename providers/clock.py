"""The time source shared by providers and the daemon, injected so tests never sleep.

``SystemClock`` is real time. ``FakeClock`` only moves when a test calls ``advance`` or
``run_until``; coroutines in ``await clock.sleep(d)`` wake when the fake time passes their
deadline, and run until the event loop is idle again before time moves on: ``settle`` runs every
callback that is ready until none is, however many steps that takes, so no test depends on a
number of loop turns. Work handed to a thread (``asyncio.to_thread``) is invisible to that
check; ``InlineExecutor``, installed as the loop's default executor under a fake clock, runs it
on the loop's own thread so it completes within ``settle``.
(``scaler`` never reads a clock: its callers pass ``now`` in.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

__all__ = ["Clock", "FakeClock", "InlineExecutor", "SystemClock", "sleep_or_event"]

T = TypeVar("T")
SETTLE_LIMIT = 100_000  # callbacks in a row before settle() calls the loop livelocked


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def sleep_or_event(
    clock: Clock, seconds: float, *events: asyncio.Event
) -> set[asyncio.Event]:
    """Sleep ``seconds`` on ``clock`` or until one of ``events`` is set, whichever comes
    first; returns the events that ended the wait (none: the time passed). Clears nothing,
    and leaves no task behind, cancelled or not. An event already set returns after one
    loop turn, with no task. The background loops wait here every poll, so it is lean: a
    task for the timer and one per event, each resolving a single future through a done
    callback, no ``asyncio.wait`` nor ``gather``."""
    fired = {event for event in events if event.is_set()}
    if fired:
        await asyncio.sleep(0)  # a wait always yields: a caller looping on it cannot starve
        return fired
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        if not done.done():
            done.set_result(None)

    waits = {loop.create_task(event.wait()): event for event in events}
    tasks = [loop.create_task(clock.sleep(seconds)), *waits]
    for task in tasks:
        task.add_done_callback(wake)
    try:
        await done
        return {event for task, event in waits.items() if task.done() and not task.cancelled()}
    finally:
        for task in tasks:
            task.remove_done_callback(wake)
            task.cancel()


class InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """An executor that runs each function at once on the submitting thread (the event loop's,
    for ``asyncio.to_thread``), so its result is ready as soon as the loop turns."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class FakeClock:
    """A clock that moves only when told. ``advance`` wakes sleepers in deadline order, each
    after the loop settled from the one before."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._start = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._start

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    def pending(self) -> int:
        """How many sleepers are waiting."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        """When the earliest sleeper wakes, or None when nobody sleeps on this clock."""
        while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    @staticmethod
    async def settle() -> None:
        """Let every task run until none can without time passing or outside I/O: until the
        loop has no ready callback left."""
        loop = asyncio.get_running_loop()
        ready = loop._ready  # type: ignore[attr-defined]  # CPython's queue of ready callbacks
        for _ in range(SETTLE_LIMIT):
            await asyncio.sleep(0)
            if not ready:
                return
        raise RuntimeError(f"the event loop did not settle within {SETTLE_LIMIT} callbacks")

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its deadline and settling the loop."""
        target = self._now + seconds
        await self.settle()
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            _, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            future.set_result(None)
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()

    async def run_until(
        self,
        awaitable: Awaitable[T],
        *,
        limit: float = 30 * 24 * 3600.0,
        io_timeout: float = 10.0,
    ) -> T:
        """Await ``awaitable``, jumping the clock from deadline to deadline whenever the loop
        is idle, so backoffs and timers elapse at once. When nothing sleeps on the clock and the
        awaitable is not done, it waits for outside I/O (a subprocess, a socket) for up to
        ``io_timeout`` real seconds. Raises ``TimeoutError`` past ``limit`` fake seconds."""
        task = asyncio.ensure_future(awaitable)
        end = self._now + limit
        io_waited = 0.0
        while True:
            await self.settle()
            if task.done():
                return task.result()
            deadline = self.next_deadline()
            if deadline is None:  # waiting on outside I/O: give it real time, a little at once
                if io_waited >= io_timeout:
                    task.cancel()
                    raise TimeoutError(f"nothing sleeps on the clock and no I/O in {io_timeout}s")
                await asyncio.wait({task}, timeout=0.01)
                io_waited += 0.01
                continue
            io_waited = 0.0
            if deadline > end:
                task.cancel()
                raise TimeoutError(f"not done within {limit} fake seconds")
            await self.advance(deadline - self._now)
