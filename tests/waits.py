"""Waits that tests need and the daemon does not, kept out of production code.

``wait_for_pass`` waits for a pass of the control loop through its public
``Controller.on_pass`` callbacks: a future resolved by the callback, so nothing polls, sleeps
or counts loop yields. ``slurm_requests_served`` waits for the Slurm power saver's request
workers (the daemon cancels them at shutdown; their requests stay in the state file).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.daemon.loop import Controller, PassRecord
    from shoal.daemon.slurm.power import PowerSaver

__all__ = ["slurm_requests_served", "wait_for_pass"]


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


async def slurm_requests_served(power: PowerSaver) -> None:
    """Wait until every request the power saver has queued was handled."""
    while pending := [t for t in power._workers.values() if not t.done()]:
        await asyncio.gather(*pending, return_exceptions=True)
