"""Wait for the control loop's passes through its public ``Controller.on_pass`` callbacks.

The daemon itself never waits for a pass number; tests do, so the wait lives here: a future
resolved by the pass callback, so nothing polls, sleeps or counts loop yields.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.daemon.loop import Controller, PassRecord

__all__ = ["wait_for_pass"]


async def wait_for_pass(controller: Controller, number: int) -> PassRecord:
    """Wait until pass ``number`` (1-based) has finished; return the last finished pass."""
    last = controller.last_pass
    if last is not None and last.number >= number:
        return last
    done: asyncio.Future[PassRecord] = asyncio.get_running_loop().create_future()

    def on_pass(record: PassRecord) -> None:
        if record.number >= number and not done.done():
            done.set_result(record)

    controller.on_pass.append(on_pass)
    try:
        return await done
    finally:
        controller.on_pass.remove(on_pass)
