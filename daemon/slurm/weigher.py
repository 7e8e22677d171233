"""``slurm.node_weights: kept`` (external mode): shoal sets its nodes' Slurm ``Weight`` at
every read, so Slurm starts a new job on a node that is kept anyway.

Slurm starts a job on the lowest-``Weight`` nodes that fit it. With ``price`` (the default) a
dynamic node registers with its type's rank by price and keeps it. With ``kept`` it
registers last of its rank (``scaler.order.idle_weight``), and after every read the
``Weigher`` (a source listener) works out each of shoal's nodes' weight from the jobs the
read shows running on it (``scaler.order.kept_weight``: within the rank, lower the longer its
jobs are expected to hold it) and sets the ones that changed with ``scontrol update
NodeName=<nodes> Weight=<w>``, one command per weight. A node about to empty then takes no
new job while a node kept anyway has room, and is removed once idle.

What it set is kept in memory, not read back from Slurm: after a restart every node is set
once again. A failed command is logged and counted (``shoal_slurm_weight_updates_total``);
its nodes are tried again after the next read (a command for several nodes that fails is
tried node by node at once: one unknown name, a node deleted meanwhile, fails the whole
command). One update runs at a time; a read that comes
while one runs is worked out again at the next read. Weights only order where Slurm starts
jobs: a late or lost update costs placement quality, never a job or a node.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from shoal.daemon.slurm.client import SlurmClient
from shoal.daemon.slurm.conf import weights
from shoal.daemon.slurm.constants import SHOAL_FEATURE
from shoal.daemon.slurm.errors import SlurmError
from shoal.scaler.order import kept_weight, remaining

if TYPE_CHECKING:
    from shoal.daemon.loop import Controller
    from shoal.daemon.slurm.metrics import SlurmMetrics
    from shoal.daemon.slurm.source import SlurmSnapshot

__all__ = ["Weigher"]

log = logging.getLogger(__name__)


class Weigher:
    """Sets shoal's dynamic nodes' Slurm weights after each read (see the module docstring)."""

    def __init__(
        self, client: SlurmClient, controller: Controller, metrics: SlurmMetrics | None = None
    ) -> None:
        self.client = client
        self.controller = controller
        self.metrics = metrics
        self.applied: dict[str, int] = {}  # node -> the weight this daemon set
        self._task: asyncio.Task[None] | None = None

    def wanted(self, snapshot: SlurmSnapshot) -> dict[str, int]:
        """Node -> its weight, for each of shoal's nodes the read shows whose instance the
        tracker knows the type of."""
        rank = weights(self.controller.policy)
        jobs: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
        for job in snapshot.demand.demand.running:
            jobs[job.node_id].append((job.shape.wallTime, job.elapsed))
        out = {}
        tracker = self.controller.tracker
        for node in snapshot.nodes:
            tracked = tracker.get(node.name)
            if SHOAL_FEATURE not in node.features or tracked is None:
                continue
            if tracked.node_type in rank:
                out[node.name] = kept_weight(rank[tracked.node_type], remaining(jobs[node.name]))
        return out

    def observe(self, snapshot: SlurmSnapshot) -> None:
        """A source listener: start setting what changed, unless an update still runs or
        this daemon's controller is stopped (``ha``: a follower's source reads too, and a
        deposed leader's tracker still knows its nodes)."""
        if self.controller.stopping:
            self.applied.clear()  # another leader sets weights now: all again next term
            return
        wanted = self.wanted(snapshot)
        self.applied = {k: v for k, v in self.applied.items() if k in wanted}
        changed = {k: v for k, v in wanted.items() if self.applied.get(k) != v}
        if changed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._apply(changed))

    async def _apply(self, changed: dict[str, int]) -> None:
        by_weight: defaultdict[int, list[str]] = defaultdict(list)
        for name, weight in changed.items():
            by_weight[weight].append(name)
        for weight, names in sorted(by_weight.items()):
            names.sort()
            if not await self._set(names, weight) and len(names) > 1:
                # one unknown name (a node deleted meanwhile) fails the whole command
                for name in names:
                    await self._set([name], weight)

    async def _set(self, names: list[str], weight: int) -> bool:
        try:
            await self.client.update_nodes(names, Weight=str(weight))
        except SlurmError as exc:
            log.warning(
                'event=slurm_weight_failed nodes=%s weight=%d error="%s"',
                ",".join(names),
                weight,
                exc,
            )
            if len(names) == 1:
                self._count("failed", 1)
            for name in names:  # Slurm may have taken it (a lost answer): set it again
                self.applied.pop(name, None)
            return False
        self.applied.update(dict.fromkeys(names, weight))
        self._count("set", len(names))
        log.info("event=slurm_weight nodes=%s weight=%d", ",".join(names), weight)
        return True

    def _count(self, result: str, nodes: int) -> None:
        if self.metrics is not None:
            self.metrics.slurm_weight_updates.labels(result=result).inc(nodes)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
