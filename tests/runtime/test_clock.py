"""sleep_or_event: the wait the daemon's loop, the Slurm source and power saving share."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest
from shoal.runtime.clock import SystemClock, sleep_or_event
from shoal.runtime.testing import FakeClock


async def test_the_time_passing_ends_the_wait_with_no_event() -> None:
    clock = FakeClock()
    event = asyncio.Event()
    woken = await clock.run_until(sleep_or_event(clock, 30.0, event))
    assert woken == set()
    assert clock.monotonic() == 30.0
    assert clock.pending() == 0


async def test_an_event_set_ends_the_wait_early_and_is_named() -> None:
    clock = FakeClock()
    first, second = asyncio.Event(), asyncio.Event()
    wait = asyncio.ensure_future(sleep_or_event(clock, 30.0, first, second))
    await clock.advance(5.0)
    assert not wait.done()
    second.set()
    await clock.settle()
    assert wait.result() == {second}
    assert second.is_set()  # the caller clears it
    assert clock.pending() == 0  # the timer is cancelled, not left sleeping
    assert clock.monotonic() == 5.0


async def test_an_event_already_set_returns_at_once() -> None:
    clock = FakeClock()
    event = asyncio.Event()
    event.set()
    assert await sleep_or_event(clock, 30.0, event) == {event}
    assert clock.monotonic() == 0.0


async def test_cancelling_the_wait_leaves_no_task_behind() -> None:
    clock = FakeClock()
    event = asyncio.Event()
    before = asyncio.all_tasks()
    wait = asyncio.ensure_future(sleep_or_event(clock, 30.0, event))
    await clock.settle()
    wait.cancel()
    await clock.settle()
    assert wait.cancelled()
    assert asyncio.all_tasks() == before
    assert clock.pending() == 0


async def test_a_wait_on_an_event_already_set_still_lets_other_tasks_run() -> None:
    """A loop that waits on an event set again and again must not starve the others."""
    clock = FakeClock()
    event = asyncio.Event()
    event.set()
    ran: list[bool] = []

    async def other() -> None:
        ran.append(True)

    task = asyncio.ensure_future(other())  # ready to run before the wait begins
    assert await sleep_or_event(clock, 30.0, event) == {event}
    assert ran == [True]
    await task


async def test_the_wait_runs_no_task_of_its_own() -> None:
    """The background loops wait here every poll: a task per timer and per event was most of
    a chaos seed's loop turns. The waiting task is the only one."""
    clock = FakeClock()
    first, second = asyncio.Event(), asyncio.Event()
    before = asyncio.all_tasks()
    wait = asyncio.ensure_future(sleep_or_event(clock, 30.0, first, second))
    await clock.settle()
    assert asyncio.all_tasks() == before | {wait}
    assert clock.pending() == 1
    first.set()
    await clock.settle()
    assert wait.result() == {first}
    assert clock.pending() == 0
    second.set()  # the wait is over: its future is no longer among the event's waiters
    await clock.settle()


async def test_the_real_clock_wakes_the_wait_and_forgets_its_timer() -> None:
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    assert await sleep_or_event(SystemClock(), 0.0, event) == set()
    wait = asyncio.ensure_future(sleep_or_event(SystemClock(), 3600.0, event))
    await asyncio.sleep(0)
    timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert len(timers) == 1 and timers[0].when() > loop.time() + 3000
    event.set()
    assert await wait == {event}
    assert not [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]


async def test_settling_an_idle_loop_takes_no_turn_of_it() -> None:
    """The harnesses settle after every step and every sleeper they wake: on a loop with
    nothing ready, a turn would only run the settling task again."""
    clock = FakeClock()
    settle = clock.settle()
    with pytest.raises(StopIteration):  # done without suspending
        settle.send(None)
    ran: list[int] = []
    asyncio.get_running_loop().call_soon(ran.append, 1)
    await clock.settle()
    assert ran == [1]


class _Suspensions:
    """An awaitable that counts how often the one it wraps suspends its task."""

    def __init__(self, awaitable: Any) -> None:
        self.awaitable, self.count = awaitable, 0

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self.awaitable.__await__()
        value = None
        while True:
            try:
                step = inner.send(value)
            except StopIteration as stop:
                return stop.value
            self.count += 1
            value = yield step


async def test_settling_suspends_its_task_once_however_long_the_loop_runs() -> None:
    """A harness settles with its whole stack of coroutines above ``settle``: resuming them
    on every turn only to look at the queue was a good part of a chaos seed's CPU."""
    loop = asyncio.get_running_loop()
    turns: list[int] = []

    def chain() -> None:
        turns.append(1)
        if len(turns) < 50:
            loop.call_soon(chain)

    loop.call_soon(chain)
    settle = _Suspensions(FakeClock().settle())
    await settle
    assert len(turns) == 50
    assert settle.count == 1
