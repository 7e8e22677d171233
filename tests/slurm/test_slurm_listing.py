"""One listing of the cloud shared by a pass, the power saver and the clean-up loop
(``Controller.list_workers``), in the daemon's own wiring on the simulated cloud."""

from __future__ import annotations

from pathlib import Path

import pytest
from shoal.daemon.slurm.parse import SlurmNode
from shoal.runtime.testing import FakeClock
from test_slurm_power import Daemon, start


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Sinfo:
    """The Slurm client's node read, with no Slurm node (the clean-up needs nothing more)."""

    async def nodes(self) -> tuple[SlurmNode, ...]:
        return ()


def describes(d: Daemon) -> int:
    return sum(1 for c in d.provider.calls if c.operation == "DescribeInstances")


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
