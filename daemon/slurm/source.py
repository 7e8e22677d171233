"""The Slurm demand source (``demand.slurm``): squeue and sinfo, read every poll interval and at
once after a resume request (``poke``).

Each read yields a ``DemandUpdate`` observed at the poll time (``at``) that goes stale after
``max_age`` (a few poll intervals): queued jobs that wait for capacity, running jobs per node,
the nodes that joined (registered and responding) and the drained ones (never room) --
``daemon.slurm.demand.slurm_demand``.
Node names are translated to the daemon's node ids (``translate``: a power-saving node is
known by its instance's id; a dynamic node is named after its instance, so it is its own id).

A read that fails (slurmctld down, a command that times out, output that does not parse)
yields a ``DemandFailure`` and counts in ``shoal_slurm_read_failures_total``: the loop then
keeps the last demand as stale, launches and removes nothing, and ``/readyz`` says why. The
first read also takes ``scontrol show config`` (DefMemPerCPU for jobs without a memory
request, ResumeTimeout for the clean-up loop).

Every good read is also handed to ``listeners`` (the power saver and the clean-up loop watch
Slurm's node states through it) as a ``SlurmSnapshot``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, replace

from shoal.daemon.demand import DemandFailure, DemandUpdate
from shoal.daemon.slurm.client import SlurmClient
from shoal.daemon.slurm.demand import SlurmDemand, slurm_demand
from shoal.daemon.slurm.drain import drained_by_shoal
from shoal.daemon.slurm.errors import SlurmError
from shoal.daemon.slurm.metrics import SlurmMetrics
from shoal.daemon.slurm.parse import SlurmJob, SlurmNode, def_mem_per_cpu, parse_seconds
from shoal.runtime.clock import Clock, sleep_or_event
from shoal.scaler.model import Demand

__all__ = ["SlurmDemandSource", "SlurmSnapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SlurmSnapshot:
    """One good read of Slurm: its jobs and nodes at ``at``, and the demand they make."""

    at: float
    jobs: tuple[SlurmJob, ...]
    nodes: tuple[SlurmNode, ...]
    demand: SlurmDemand

    def node(self, name: str) -> SlurmNode | None:
        return next((n for n in self.nodes if n.name == name), None)


def _identity(name: str) -> str:
    return name


class SlurmDemandSource:
    """Polls Slurm on the injected clock; an async iterator of updates and failures."""

    name = "slurm"

    def __init__(
        self,
        client: SlurmClient,
        clock: Clock,
        *,
        poll_interval: float = 10.0,
        max_age: float | None = None,
        partitions: Collection[str] | None = None,
        default_wall_time: float = 3600.0,
        metrics: SlurmMetrics | None = None,
        translate: Callable[[str], str] = _identity,
    ) -> None:
        self.client = client
        self.clock = clock
        self.poll_interval = poll_interval
        self.max_age = max_age if max_age is not None else 3 * poll_interval
        self.partitions = frozenset(partitions) if partitions is not None else None
        self.default_wall_time = default_wall_time
        self.metrics = metrics
        self.translate = translate
        self.listeners: list[Callable[[SlurmSnapshot], None]] = []
        self.slurm_config: dict[str, str] | None = None
        self.last: SlurmSnapshot | None = None
        self.last_error: str | None = None
        self.failures = 0
        self._poke = asyncio.Event()

    def poke(self) -> None:
        """Read again at once (after a resume request), not at the next poll."""
        self._poke.set()

    def resume_timeout(self) -> float | None:
        """Slurm's ResumeTimeout in seconds, once the configuration was read."""
        if self.slurm_config is None:
            return None
        try:
            return parse_seconds(self.slurm_config.get("ResumeTimeout", ""))
        except ValueError:
            return None

    async def read(self) -> DemandUpdate | DemandFailure:
        """One read: the demand now, or why Slurm could not be read."""
        now = self.clock.now()
        try:
            if self.slurm_config is None:
                self.slurm_config = await self.client.config()
            jobs, nodes = await asyncio.gather(self.client.jobs(), self.client.nodes())
        except SlurmError as exc:
            self.failures += 1
            self.last_error = str(exc)
            command = exc.operation or "unknown"
            if self.metrics is not None:
                self.metrics.slurm_read_failures.labels(command=command).inc()
            log.warning('event=slurm_read_failed command=%s error="%s"', command, exc)
            return DemandFailure(f"slurm: {exc}", now)
        demand = slurm_demand(
            jobs,
            nodes,
            default_wall_time=self.default_wall_time,
            def_mem_per_cpu=def_mem_per_cpu(self.slurm_config),
            partitions=self.partitions,
        )
        snapshot = SlurmSnapshot(now, jobs, nodes, demand)
        self.last, self.last_error = snapshot, None
        for listener in list(self.listeners):
            try:
                listener(snapshot)
            except Exception as exc:
                log.error('event=slurm_listener_failed error="%r"', exc)
        return DemandUpdate(
            self._translated(demand.demand),
            frozenset(self.translate(n) for n in demand.joined),
            at=now,
            max_age=self.max_age,
            draining_nodes=frozenset(self.translate(n) for n in demand.draining),
            own_drains=frozenset(self.translate(n.name) for n in nodes if drained_by_shoal(n)),
        )

    def _translated(self, demand: Demand) -> Demand:
        running = tuple(replace(r, node_id=self.translate(r.node_id)) for r in demand.running)
        return replace(demand, running=running)

    async def updates(self) -> AsyncIterator[DemandUpdate | DemandFailure]:
        """A read now, then one every poll interval or at once after ``poke``."""
        while True:
            yield await self.read()
            await self._wait()

    async def _wait(self) -> None:
        try:
            await sleep_or_event(self.clock, self.poll_interval, self._poke)
        finally:
            self._poke.clear()
