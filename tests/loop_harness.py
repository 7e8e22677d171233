"""The daemon tests' harness: the simulated cloud on a FakeClock, real config, real planner.

A module of its own (not ``tests/daemon/conftest.py``), so a test imports it by one name
whatever other ``conftest`` modules the same pytest run has loaded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import configs
from shoal.daemon.config import ShoalConfig
from shoal.daemon.demand import DemandUpdate
from shoal.daemon.loop import Controller
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.service import build_controller, build_provider
from shoal.daemon.views import status_json
from shoal.runtime.testing import FakeClock, InlineExecutor
from shoal.scaler.model import Demand, QueuedJobs, RunningJob
from shoal.scaler.shape import Shape

if TYPE_CHECKING:
    from shoal.providers.simulated import SimulatedProvisioner

__all__ = [
    "GIB",
    "Harness",
    "config_dict",
    "drive",
    "jobs",
    "make_harness",
    "running",
]

GIB = 1024**3
ZONE = "us-west-2a"
T = TypeVar("T")


def config_dict(**overrides: Any) -> dict[str, Any]:
    """A valid config: the simulated cloud, one on-demand node type, small timings."""
    base = configs.config(
        provider={"zone": ZONE, "boot_delay": "20s", "join_delay": "10s"},
        scaler={
            "interval": "30s",
            "debounce": "200ms",
            "beta_inertia": 0.0,
            "unneeded_time": "10m",
            "join_timeout": "15m",
            "scale_down_budget": 1.0,
            "retry": {"attempts": 4, "initial": "1s", "max": "2s", "deadline": "60s"},
        },
        demand={"reports": ["queued", "running"]},
    )
    return configs.merge(base, overrides)


def jobs(
    count: int, cores: float = 1, memory: float = 1 * GIB, preemptible: bool = False
) -> Demand:
    # Two hours: longer than the planner's target time, so no two jobs share a core one
    # after the other and "8 one-core jobs need 2 four-core nodes" holds.
    return Demand(queued=(QueuedJobs(Shape(7200, memory, cores, GIB, preemptible), count),))


def running(*node_ids: str, cores: float = 1) -> Demand:
    shape = Shape(3600, GIB, cores, GIB, False)
    return Demand(running=tuple(RunningJob(shape, n, elapsed=60) for n in node_ids))


async def drive(clock: FakeClock, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``, moving the fake clock whenever the loop is idle, so retry backoffs
    and timers elapse without sleeping."""
    return await clock.run_until(awaitable)


@dataclass
class Harness:
    clock: FakeClock
    config: ShoalConfig
    provider: SimulatedProvisioner
    controller: Controller
    metrics: ShoalMetrics

    jobs = staticmethod(jobs)
    running = staticmethod(running)
    config_dict = staticmethod(config_dict)

    async def settle(self) -> None:
        """Let every runnable task run up to its next wait, without time passing."""
        await self.clock.settle()

    async def drive(self, awaitable: Awaitable[T]) -> T:
        return await drive(self.clock, awaitable)

    def status(self) -> dict[str, Any]:
        return status_json(self.controller)

    def launch_calls(self) -> list[Any]:
        """RunInstances calls: one per offering tried."""
        return [c for c in self.provider.calls if c.operation == "RunInstances"]

    async def pass_(self) -> Any:
        return await drive(self.clock, self.controller.run_pass())

    def set_demand(self, demand: Demand, joined: set[str] | None = None) -> None:
        self.controller.set_demand(
            DemandUpdate(demand, frozenset(joined) if joined is not None else None)
        )

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def states(self) -> dict[str, str]:
        """Node id -> the tracker's state for it."""
        return {t.id: t.state.value for t in self.controller.tracker.all()}

    async def one_ready_node(self) -> str:
        """Four one-core jobs launch one node; a minute later it has joined and is ready."""
        self.set_demand(self.jobs(4))
        await self.pass_()
        await self.clock.advance(60)
        await self.pass_()
        (node,) = self.states()
        return node


async def make_harness(
    clock: FakeClock,
    config: ShoalConfig,
    provider: SimulatedProvisioner | None = None,
    **controller_kwargs: Any,
) -> Harness:
    """The daemon's own wiring (``build_controller``) over the simulated cloud on ``clock``;
    threads run inline so the loop's idleness is observable (``FakeClock.settle``)."""
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    provider = provider or build_provider(config, clock)  # type: ignore[assignment]
    assert provider is not None
    metrics = ShoalMetrics()
    controller = await build_controller(
        config, provider, clock, metrics=metrics, **controller_kwargs
    )
    return Harness(clock, config, provider, controller, metrics)
