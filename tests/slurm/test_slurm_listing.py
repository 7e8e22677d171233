"""One listing of the cloud shared by a pass, the power saver and the clean-up loop
(``Controller.list_workers``), in the daemon's own wiring on the simulated cloud."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from shoal.daemon.slurm.parse import SlurmNode
from shoal.runtime.testing import FakeClock
from test_slurm_cleanup import slurm_node
from test_slurm_power import Daemon, start


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Sinfo:
    """The Slurm client's node read, with no Slurm node (the clean-up needs nothing more),
    or the ``shown`` ones."""

    def __init__(self, *shown: SlurmNode) -> None:
        self.shown = shown

    async def nodes(self) -> tuple[SlurmNode, ...]:
        return self.shown


def describes(d: Daemon) -> int:
    return sum(1 for c in d.provider.calls if c.operation == "DescribeInstances")


def scale_down_causes(d: Daemon) -> list[tuple[str, float]]:
    """``shoal_scale_downs_total``: (cause, count) of each series."""
    return [
        (sample.labels["cause"], sample.value)
        for metric in d.metrics.scale_downs.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    ]


async def resumed(d: Daemon, node: str) -> None:
    await d.power.accept("resume", node)
    await d.served()


async def test_a_pass_a_resume_and_a_clean_up_make_one_listing(
    tmp_path: Path, clock: FakeClock
) -> None:
    d = await start(tmp_path, clock)
    d.slurm.cleaner.client = Sinfo()  # type: ignore[assignment]
    await resumed(d, "cloud1")
    controller = d.slurm.controller
    assert controller is not None
    before = describes(d)
    await clock.run_until(controller.run_pass())
    await resumed(d, "cloud1")  # again: its instance serves it, from the pass's listing
    await clock.run_until(d.slurm.cleaner.once())
    assert describes(d) == before + 1
    assert d.launches() == 1


async def test_a_launch_between_makes_the_clean_up_list_again(
    tmp_path: Path, clock: FakeClock
) -> None:
    d = await start(tmp_path, clock, orphan_grace="1s")
    d.slurm.cleaner.client = Sinfo()  # type: ignore[assignment]
    controller = d.slurm.controller
    assert controller is not None
    await clock.run_until(controller.run_pass())
    before = describes(d)
    await resumed(d, "cloud2")  # the pass's listing serves the check, then it launches
    assert describes(d) == before
    await clock.advance(2)  # past the grace; the pass's listing is still young
    repairs = await clock.run_until(d.slurm.cleaner.once())
    assert describes(d) == before + 1  # the launch retired the shared listing
    # the clean-up saw the new instance (its Slurm node does not exist here: an orphan)
    assert [(r.kind.value, r.node) for r in repairs] == [("orphan", "cloud2")]


async def test_an_orphan_slurm_gave_up_on_at_resume_timeout_is_a_join_timeout(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The clean-up may read a never-registered node down~ ("ResumeTimeout reached") a
    moment before slurmctld runs ResumeFailProgram (seen on a real slurmctld, 1 run in 4):
    it terminates the instance as the resume-fail request would, as a join timeout with its
    offering backed off, not as a plain orphan whose offering is tried again at once."""
    d = await start(tmp_path, clock, orphan_grace="1s")
    await resumed(d, "cloud2")
    await clock.advance(2)
    down = slurm_node("cloud2", "down+cloud+powered_down", "ResumeTimeout reached")
    d.slurm.cleaner.client = Sinfo(down)  # type: ignore[assignment]
    repairs = await clock.run_until(d.slurm.cleaner.once())
    assert [(r.kind.value, r.node, r.never_registered) for r in repairs] == [
        ("orphan", "cloud2", True)
    ]
    assert (await d.workers()).get("cloud2", []) == []
    assert scale_down_causes(d) == [("join-timeout", 1.0)]
    controller = d.slurm.controller
    assert controller is not None
    assert controller.backoff.unavailable(clock.now())  # its offering is backed off


async def test_an_orphan_the_listing_still_shows_after_its_termination_backs_off_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    """review (reviewy): the clean-up terminated a never-registered orphan as a join timeout;
    slurmctld's resume-fail request for its node comes next, and the cloud's listing, as
    eventually consistent as it is (the tracker keeps TERMINATED for an instance "still
    listed until the cloud catches up"), still shows the instance: the request terminates it
    again. It is one join timeout: counted once, its offering backed off once (a second
    failure doubles the block; before the clean-up backed off, this was one as well)."""
    d = await start(tmp_path, clock, orphan_grace="1s")
    await resumed(d, "cloud2")
    await clock.advance(2)
    down = slurm_node("cloud2", "down+cloud+powered_down", "ResumeTimeout reached")
    d.slurm.cleaner.client = Sinfo(down)  # type: ignore[assignment]
    controller = d.slurm.controller
    assert controller is not None
    stale = await controller.provider.getProvisionedWorkers()
    await clock.run_until(d.slurm.cleaner.once())

    async def listing() -> list[Any]:
        return list(stale)  # the terminated instance, still listed

    controller.provider.getProvisionedWorkers = listing  # type: ignore[method-assign]
    await d.power.accept("resume_fail", "cloud2")
    await d.served()
    assert scale_down_causes(d) == [("join-timeout", 1.0)]
    (entry,) = controller.backoff.entries.values()
    assert entry.failures == 1
