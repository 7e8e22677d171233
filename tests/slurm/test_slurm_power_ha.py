"""Issue 21: when a term ends (``ha``), the power saver stops serving the requests it had in
hand, as the controller stops; the next term serves them again once it reconciled."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shoal.providers.errors import RetryableError
from shoal.runtime.testing import FakeClock
from test_slurm_power import start


async def test_a_term_end_stops_the_requests_in_hand_and_the_next_term_serves_them(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    d = await start(tmp_path, clock)
    controller = d.power.controller
    busy = RetryableError("throttled", code="RequestLimitExceeded")
    d.provider.fail_next(busy, "RunInstances", n=1000)  # the worker retries, in hand
    run = asyncio.create_task(d.power.run())
    await d.power.accept("resume", "cloud1")
    await clock.advance(0.5)
    assert d.provider.worker_names() == [] and not d.power._workers["cloud1"].done()

    # the term ends as daemon.service ends it: the integration's task cancelled, the
    # controller stopped
    run.cancel()
    controller.stop()
    await asyncio.gather(run, return_exceptions=True)
    d.provider.reset_faults()
    tried = d.launches()
    await clock.advance(60)
    assert d.launches() == tried  # the deposed leader asked the cloud for nothing more
    assert set(d.power.state.requests) == {"cloud1"}  # left for the next term

    # the next term: run waits for its reconcile, then serves the request
    controller.resume()
    run = asyncio.create_task(d.power.run())
    await clock.advance(1)
    assert d.launches() == tried
    await clock.run_until(controller.reconcile())
    await d.served()
    assert len(d.provider.worker_names()) == 1 and set(await d.workers()) == {"cloud1"}
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
