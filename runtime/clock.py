"""The time source shared by every layer above ``scaler``, injected so tests never sleep.

``SystemClock`` is real time; ``Clock`` is what code takes. The fake is
``shoal.runtime.testing.FakeClock`` (the replay's virtual clock is one too): it only moves
when a test calls ``advance`` or ``run_until``; coroutines in ``await clock.sleep(d)`` wake
when the fake time passes their deadline, and run until the event loop is idle again before
time moves on: ``settle`` runs every callback that is ready until none is, however many steps
that takes, so no test depends on a number of loop turns. Work handed to a thread
(``asyncio.to_thread``) is invisible to that check; ``InlineExecutor``, installed as the
loop's default executor under a fake clock, runs it on the loop's own thread so it completes
within ``settle``. (``scaler`` never reads a clock: its callers pass ``now`` in.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

__all__ = ["Clock", "SystemClock", "sleep_or_event"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def wake_after(self, seconds: float, future: asyncio.Future[None]) -> None:
        """Resolve ``future`` (to None) once ``seconds`` have passed on this clock, unless it
        is done by then; nothing stays scheduled once it is done. ``sleep`` without a task."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def wake_after(self, seconds: float, future: asyncio.Future[None]) -> None:
        timer = future.get_loop().call_later(max(0.0, seconds), _resolve, future)
        future.add_done_callback(lambda _: timer.cancel())


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


async def sleep_or_event(
    clock: Clock, seconds: float, *events: asyncio.Event
) -> set[asyncio.Event]:
    """Sleep ``seconds`` on ``clock`` or until one of ``events`` is set, whichever comes
    first; returns the events set when the wait ended (none: the time passed). Clears
    nothing, and leaves nothing behind, cancelled or not. An event already set returns after
    one loop turn. The background loops wait here every poll, so it is lean: one future,
    resolved by the clock (``Clock.wake_after``) or by any of the events, and no task: the
    future waits in each event's own list of waiters, as ``Event.wait`` puts its own there
    (CPython's ``asyncio.Event._waiters``; ``Event.set`` resolves every future in it), so
    the waiting task resumes on the loop turn after the time passes or an event is set."""
    fired = {event for event in events if event.is_set()}
    if fired:
        await asyncio.sleep(0)  # a wait always yields: a caller looping on it cannot starve
        return fired
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    clock.wake_after(seconds, done)
    for event in events:
        event._waiters.append(done)  # type: ignore[attr-defined]
    try:
        await done
        return {event for event in events if event.is_set()}
    finally:
        if not done.done():
            done.cancel()  # the clock forgets a done future
        for event in events:
            event._waiters.remove(done)  # type: ignore[attr-defined]
