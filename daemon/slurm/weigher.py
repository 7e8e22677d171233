"""External mode: shoal keeps its dynamic nodes' Slurm ``Weight`` as ``slurm.node_weights``
says, after every read (the ``Weigher``, a source listener of each read).

Slurm starts a job on the lowest-``Weight`` nodes that fit it.

- ``price`` (the default): a node weighs its type's rank by price, and registers so. The
  weigher sets it again when the rank moves: a reload that adds or reprices a type, or a
  spot price refresh that reorders them, would otherwise leave running nodes at their old
  rank.
- ``kept``: a node registers last of its rank (``scaler.order.idle_weight``), and weighs
  (``scaler.order.kept_weight``), within the rank, less the longer the jobs the read shows
  running on it are expected to hold it. A node about to empty then takes no new job while
  a node kept anyway has room, and is removed once idle.

The weights that changed are set with ``scontrol update NodeName=<nodes> Weight=<w>``, one
command per weight. What was set is kept in memory, not read back from Slurm: after a
restart (or a new ``ha`` term) the first read sets every node once again, a no-op for a node
whose weight did not move. A failed command is logged and counted
(``shoal_slurm_weight_updates_total``); a command for several nodes that fails is tried node
by node at once if Slurm refused it (one unknown name, a node deleted meanwhile, fails the
whole command), not if slurmctld did not answer (that ends the update), and what still
fails is set again after the next read. One update runs at a time; a read that
comes while one runs is worked out again at the next read. Only the leader sets weights
(the weigher of a controller stopped, or not reconciled in its term, does nothing; an
update running when the term ends sends no further command, and what it set is set again
in the next term). With ``ha`` an update first confirms the term with a fenced state write
(``Executor.confirm_term``), as the clean-up does: a deposed leader whose guard has not
fired yet changes no weight.
Weights only order where Slurm starts jobs: a late or lost update costs placement
quality, never a job or a node.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from shoal.daemon.slurm.client import SlurmClient
from shoal.daemon.slurm.conf import weights
from shoal.daemon.slurm.constants import SHOAL_FEATURE
from shoal.daemon.slurm.errors import SlurmError, SlurmUnavailableError
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
        self,
        client: SlurmClient,
        controller: Controller,
        metrics: SlurmMetrics | None = None,
        *,
        kept: bool = True,
    ) -> None:
        self.client = client
        self.kept = kept  # slurm.node_weights kept; else price (the rank alone)
        self.controller = controller
        self.metrics = metrics
        self.applied: dict[str, int] = {}  # node -> the weight this daemon set
        self._task: asyncio.Task[None] | None = None

    def wanted(self, snapshot: SlurmSnapshot) -> dict[str, int]:
        """Node -> its weight, for each of shoal's nodes the read shows whose instance the
        tracker knows the type of."""
        rank = weights(self.controller.policy)
        jobs: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
        for job in snapshot.demand.demand.running if self.kept else ():
            jobs[job.node_id].append((job.shape.wallTime, job.elapsed))
        out = {}
        tracker = self.controller.tracker
        for node in snapshot.nodes:
            tracked = tracker.get(node.name)
            if SHOAL_FEATURE not in node.features or tracked is None:
                continue
            if tracked.node_type not in rank:
                continue
            r = rank[tracked.node_type]
            out[node.name] = kept_weight(r, remaining(jobs[node.name])) if self.kept else r
        return out

    def observe(self, snapshot: SlurmSnapshot) -> None:
        """A source listener: start setting what changed, unless an update still runs or
        this daemon's controller is not leading: stopped, or not reconciled in this term
        (``ha``: a follower's source reads too, one that never led included, and a deposed
        leader's tracker still knows its nodes)."""
        if not self._leading():
            self.applied.clear()  # another leader sets weights now: all again next term
            return
        wanted = self.wanted(snapshot)
        self.applied = {k: v for k, v in self.applied.items() if k in wanted}
        changed = {k: v for k, v in wanted.items() if self.applied.get(k) != v}
        if changed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._apply(changed))

    def _leading(self) -> bool:
        return not self.controller.stopping and self.controller.ready

    async def _apply(self, changed: dict[str, int]) -> None:
        # ha: a fenced state write first, as the clean-up's repairs do: a deposed leader that
        # has not noticed yet (its guard not fired) changes nothing in Slurm
        if not await self.controller.executor.term_holds("slurm_weight_skipped"):
            return
        by_weight: defaultdict[int, list[str]] = defaultdict(list)
        for name, weight in changed.items():
            by_weight[weight].append(name)
        for weight, names in sorted(by_weight.items()):
            if not self._leading():
                return  # the term ended while an update ran: the next leader sets weights
            names.sort()
            error = await self._set(names, weight)
            if isinstance(error, SlurmUnavailableError):
                return  # slurmctld does not answer: all again after the next read
            if error is not None and len(names) > 1:
                # one unknown name (a node deleted meanwhile) fails the whole command
                for name in names:
                    if self._leading():
                        await self._set([name], weight)

    async def _set(self, names: list[str], weight: int) -> SlurmError | None:
        try:
            await self.client.update_nodes(names, Weight=str(weight))
        except SlurmError as exc:
            log.warning(
                'event=slurm_weight_failed nodes=%s weight=%d error="%s"',
                ",".join(names),
                weight,
                exc,
            )
            if len(names) == 1 or isinstance(exc, SlurmUnavailableError):
                self._count("failed", len(names))  # (refused: tried node by node next)
            for name in names:  # Slurm may have taken it (a lost answer): set it again
                self.applied.pop(name, None)
            return exc
        if self._leading():  # set in an ended term: set again when it leads next
            self.applied.update(dict.fromkeys(names, weight))
        self._count("set", len(names))
        log.info("event=slurm_weight nodes=%s weight=%d", ",".join(names), weight)
        return None

    def _count(self, result: str, nodes: int) -> None:
        if self.metrics is not None:
            self.metrics.slurm_weight_updates.labels(result=result).inc(nodes)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
