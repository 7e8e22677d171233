"""InlineExecutor: thread work run on the event loop's thread, under a fake clock."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest
from shoal.runtime.testing import InlineExecutor


async def test_thread_work_runs_inline_and_reaches_the_loop_without_its_self_pipe() -> None:
    """A worker thread's result reaches the loop through its self-pipe (two system calls);
    inline work is on the loop's thread already, so its result needs neither."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(InlineExecutor())
    wakes: list[str] = []
    write = loop._write_to_self  # type: ignore[attr-defined]

    def counted() -> None:
        wakes.append("write")
        write()

    loop._write_to_self = counted  # type: ignore[attr-defined]
    try:
        assert await asyncio.to_thread(threading.get_ident) == threading.get_ident()
        with pytest.raises(ZeroDivisionError):
            await asyncio.to_thread(lambda: 1 / 0)
    finally:
        del loop._write_to_self  # type: ignore[attr-defined]
    assert wakes == []


def test_off_the_loop_it_returns_a_concurrent_future() -> None:
    future = InlineExecutor().submit(sum, [1, 2])
    assert isinstance(future, concurrent.futures.Future)
    assert future.result() == 3
