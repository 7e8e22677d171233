"""The clean-up loop (as ParallelCluster's clustermgtd): compare the cloud's instances with
Slurm's nodes, and repair what crashes, lost hook calls and restarts leave behind.

Every ``cleanup_interval`` the loop takes a listing of the instances and *then* reads sinfo,
so an instance launched after the listing is never judged against a node state older than
it. The listing is the controller's shared one (``Controller.list_workers``): its last pass's
when no older than one scaler interval and no launch or termination came since, else a fresh
one, so the clean-up adds no DescribeInstances of its own to the passes'. ``find_repairs``
is pure; each repair found is logged with its reason, counted in
``shoal_slurm_cleanups_total{kind}`` and carried out:

``orphan``                    an instance launched for a Slurm node that is powered down (its
                              suspend never reached shoal) or does not exist: terminated. One
                              whose node Slurm left DOWN with "ResumeTimeout reached" never
                              registered: terminated as a join timeout, its offering backed
                              off, as its resume-fail request does (the loop may read the
                              node down a moment before slurmctld runs ResumeFailProgram)
``duplicate``                 a second instance for one node: terminated. The one whose
                              private address is the node's NodeAddr stays (the one Slurm
                              talks to), else the oldest; never while the node runs a job by
                              Slurm's view (allocated, mixed, completing): which instance runs
                              it cannot be told for sure
``stuck_powering_up``         a node POWERING_UP for longer than ResumeTimeout and a margin
                              (slurmctld gives up at ResumeTimeout itself; one still powering
                              up was forgotten, across a slurmctld restart say): its instance
                              terminated, the node reset with DOWN then POWER_DOWN
``down_without_instance``     a powered-down node left DOWN by a failed resume ("ResumeTimeout
                              reached", or shoal's own reason) with no instance: POWER_DOWN,
                              back to idle~. A node DOWN for another reason (an admin's) stays
``dynamic_without_instance``  external mode: a dynamic node shoal drained (reason "shoal") or
                              registered (feature "shoal") that has lost its instance:
                              ``scontrol delete``

With ``ha`` a run with repairs first confirms the leader's term (``Executor.confirm_term``: a
fenced state write), so a deposed leader changes neither the cloud nor Slurm.

Nodes the power saver is busy with (a request in hand, a node kept DOWN) are left alone, and so are
instances younger than ``grace`` (their node may not show them yet). A stopped (or stopping)
instance is nobody's node instance here: the loop terminates it (reason ``stopped``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shoal.daemon.slurm.client import SlurmClient
from shoal.daemon.slurm.constants import RESETTABLE_REASONS, RESUME_TIMEOUT_REASON, SHOAL_FEATURE
from shoal.daemon.slurm.drain import drained_by_shoal
from shoal.daemon.slurm.errors import SlurmCommandError, SlurmError
from shoal.daemon.slurm.metrics import SlurmMetrics
from shoal.daemon.slurm.parse import SlurmNode
from shoal.daemon.slurm.power import slurm_node_of
from shoal.daemon.slurm.source import SlurmSnapshot
from shoal.providers.base import TAG_AUTOSCALED, Node
from shoal.providers.errors import ProviderError
from shoal.runtime.clock import Clock

if TYPE_CHECKING:
    from shoal.daemon.loop import Controller

__all__ = ["Cleaner", "Repair", "RepairKind", "find_repairs"]

log = logging.getLogger(__name__)

STUCK_MARGIN = 60.0


class RepairKind(enum.StrEnum):
    ORPHAN = "orphan"
    DUPLICATE = "duplicate"
    STUCK_POWERING_UP = "stuck_powering_up"
    DOWN_WITHOUT_INSTANCE = "down_without_instance"
    DYNAMIC_WITHOUT_INSTANCE = "dynamic_without_instance"


@dataclass(frozen=True, slots=True)
class Repair:
    kind: RepairKind
    node: str  # the Slurm node
    instances: tuple[str, ...]  # instance ids to terminate
    reason: str
    # an orphan whose node Slurm gave up on at ResumeTimeout: a join timeout (backed off)
    never_registered: bool = False


def _age(node: Node, now: float) -> float:
    return now - node.launchTime.timestamp()


def find_repairs(
    instances: Iterable[Node],
    nodes: Iterable[SlurmNode],
    *,
    mode: Literal["power_save", "external"],
    now: float,
    managed: Callable[[str], bool] = lambda name: True,
    busy: Collection[str] = frozenset(),
    powering_up_since: Mapping[str, float] | None = None,
    resume_timeout: float | None = None,
    grace: float = 120.0,
    stuck_margin: float = STUCK_MARGIN,
) -> list[Repair]:
    """What to repair, from a listing of instances and a later read of Slurm's nodes."""
    autoscaled = [i for i in instances if i.tags.get(TAG_AUTOSCALED) == "true" and not i.stopped]
    slurm = {n.name: n for n in nodes}
    repairs: list[Repair] = []
    if mode == "external":
        ids = {i.name for i in instances}
        for node in slurm.values():
            if not node.dynamic or node.name in ids or node.name in busy:
                continue
            drained = drained_by_shoal(node)
            ours = SHOAL_FEATURE in node.features and not node.responding
            if drained or ours:
                why = "drained by shoal" if drained else "registered by shoal, not responding"
                repairs.append(
                    Repair(
                        RepairKind.DYNAMIC_WITHOUT_INSTANCE,
                        node.name,
                        (),
                        f"dynamic node {why}, and its instance is gone",
                    )
                )
        return repairs
    by_node: dict[str, list[Node]] = {}
    for instance in autoscaled:
        by_node.setdefault(slurm_node_of(instance), []).append(instance)
    for name, group in sorted(by_node.items()):
        if name in busy:
            continue
        group = sorted(group, key=lambda i: (i.launchTime, i.name))
        old = tuple(i.name for i in group if _age(i, now) >= grace)
        node = slurm.get(name)
        if node is None:
            if old:
                why = f"its Slurm node {name} does not exist"
                repairs.append(Repair(RepairKind.ORPHAN, name, old, why))
            continue
        off = node.powered_down and not (
            node.powering_up or node.powering_down or "POWER_DOWN" in node.flags
        )
        if off:
            if old:
                why = f"its Slurm node {name} is powered down ({node.state_text})"
                failed = node.down and node.reason.startswith(RESUME_TIMEOUT_REASON)
                repairs.append(Repair(RepairKind.ORPHAN, name, old, why, failed))
            continue
        if len(group) < 2 or _runs_a_job(node):
            continue
        registered = [i for i in group if node.address and i.privateIP == node.address]
        keep = registered[0] if registered else group[0]
        extra = tuple(i for i in old if i != keep.name)
        if extra:
            which = "its NodeAddr" if registered else "the oldest"
            why = f"{len(group)} instances for {name}; {keep.name} ({which}) stays"
            repairs.append(Repair(RepairKind.DUPLICATE, name, extra, why))
    since = powering_up_since or {}
    for node in slurm.values():
        if node.name in busy or not managed(node.name):
            continue
        group_ids = tuple(i.name for i in by_node.get(node.name, ()))
        if node.powering_up:
            started = since.get(node.name)
            if resume_timeout is None or started is None:
                continue
            if now - started > resume_timeout + stuck_margin:
                why = (
                    f"powering up for {now - started:.0f}s, past ResumeTimeout "
                    f"({resume_timeout:.0f}s)"
                )
                repairs.append(Repair(RepairKind.STUCK_POWERING_UP, node.name, group_ids, why))
        elif (
            node.down
            and node.powered_down
            and not group_ids
            and node.reason.startswith(RESETTABLE_REASONS)
        ):
            why = f"DOWN and powered down ({node.reason}) with no instance"
            repairs.append(Repair(RepairKind.DOWN_WITHOUT_INSTANCE, node.name, (), why))
    return repairs


def _runs_a_job(node: SlurmNode) -> bool:
    """Slurm has a job on ``node`` (or one still completing)."""
    return (
        node.cpus_allocated > 0
        or node.state in ("ALLOCATED", "MIXED", "COMPLETING")
        or "COMPLETING" in node.flags
    )


class Cleaner:
    """Runs ``find_repairs`` every ``interval`` and carries the repairs out."""

    def __init__(
        self,
        client: SlurmClient,
        clock: Clock,
        controller: Controller,
        *,
        mode: Literal["power_save", "external"],
        interval: float = 60.0,
        grace: float = 120.0,
        metrics: SlurmMetrics | None = None,
        managed: Callable[[str], bool] = lambda name: True,
        busy: Callable[[], Collection[str]] = frozenset,
        lock: Callable[[str], asyncio.Lock] | None = None,
        resume_timeout: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.controller = controller
        self.mode: Literal["power_save", "external"] = mode
        self.interval = interval
        self.grace = grace
        self.metrics = metrics or SlurmMetrics()
        self.managed = managed
        self.busy = busy
        self.lock = lock
        self.resume_timeout = resume_timeout
        self.powering_up_since: dict[str, float] = {}
        self.last: list[Repair] = []
        self.runs = 0

    def observe(self, snapshot: SlurmSnapshot) -> None:
        """A source listener: when each node was first seen POWERING_UP (in this daemon)."""
        for node in snapshot.nodes:
            if node.powering_up:
                self.powering_up_since.setdefault(node.name, snapshot.at)
            else:
                self.powering_up_since.pop(node.name, None)

    async def run(self) -> None:
        while True:
            await self.clock.sleep(self.interval)
            if not self.controller.ready:
                continue
            try:
                await self.once()
            except Exception as exc:
                log.error('event=slurm_cleanup_failed error="%r"', exc)

    async def once(self) -> list[Repair]:
        """One comparison; the repairs found (each attempted)."""
        controller = self.controller
        instances = await controller.list_workers(max_age=controller.interval)
        try:
            nodes = await self.client.nodes()  # after the listing: see the module docstring
        except SlurmError as exc:
            log.warning('event=slurm_cleanup_skipped reason=slurm-unreadable error="%s"', exc)
            return []
        repairs = find_repairs(
            instances,
            nodes,
            mode=self.mode,
            now=self.clock.now(),
            managed=self.managed,
            busy=set(self.busy()),
            powering_up_since=self.powering_up_since,
            resume_timeout=self.resume_timeout(),
            grace=self.grace,
        )
        self.runs += 1
        self.last = repairs
        # they change Slurm too: a deposed leader (ha) repairs nothing
        if repairs and not await controller.executor.term_holds("slurm_cleanup_skipped"):
            return repairs
        for repair in repairs:
            await self._apply(repair)
        return repairs

    async def _apply(self, repair: Repair) -> None:
        lock = self.lock(repair.node) if self.lock is not None else asyncio.Lock()
        async with lock:
            if repair.node in set(self.busy()):  # a request came in since: leave it
                log.info("event=slurm_cleanup_deferred kind=%s node=%s", repair.kind, repair.node)
                return
            log.warning(
                'event=slurm_cleanup kind=%s node=%s instances=%s reason="%s"',
                repair.kind,
                repair.node,
                ",".join(repair.instances) or "-",
                repair.reason,
            )
            self.metrics.slurm_cleanups.labels(kind=repair.kind.value).inc()
            try:
                if repair.instances:
                    await self._terminate(repair.instances, repair.never_registered)
                if repair.kind is RepairKind.STUCK_POWERING_UP:
                    await self.client.set_down(repair.node, f"shoal: {repair.reason}"[:200])
                    await self.client.power_down(repair.node)
                elif repair.kind is RepairKind.DOWN_WITHOUT_INSTANCE:
                    await self.client.power_down(repair.node)
                elif repair.kind is RepairKind.DYNAMIC_WITHOUT_INSTANCE:
                    await self.client.delete_nodes(repair.node)
            except SlurmCommandError as exc:
                log.warning('event=slurm_cleanup_refused node=%s error="%s"', repair.node, exc)
            except (SlurmError, ProviderError) as exc:
                log.warning('event=slurm_cleanup_failed node=%s error="%s"', repair.node, exc)

    async def _terminate(self, ids: Sequence[str], never_registered: bool = False) -> None:
        if never_registered:  # as the resume-fail request it came before
            await self.controller.terminate(ids, cause="join-timeout", back_off=True)
        else:
            await self.controller.terminate(ids)
