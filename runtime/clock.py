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
    and leaves no task behind, cancelled or not."""
    waits = {asyncio.ensure_future(event.wait()): event for event in events}
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        done, _ = await asyncio.wait({timer, *waits}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (timer, *waits):
            task.cancel()
        await asyncio.gather(timer, *waits, return_exceptions=True)
    return {waits[task] for task in done if task in waits}
