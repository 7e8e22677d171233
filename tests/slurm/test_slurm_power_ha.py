"""Issue 21: when a term ends (``ha``), the power saver stops serving the requests it had in
hand, as the controller stops; the next term serves them again once it reconciled. A deposed
leader's clean-up changes nothing in Slurm."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shoal.daemon.leader.memory import MemoryElection
from shoal.daemon.leader.state import MemoryStateBackend
from shoal.daemon.service import fence_handler
from shoal.daemon.slurm.constants import SINFO_FIELDS
from shoal.daemon.slurm.parse import SlurmNode, parse_sinfo
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


class Slurm:
    """slurmctld as the clean-up sees it: one cloud node left DOWN by a failed resume, with
    no instance (a repair: POWER_DOWN); every change asked of it recorded."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []

    async def nodes(self) -> tuple[SlurmNode, ...]:
        state, reason = "down+cloud+powered_down+not_responding", "ResumeTimeout reached"
        fields = {"nodelist": "cloud1", "statecomplete": state, "cpusstate": "0/2/0/2"}
        fields |= {"features": "(null)", "nodeaddr": "127.0.0.1", "reason": reason}
        return parse_sinfo("\t".join(fields[f] for f in SINFO_FIELDS))

    async def set_down(self, node: str, reason: str) -> None:
        self.changes.append(("down", node))

    async def power_down(self, node: str) -> None:
        self.changes.append(("power_down", node))

    async def delete_nodes(self, node: str) -> None:
        self.changes.append(("delete", node))


async def test_a_deposed_leaders_clean_up_changes_nothing_in_slurm(tmp_path: Path) -> None:
    """The clean-up's repairs change Slurm (DOWN, POWER_DOWN, delete) as well as the cloud: a
    deposed leader whose guard has not fired confirms its term first, and repairs nothing
    (the new leader may be resuming that node); while its term holds, it repairs."""
    clock = FakeClock()
    election = MemoryElection(clock, 10.0)
    a = election.elector("a")
    await clock.run_until(a.campaign(), limit=30)
    d = await start(tmp_path, clock, state_backend=MemoryStateBackend(election, a.me))
    controller = d.power.controller
    await controller.begin_term(a.epoch or 0)
    controller.store.on_fenced[:] = [fence_handler(a, a.epoch or 0)]
    slurm = Slurm()
    d.slurm.cleaner.client = slurm  # type: ignore[assignment]

    a.crash()  # renewals and guard stop: a still believes it leads
    await clock.advance(11)
    b = election.elector("b")
    await clock.run_until(b.campaign(), limit=30)
    repairs = await clock.run_until(d.slurm.cleaner.once())
    assert [(r.kind.value, r.node) for r in repairs] == [("down_without_instance", "cloud1")]
    assert slurm.changes == []
    assert not a.is_leader  # the refusal ended its term

    await b.resign()  # a leads again: its repairs go through
    await clock.run_until(a.campaign(), limit=30)
    await controller.begin_term(a.epoch or 0)
    controller.store.on_fenced[:] = [fence_handler(a, a.epoch or 0)]
    await clock.run_until(d.slurm.cleaner.once())
    assert slurm.changes == [("power_down", "cloud1")]
    await a.close()
