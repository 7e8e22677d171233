"""The fake clock: time that moves only when told, for tests and the replay (``shoal simulate``
runs the daemon's controller on one), and the executor that runs thread work inline under it.
See ``shoal.runtime.clock`` for how it settles the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["FakeClock", "InlineExecutor"]

T = TypeVar("T")
SETTLE_LIMIT = 100_000  # callbacks in a row before settle() calls the loop livelocked


class InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """An executor that runs each function at once on the submitting thread (the event loop's,
    for ``asyncio.to_thread``), so its result is ready as soon as the loop turns.

    Submitted on the event loop's thread (``run_in_executor``), it returns an asyncio future
    the loop resolves on its next turn, which ``run_in_executor`` hands on as it is: the
    awaiting task resumes on the same turn as with a concurrent future, whose completion
    reaches the loop through ``call_soon_threadsafe`` and a write to the loop's self-pipe
    (a system call, and one more for the loop to read it), as a worker thread's would."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop's thread
            return future
        waiter: asyncio.Future[Any] = loop.create_future()
        loop.call_soon(_copy_outcome, future, waiter)
        return waiter


def _copy_outcome(source: concurrent.futures.Future[Any], waiter: asyncio.Future[Any]) -> None:
    if waiter.done():  # cancelled: the awaiting task was
        return
    exc = source.exception()
    if exc is None:
        waiter.set_result(source.result())
    else:
        waiter.set_exception(exc)


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

    def wake_after(self, seconds: float, future: asyncio.Future[None]) -> None:
        """``sleep`` without a task: ``future`` joins the sleepers, resolved at its deadline
        (the next loop turn for ``seconds <= 0``, as ``sleep`` yields once); once it is done
        (cancelled, or resolved by someone else) it is skipped."""
        if seconds <= 0:
            future.get_loop().call_soon(lambda: future.done() or future.set_result(None))
            return
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))

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
        if not ready:  # nothing else can run: a turn of the loop would run this task alone
            return
        # a plain callback looks at the queue on each turn, where this task would resume (and
        # with it every coroutine that awaits it, a harness's whole stack) only to look
        idle: asyncio.Future[None] = loop.create_future()
        turns = itertools.count(1)

        def look() -> None:
            if idle.done():  # the settling task was cancelled
                return
            if not ready:
                idle.set_result(None)
            elif next(turns) < SETTLE_LIMIT:
                loop.call_soon(look)
            else:
                idle.set_exception(
                    RuntimeError(f"the event loop did not settle within {SETTLE_LIMIT} callbacks")
                )

        loop.call_soon(look)
        await idle

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
