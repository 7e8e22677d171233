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
from typing import Protocol

__all__ = ["Clock", "SystemClock", "sleep_or_event"]


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
