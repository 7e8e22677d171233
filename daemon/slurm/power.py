"""Slurm's power saving, carried out by shoal: the requests the hooks hand over.

Slurm decides (``ResumeProgram``, ``SuspendProgram``, ``ResumeFailProgram`` are
``shoal slurm-resume`` / ``slurm-suspend``); the daemon's planner stands aside
(``requests_only_planner``) and the power saver launches and terminates, through the executor (its
retries, metrics and the provider's events) and the controller (ledger and backoff)::

    hook ─► POST /v1/slurm/resume ─► accept: persist the request (state_dir), answer 202
                                       │ one worker per node, requests in order
                                       ▼
             the node has an instance (tag shoal:slurm-node)? ── yes ─► nothing (idempotent)
                                       │ no
                                       ▼
             launch 1 through Controller.launch (alternatives and zones in order,
             offerings in backoff skipped; a replay's saved offering first), tagged with
             the node name; each offering saved with its client token before it is tried
                  │ launched                              │ failed (capacity, quota, error,
                  │ (outcome unknown: an answer lost      │ every offering in backoff)
                  │ past the retries: kept, tried again   │
                  ▼ with its offering and token)          ▼
             request done (NodeAddr set if asked)    node DOWN with the reason (Slurm requeues
                                                     its jobs to other nodes), kept so until the
                                                     type's backoff ends, then POWER_DOWN: back
                                                     in Slurm's pool (idle~), no stock-out loop
                                                     (only if sinfo still shows it DOWN: one no
                                                     longer DOWN was released before a crash
                                                     lost the state's write, and may be
                                                     POWERING_UP for a job by now)

    suspend / resume_fail ─► persisted before the answer; terminate the node's instances
                             through Controller.terminate (a pending launch is dropped);
                             resume_fail (the node never registered by ResumeTimeout) also
                             backs its offering off and keeps the node DOWN like a failed
                             launch

Restart safety (``daemon.slurm.state``): a request is on disk before the hook is answered
and removed once served; each offering a resume tries is on disk (with its client token)
before that offering's launch, so the file names the last offering that may have launched;
nodes kept DOWN and suspends are written too. After ``kill -9`` anywhere in between, the
daemon serves what the file holds again with the same request id, starting at that offering, so the
provider's client token (a function of request id and offering) makes a launch that had
already happened return its instance instead of launching a second: served once, no
duplicate, no orphan. (Saving only the offering tried first is not enough: when it fails
and the launch falls through to the next, a replay from the first, whose capacity may be
back, launches a second instance while the listing does not show the one launched.) The
save costs no write of its own: the launch intent's flush, one per offering tried, writes
it. Every change of a node's state (a request served, the release loop's
release) happens under that node's lock. Writes go through the daemon's store: coalesced
and off the event loop, so a burst of 500 requests costs a few fsyncs, not 1,000.

With ``ha`` every change the power saver makes to Slurm (DOWN, POWER_DOWN, NodeAddr) first
confirms the leader's term (``TermCheck``: ``Executor.confirm_term``, the fenced state write a
launch's intent and a termination make), once per batch: a pass of the release loop, a multi-node
job's failure, one node's DOWN or address. A refusal (``Fenced``: another term began; the
store's ``on_fenced`` steps down) writes nothing more in that batch, so a deposed leader whose
guard has not fired yet cannot release, mark DOWN or re-address a node the new leader serves.
(Re-deriving requests from Slurm's POWERING_UP nodes instead cannot tell a lost request
from a launch the cloud's listing does not show yet, and would launch twice on EC2.)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from shoal.daemon.durable import Fenced
from shoal.daemon.executor import ExecutionReport, Executor
from shoal.daemon.nodes import TrackedState
from shoal.daemon.slurm.client import SlurmClient
from shoal.daemon.slurm.constants import TAG_SLURM_NODE
from shoal.daemon.slurm.errors import SlurmCommandError, SlurmError
from shoal.daemon.slurm.metrics import SlurmMetrics
from shoal.daemon.slurm.names import NodeTypeMap
from shoal.daemon.slurm.parse import compress_hostlist, expand_hostlist
from shoal.daemon.slurm.state import KeptDown, PowerState, ResumeRequest, SuspendRequest
from shoal.providers.base import TAG_AUTOSCALED, Node
from shoal.providers.errors import ProviderError, TerminationError
from shoal.providers.node_provider import term_request_id
from shoal.runtime.clock import Clock, sleep_or_event
from shoal.scaler.model import (
    AddCause,
    Launch,
    NodeType,
    Offering,
    Plan,
    PlannerState,
    Policy,
    Snapshot,
)

if TYPE_CHECKING:
    from shoal.daemon.loop import Controller

__all__ = ["REQUEST_KINDS", "PowerSaver", "TermCheck", "requests_only_planner", "slurm_node_of"]

log = logging.getLogger(__name__)

REQUEST_KINDS = ("resume", "suspend", "resume_fail")  # each has its own request counter
# seconds a listing (a pass's, the clean-up's, another worker's) may be old to serve a request;
# launches and terminations retire it sooner (Controller.list_workers)
LISTING_MAX_AGE = 5.0
ADDRESS_TRIES = 30


def requests_only_planner(
    snapshot: Snapshot, policy: Policy, state: PlannerState, now: float
) -> Plan:
    """The planner in power-saving mode: Slurm decides which nodes run, so the plan launches
    and removes nothing (the loop still terminates launches the cloud never listed, on
    fresh demand)."""
    targets: dict[str, int] = {nt.name: 0 for nt in policy.node_types}
    for node in snapshot.nodes:
        if node.node_type in targets:
            targets[node.node_type] += 1
    return Plan((), (), (), targets, (), state)


def slurm_node_of(node: Node) -> str:
    """The Slurm node an instance stands for: its tag, else its id (a dynamic node)."""
    return node.tags.get(TAG_SLURM_NODE) or node.name


class TermCheck:
    """One batch of changes to Slurm: the leader's term confirmed before its first change
    (``Executor.confirm_term``; with ``ha`` a fenced state write, refused once another term
    began, whose refusal steps the daemon down; without ``ha`` nothing), not again for the
    rest. A refusal holds for the whole batch: nothing more in it may reach Slurm."""

    def __init__(self, executor: Executor, epoch: int | None = None) -> None:
        self._executor = executor
        self._held: bool | None = None  # None: not asked yet (or the last ask failed)
        self.fenced = False  # the term was refused: another term began, nothing may follow
        # the term the change belongs to (a task started in it may outlive it: this process
        # may lead again, in a later term, by the time it writes): None, the current one
        self._epoch = epoch if epoch is not None else executor.epoch

    async def confirm(self, what: str) -> bool:
        """True when the batch may change Slurm (``what``: the first change, for the log).
        A refusal (``Fenced``) holds for the batch; any other failure of the confirming write
        (an etcd timeout) is not remembered: the change is not made now, and the next
        ``confirm`` asks again (the daemon may still lead)."""
        if self._held is None and self._executor.epoch != self._epoch:
            log.error(
                'event=slurm_change_refused what="%s" error="term %s ended (now %s)"',
                what,
                self._epoch,
                self._executor.epoch,
            )
            self.fenced, self._held = True, False
        if self._held is None:
            try:
                await self._executor.confirm_term()
            except Fenced as exc:
                log.error('event=slurm_change_refused what="%s" error="%r"', what, exc)
                self.fenced, self._held = True, False
            except Exception as exc:
                log.warning('event=slurm_change_unconfirmed what="%s" error="%r"', what, exc)
                return False
            else:
                self._held = True
        return self._held


class PowerSaver:
    """Serves resume, suspend and resume-fail requests; see the module docstring."""

    def __init__(
        self,
        client: SlurmClient,
        clock: Clock,
        types: NodeTypeMap,
        controller: Controller,
        *,
        metrics: SlurmMetrics | None = None,
        node_type_of: Callable[[str], str] = lambda name: name,
        retry_interval: float = 10.0,
        set_node_addr: bool = False,
        all_or_nothing: bool = True,
        concurrency: int = 16,
        on_request: Callable[[], None] = lambda: None,
    ) -> None:
        """Serves requests once ``controller`` has reconciled with the cloud (so instances a
        previous daemon launched are known); the requests its store holds are queued now,
        suspends first (see ``daemon.slurm.state``). Raises StateError for a damaged state."""
        self.client = client
        self.clock = clock
        self.controller = controller
        self.state = PowerState(controller.store)
        self.types = types
        self.metrics = metrics or SlurmMetrics()
        self.node_type_of = node_type_of
        self.retry_interval = retry_interval
        self.set_node_addr = set_node_addr
        self.all_or_nothing = all_or_nothing
        self.on_request = on_request
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._idle = False  # the hold loop sleeps until ``_wake``: nothing to retry or release
        self._slots = asyncio.Semaphore(concurrency)
        self._events: dict[str, collections.deque[str]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_node: dict[str, str] = {}  # Slurm node -> instance id (launches, listings)
        self._locks: dict[str, asyncio.Lock] = {}
        # (node, instance id) of the latest launches, for GET /v1/slurm and the logs
        self.launched: collections.deque[tuple[str, str]] = collections.deque(maxlen=1000)
        controller.deadline_sources.append(self.next_deadline)
        if controller.ready:
            self._ready.set()
        else:
            controller.on_ready.append(self._ready.set)
        for node, suspend in sorted(self.state.suspends.items()):
            self._enqueue(node, suspend.kind)
        for node in sorted({self._server(n) for n in self.state.requests}):
            self._enqueue(node, "resume")

    # -- wiring ---------------------------------------------------------------------------

    def lock(self, node: str) -> asyncio.Lock:
        """Held while a request for ``node`` is served (the clean-up loop takes it too)."""
        return self._locks.setdefault(node, asyncio.Lock())

    @property
    def busy(self) -> set[str]:
        """Nodes with a request in hand or kept DOWN: the clean-up loop leaves them alone."""
        queued = {n for n, q in self._events.items() if q}
        working = {n for n, t in self._workers.items() if not t.done()}
        return (
            queued
            | working
            | set(self.state.requests)
            | set(self.state.suspends)
            | set(self.state.kept_down)
        )

    @property
    def _epoch(self) -> int | None:  # ha: the leader's term, in every new request id
        return self.controller.executor.epoch

    def _term(self, epoch: int | None = None) -> TermCheck:
        """A new batch of changes to Slurm, confirmed before its first (see ``TermCheck``),
        in the term ``epoch`` (None: the current one)."""
        return TermCheck(self.controller.executor, epoch)

    def instance_id(self, node: str) -> str:
        """The daemon's id of a Slurm node's instance, or the node name when it has none."""
        return self._by_node.get(node, node)

    def note_instances(self, nodes: Iterable[Node]) -> None:
        """Learn which instance stands for which Slurm node (from a listing or the tracker).
        An instance the tracker has as TERMINATED stands for no node: the tracker and the
        cloud's listing keep it for a while after a suspend, and a read in between must not
        bring it back. Nor does a stopped (or stopping) one: it runs nothing, and the loop
        terminates it."""
        listed = list(nodes)
        gone = self._terminated() | {n.name for n in listed if n.stopped}
        for node in listed:
            name = node.tags.get(TAG_SLURM_NODE)
            if name and node.name not in gone:
                self._by_node[name] = node.name
        for name, instance_id in list(self._by_node.items()):
            if instance_id in gone:
                del self._by_node[name]

    def _terminated(self) -> set[str]:
        tracker = self.controller.tracker
        return {t.id for t in tracker.all() if t.state is TrackedState.TERMINATED}

    # -- requests -------------------------------------------------------------------------

    async def accept(
        self,
        kind: str,
        hostlist: str,
        resume_file: Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Take a hook's request: on disk once this returns (resume, suspend, resume_fail),
        and queued; returns the answer's body. ``request_id`` (the hook's) is saved with it,
        and a request id accepted before is answered as repeated and changes nothing: the
        spool and a late answer serve it once. Raises ValueError for an unknown kind or a
        malformed hostlist, and what the state's write raised."""
        if kind not in REQUEST_KINDS:
            raise ValueError(f"unknown request kind {kind!r}; expected one of {REQUEST_KINDS}")
        names = list(dict.fromkeys(expand_hostlist(hostlist)))
        if not names:
            raise ValueError("no node names given")
        if request_id is not None and request_id in self.state.accepted_ids:
            log.info("event=slurm_request_repeated kind=%s request_id=%s", kind, request_id)
            return {"kind": kind, "accepted": [], "repeated": names}
        accepted, repeated = [], []
        now = self.clock.now()
        if kind == "resume":
            jobs = _jobs_by_node(resume_file)
            fresh = [n for n in names if n not in self.state.requests]
            gangs = _gangs(jobs, fresh) if self.all_or_nothing else {}
            for name in names:
                if name in self.state.requests:
                    repeated.append(name)
                    continue
                launch_id = term_request_id(f"slurm-{uuid.uuid4().hex}", self._epoch)
                self.state.requests[name] = ResumeRequest(
                    launch_id, now, jobs.get(name, ()), gang=gangs.get(name, ())
                )
                accepted.append(name)
        else:
            accepted = names
            for name in names:  # a resume not served yet is superseded
                self.state.requests.pop(name, None)
                self.state.suspends[name] = SuspendRequest(kind, now)
        if request_id is not None:
            self.state.note_accepted(request_id)
        if accepted or request_id is not None:
            await self.state.save()  # before the hook is answered: a restart serves it
        servers = [self._server(n) for n in accepted] if kind == "resume" else accepted
        for name in dict.fromkeys(servers):
            self._enqueue(name, kind)
        if accepted and self._idle:  # the hold loop retries it if its worker leaves it
            self._wake.set()
        self.metrics.slurm_requests.labels(kind=kind).inc(len(names))
        log.info(
            "event=slurm_request kind=%s nodes=%s accepted=%d repeated=%d",
            kind,
            hostlist,
            len(accepted),
            len(repeated),
        )
        self.on_request()
        return {"kind": kind, "accepted": accepted, "repeated": repeated}

    def _enqueue(self, node: str, kind: str) -> None:
        self._events.setdefault(node, collections.deque()).append(kind)
        worker = self._workers.get(node)
        if worker is None or worker.done():
            self._workers[node] = asyncio.create_task(self._work(node), name=f"slurm-{node}")

    async def _work(self, node: str) -> None:
        await self._ready.wait()
        async with self._slots:
            queue = self._events.get(node)
            while queue:
                kind = queue.popleft()
                try:
                    async with self.lock(node):
                        if kind == "resume":
                            await self._resume(node)
                        else:
                            await self._suspend(node, kind)
                except Exception as exc:  # the request stays in the state file: retried
                    log.error(
                        'event=slurm_request_failed node=%s kind=%s error="%r"', node, kind, exc
                    )
            self._events.pop(node, None)

    # -- resume ---------------------------------------------------------------------------

    def _node_type(self, name: str) -> NodeType | None:
        for node_type in self.controller.policy.node_types:
            if node_type.name == name:
                return node_type
        return None

    def _node_type_for(self, node: str) -> NodeType | None:
        """The planner's node type for Slurm node ``node`` (``slurm.node_types``), if any."""
        configured = self.types.node_type(node)
        if configured is None:
            return None
        try:
            return self._node_type(self.node_type_of(configured))
        except KeyError:
            return None

    async def _resume(self, node: str) -> None:
        request = self.state.requests.get(node)
        if request is None:  # suspended before it was served
            return
        if len(self._members(request.gang)) > 1:
            await self._resume_gang(node, request.gang)
            return
        if self.state.kept_down.pop(node, None) is not None:
            self.state.changed()
        node_type = self._node_type_for(node)
        if node_type is None:
            self._finish(node)
            reason = f"shoal: no node type for {node} (slurm.node_types)"
            log.error("event=slurm_resume_refused node=%s reason=no-node-type", node)
            await self._set_down(node, reason)
            return
        # a stopped instance is not the node's: it runs nothing (someone stopped it, the loop
        # terminates it as "stopped"), and Slurm waits for a node that registers
        existing = await self._running(node)
        if existing:
            self._finish(node)
            log.info(
                "event=slurm_resume_served_before node=%s instances=%s request_id=%s",
                node,
                ",".join(existing),
                request.request_id,
            )
            return
        jobs = f" for job {','.join(request.jobs)}" if request.jobs else ""
        launch = Launch(node_type.name, 1, AddCause.DEMAND, f"Slurm resumes {node}{jobs}")
        report = await self._launch(node_type, launch, [node])
        ids = [i for attempt in report.attempts for i in attempt.ids]
        if ids:
            for instance_id in ids:
                self._by_node[node] = instance_id
                self.launched.append((node, instance_id))
            self._finish(node)
            log.info(
                "event=slurm_resumed node=%s node_type=%s instance=%s request_id=%s waited=%.3fs",
                node,
                node_type.name,
                ",".join(ids),
                request.request_id,
                self.clock.now() - request.accepted_at,
            )
            if self.set_node_addr:
                self._spawn(self._set_address(node, ids[0], self._epoch))
            return
        if not self._uncertain(node, report):
            await self._keep_down(node, node_type, _launch_error(report))

    async def _launch(
        self, node_type: NodeType, launch: Launch, nodes: list[str]
    ) -> ExecutionReport:
        """Launch ``nodes`` (one instance each, tagged with its name in launch order) as the
        request of ``nodes[0]``: its request id, its saved offering first; each offering is
        saved in it before it is tried."""
        node = nodes[0]
        request = self.state.requests[node]

        def trying(offering: Offering, token: str) -> None:
            # Each offering is saved before it is tried (see state.py): a replay starts at the
            # last one that may have launched, never at an earlier one that failed and may have
            # capacity again. No write of its own: Controller.launch then writes the launch's
            # intent to the same store, and so this, before that offering's launch.
            saved = self.state.requests.get(node)
            if saved is not None and saved.request_id == request.request_id:
                self.state.requests[node] = dataclasses.replace(
                    saved, offering=offering, client_token=token
                )
                self.state.changed()

        return await self.controller.launch(
            node_type,
            launch,
            request_id=request.request_id,
            tags={TAG_SLURM_NODE: ",".join(nodes)},  # one name per instance (slurm_node_tags)
            first=request.offering,
            on_offering=trying,
        )

    def _uncertain(self, node: str, report: ExecutionReport) -> bool:
        """True when a launch for ``node``'s request may have happened with every answer lost,
        or did (its client token refused as sent before with other arguments, a config
        changed since: ``launched_before``): failing the node now would requeue its job while
        its instance boots. The request is kept, that launch's offering first with its client
        token (which returns what it launched), for the release loop's next try, which finds
        the instance once listed; Slurm's ResumeTimeout bounds the wait."""
        doubt = [a for a in report.attempts if a.uncertain or a.launched_before]
        request = self.state.requests.get(node)
        if not doubt or request is None:
            return False
        attempt = doubt[-1]
        self.state.requests[node] = dataclasses.replace(
            request, offering=attempt.offering, client_token=attempt.client_token
        )
        self.state.changed()
        log.warning(
            'event=slurm_resume_uncertain node=%s offering=%s request_id=%s error="%s"',
            node,
            attempt.offering,
            request.request_id,
            attempt.error,
        )
        return True

    async def _running(self, node: str) -> list[str]:
        """The ids of ``node``'s instances that are not stopped: a stopped instance is not the
        node's, it runs nothing (someone stopped it, the loop terminates it as "stopped")."""
        return [n.name for n in await self._instances(node) if not n.stopped]

    # -- a multi-node job's nodes, all or nothing -------------------------------------------

    def _members(self, gang: tuple[str, ...]) -> list[str]:
        """The nodes of ``gang`` still requested as part of it (a suspend drops a node's)."""
        requests = self.state.requests
        return [n for n in gang if n in requests and requests[n].gang == gang]

    def _server(self, node: str) -> str:
        """The node whose worker serves ``node``'s resume: its gang's first member still
        requested (``node`` itself when it is launched on its own)."""
        request = self.state.requests.get(node)
        members = self._members(request.gang) if request is not None else []
        return members[0] if members else node

    async def _resume_gang(self, node: str, gang: tuple[str, ...]) -> None:
        """Serve a multi-node job's nodes as one (under ``node``'s lock, its first member):
        the other members' locks are taken in name order, as the gang's first member holds
        its own, so two workers never wait on each other."""
        if self._server(node) != node:
            return  # another member serves the gang
        async with contextlib.AsyncExitStack() as stack:
            for member in self._members(gang)[1:]:
                await stack.enter_async_context(self.lock(member))
            members = self._members(gang)
            if members and members[0] == node:
                await self._serve_gang(members)

    async def _serve_gang(self, members: list[str]) -> None:
        """Launch ``members`` all or nothing: each node type's group as one request (its first
        node's: request id, saved offering), ``Launch(count=N, gangs=(N,))``. A member that
        already has an instance (served before a restart) is not launched again. When a group
        cannot launch whole, what this gang launched (and its members' earlier instances) is
        terminated and every member is set DOWN with the reason, then powered down when its
        type's backoff ends: Slurm requeues the job at once and no partial gang bills. An
        answer lost for a group keeps every request for the next try (the groups that did
        launch are then served before)."""
        label = compress_hostlist(members)
        if any(self.state.kept_down.pop(m, None) is not None for m in list(members)):
            self.state.changed()
        types = {m: self._node_type_for(m) for m in members}
        groups: dict[str, list[str]] = {}
        running: list[str] = []
        for member in members:
            node_type = types[member]
            ids = await self._running(member) if node_type is not None else []
            running.extend(ids)
            if node_type is not None and not ids:
                groups.setdefault(node_type.name, []).append(member)
        untyped = [m for m in members if types[m] is None]
        reason = (
            f"shoal: no node type for {','.join(untyped)} (slurm.node_types)" if untyped else ""
        )
        launched: list[str] = []
        for group in [] if reason else groups.values():
            node_type = types[group[0]]
            assert node_type is not None
            # a launch of this type for the gang was tried (its offering saved) by a member
            # the listing shows running now: it launched, and the others' instances may not
            # be listed yet. Launched under another member's request (another client token)
            # they would run twice; they wait for the listing, as an answer lost does.
            tried = [
                m
                for m in members
                if m not in group
                and (t := types[m]) is not None
                and t.name == node_type.name
                and self.state.requests[m].offering is not None
            ]
            if tried:
                log.warning(
                    "event=slurm_gang_partly_listed nodes=%s tried=%s waiting=%s",
                    label,
                    ",".join(tried),
                    compress_hostlist(group),
                )
                return
            ids, reason = await self._launch_gang(node_type, group, label)
            launched.extend(ids)
            if reason is None:  # an answer lost: the requests stay for the next try
                return
            if reason:
                break
        if not reason:
            for member in members:
                self._finish(member)
            log.info("event=slurm_gang_resumed nodes=%s instances=%d", label, len(launched))
            return
        log.warning('event=slurm_gang_failed nodes=%s reason="%s"', label, reason)
        if launched or running:  # never a partial gang left billing
            try:
                await self.controller.terminate([*launched, *running], cause="gang-failed")
            except ProviderError as exc:  # TerminationError too: logged, the rest still fails
                log.error('event=slurm_gang_terminate_failed nodes=%s error="%r"', label, exc)
        term = self._term()  # one confirmation for the gang's DOWNs
        for member in members:
            node_type = types[member]
            if node_type is None:
                self._finish(member)
                await self._set_down(member, reason, term)
            else:
                await self._keep_down(member, node_type, reason, term=term)

    async def _launch_gang(
        self, node_type: NodeType, group: list[str], label: str
    ) -> tuple[list[str], str | None]:
        """Launch ``group`` (one node type) as one all-or-nothing request: (its instance ids,
        "") when all launched from one offering; ([], None) when an answer was lost; else the
        ids that did launch (a provider that launched part of the group) and the reason."""
        request = self.state.requests[group[0]]
        count = len(group)
        jobs = f" for job {','.join(request.jobs)}" if request.jobs else ""
        message = f"Slurm resumes {compress_hostlist(group)}{jobs}, all or nothing"
        launch = Launch(node_type.name, count, AddCause.DEMAND, message, gangs=(count,))
        report = await self._launch(node_type, launch, group)
        made = [a for a in report.attempts if a.ids]
        ids = [i for a in made for i in a.ids]
        if len(made) == 1 and len(ids) == count:
            for member, instance_id in zip(group, ids, strict=True):  # tagged in launch order
                self._by_node[member] = instance_id
                self.launched.append((member, instance_id))
                if self.set_node_addr:
                    self._spawn(self._set_address(member, instance_id, self._epoch))
            return ids, ""
        if not ids and self._uncertain(group[0], report):
            return [], None
        if ids:
            return ids, (
                f"shoal: {len(ids)} of the {count} {node_type.name} nodes of {label} launched, "
                "all or nothing: none kept"
            )
        # nothing launched: the whole group was refused (an all-or-nothing launch); the reason
        # names the group so `sinfo -R` says why all of its nodes are DOWN together
        error = _launch_error(report).removeprefix("shoal: ")
        return [], f"shoal: {count} {node_type.name} nodes of {label}, all or nothing: {error}"[
            :200
        ]

    def _finish(self, node: str) -> None:
        if self.state.requests.pop(node, None) is not None:
            self.state.changed()

    def _kept_down_until(self, node_type: NodeType, now: float) -> float:
        """When the node type may launch again: the end of its offerings' backoff, or the
        backoff's first step when a failure put none of them in backoff (an API error)."""
        controller = self.controller
        unavailable = controller.backoff.unavailable(now)
        offerings = node_type.offerings()
        if offerings and all(o in unavailable for o in offerings):
            return min(unavailable[o] for o in offerings)
        return now + controller.backoff.policy.initial

    async def _keep_down(
        self,
        node: str,
        node_type: NodeType,
        reason: str,
        *,
        marked: bool = False,
        term: TermCheck | None = None,
    ) -> None:
        """DOWN now (Slurm requeues the node's jobs; ``term``: the batch it is part of),
        POWER_DOWN when the backoff ends."""
        until = self._kept_down_until(node_type, self.clock.now())
        self.state.requests.pop(node, None)
        self.state.kept_down[node] = KeptDown(until, reason, marked=marked)
        await self.state.save()  # before DOWN: a restart releases the node
        log.warning(
            'event=slurm_node_kept_down node=%s node_type=%s until=%.0f reason="%s"',
            node,
            node_type.name,
            until,
            reason,
        )
        if not marked:
            await self._set_down(node, reason, term)
        self._wake.set()

    async def _set_down(self, node: str, reason: str, term: TermCheck | None = None) -> bool:
        """DOWN with ``reason``, once ``term`` (the batch it is part of; else its own) is
        confirmed; True when Slurm took it."""
        if not await (term or self._term()).confirm(f"DOWN {node}"):
            return False
        try:
            await self.client.set_down(node, reason)
        except SlurmCommandError as exc:
            if exc.code == "exec":  # scontrol could not be run: try again later
                log.error('event=slurm_set_down_failed node=%s error="%s"', node, exc)
                return False
            # Slurm refused (an unknown node): there is nothing to keep DOWN
            log.error('event=slurm_set_down_refused node=%s error="%s"', node, exc)
            if node in self.state.kept_down:
                del self.state.kept_down[node]
                self.state.changed()
            return False
        except SlurmError as exc:  # slurmctld unavailable: the release loop tries again
            log.warning('event=slurm_set_down_failed node=%s error="%s"', node, exc)
            return False
        kept = self.state.kept_down.get(node)
        if kept is not None and not kept.marked:
            self.state.kept_down[node] = KeptDown(kept.until, kept.reason, marked=True)
            self.state.changed()
        log.info('event=slurm_node_down node=%s reason="%s"', node, reason)
        return True

    async def _set_address(self, node: str, instance_id: str, epoch: int | None) -> None:
        """NodeAddr and NodeHostname from the instance's private address, once listed. The
        listing is the shared one (``_listed``): a burst of N launches waits for one or two
        DescribeInstances, not N at once; one that does not show the instance yet is retried
        after ``retry_interval``, by then older than its max age (a fresh one)."""
        for _ in range(ADDRESS_TRIES):
            listed = {n.name: n for n in await self._listed()}
            address = listed[instance_id].privateIP if instance_id in listed else None
            if address:
                term = self._term(epoch)  # the launch's term, not whichever leads now
                if not await term.confirm(f"NodeAddr {node}"):
                    if term.fenced:
                        return  # a deposed leader: the instance may be the new leader's to judge
                    await self.clock.sleep(self.retry_interval)  # not confirmed: try again
                    continue
                try:
                    await self.client.set_address(node, address, address)
                except SlurmError as exc:
                    log.warning('event=slurm_set_address_failed node=%s error="%s"', node, exc)
                else:
                    log.info("event=slurm_node_address node=%s address=%s", node, address)
                    return
            await self.clock.sleep(self.retry_interval)

    # -- suspend --------------------------------------------------------------------------

    async def _suspend(self, node: str, kind: str) -> None:
        # accepting the suspend dropped the resumes before it: a resume here came after it
        # (the node was powered up again while the suspend waited), served after it
        dropped = None
        request, suspend = self.state.requests.get(node), self.state.suspends.get(node)
        if (
            request is not None
            and suspend is not None
            and request.accepted_at < suspend.accepted_at
        ):
            dropped = self.state.requests.pop(node)
        kept = self.state.kept_down.pop(node, None) if kind == "suspend" else None
        if dropped is not None or kept is not None:
            self.state.changed()
        instances = await self._instances(node)
        if instances and not await self._terminate(node, instances, kind):
            return  # the suspend stays on disk: served again at the next start
        if not instances:
            log.info("event=slurm_suspend_nothing node=%s kind=%s", node, kind)
        self._by_node.pop(node, None)
        if self.state.suspends.pop(node, None) is not None:
            self.state.changed()
        if kind == "resume_fail":
            node_type = self._node_type_for(node)
            if node_type is not None and node not in self.state.kept_down:
                # Slurm has set it DOWN itself ("ResumeTimeout reached")
                await self._keep_down(
                    node, node_type, "shoal: never registered by ResumeTimeout", marked=True
                )
        elif kept is not None:
            log.info("event=slurm_kept_down_dropped node=%s reason=suspended", node)

    async def _terminate(self, node: str, instances: list[Node], kind: str) -> bool:
        """Terminate ``node``'s instances (resume_fail: and back their offerings off);
        False when the cloud refused."""
        ids = [n.name for n in instances]
        try:
            await self.controller.terminate(
                instances,
                cause="join-timeout" if kind == "resume_fail" else "idle",
                back_off=kind == "resume_fail",
            )
        except TerminationError as exc:
            log.error('event=slurm_suspend_failed node=%s error="%s"', node, exc)
            return False
        except ProviderError as exc:
            log.error('event=slurm_suspend_failed node=%s error="%r"', node, exc)
            return False
        log.info("event=slurm_suspended node=%s kind=%s instances=%s", node, kind, ",".join(ids))
        return True

    # -- instances --------------------------------------------------------------------------

    async def _listed(self, max_age: float = LISTING_MAX_AGE) -> list[Node]:
        """The provider's workers: the controller's listing, shared with its passes, the
        clean-up loop and the other node workers when no older than ``max_age`` seconds and
        no launch or termination came since (``Controller.list_workers``)."""
        nodes = await self.controller.list_workers(max_age)
        self.note_instances(nodes)
        return nodes

    async def _instances(self, node: str) -> list[Node]:
        """Live autoscaled instances launched for Slurm node ``node``: listed, or launched by
        this daemon and not listed yet (the ledger)."""
        listed = [
            n
            for n in await self._listed()
            if n.tags.get(TAG_AUTOSCALED) == "true" and n.tags.get(TAG_SLURM_NODE) == node
        ]
        names = {n.name for n in listed}
        controller = self.controller
        unlisted = [
            t.node
            for t in controller.tracker.pending()
            if not t.placeholder
            and t.state is not TrackedState.TERMINATED
            and t.id not in names
            and self._by_node.get(node) == t.id
        ]
        return listed + unlisted

    # -- kept DOWN --------------------------------------------------------------------------

    async def run(self) -> None:
        """Release nodes kept DOWN when their backoff ends (POWER_DOWN), mark DOWN the ones that
        could not be marked yet, and retry requests whose worker died: every retry interval,
        or when the next one kept DOWN is due, while anything is kept DOWN or in hand; with
        nothing, it sleeps until a request is accepted or a node kept DOWN (no timer).

        Cancelled with the controller stopped (a term's end, ``ha``; or a stop), it cancels
        the requests in hand too: a deposed leader actuates nothing more (their requests stay
        in the state; the next leader serves them again, with the same client tokens), and the
        next term's ``run`` waits for that term's reconcile."""
        try:
            await self._serve_forever()
        finally:
            if self.controller.stopping:
                for worker in self._workers.values():
                    worker.cancel()
                self._ready.clear()
                if self._ready.set not in self.controller.on_ready:
                    self.controller.on_ready.append(self._ready.set)

    async def _serve_forever(self) -> None:
        await self._ready.wait()
        while True:
            now = self.clock.now()
            due = {n: k for n, k in self.state.kept_down.items() if k.marked and k.until <= now}
            undown = await self._not_down(sorted(due)) if due else set()
            term = self._term()  # one confirmation for the pass's DOWNs and releases
            for node in sorted(self.state.kept_down):
                async with self.lock(node):  # a request for the node may be served meanwhile
                    kept = self.state.kept_down.get(node)
                    if kept is None:
                        continue
                    if not kept.marked:
                        await self._set_down(node, kept.reason, term)
                    elif undown is not None and due.get(node) == kept:
                        if node in undown:
                            self._released_before(node)
                        else:
                            await self._release(node, kept, term)
            for node, suspend in sorted(self.state.suspends.items()):
                worker = self._workers.get(node)
                if worker is None or worker.done():
                    self._enqueue(node, suspend.kind)
            for node in sorted({self._server(n) for n in self.state.requests}):
                worker = self._workers.get(node)
                if worker is None or worker.done():
                    self._enqueue(node, "resume")
            now = self.clock.now()
            deadline = self.next_deadline(now)
            state = self.state
            if deadline is None and not (state.kept_down or state.suspends or state.requests):
                await self._sleep(None)  # nothing to retry or release: until a request
                continue
            wait = self.retry_interval if deadline is None else deadline - now
            await self._sleep(max(min(wait, self.retry_interval), 0.05))

    def next_deadline(self, now: float) -> float | None:
        """The earliest time after ``now`` a node kept DOWN is released, or None."""
        ends = (k.until for k in self.state.kept_down.values() if k.marked and k.until > now)
        return min(ends, default=None)

    async def _not_down(self, nodes: list[str]) -> set[str] | None:
        """Of ``nodes``, those sinfo shows not DOWN; None when slurmctld did not answer. A node
        kept DOWN that Slurm no longer shows DOWN was released before: by a previous daemon
        whose POWER_DOWN took effect but whose state write did not (``kill -9`` in between),
        or by an admin. Slurm may have given it to a job since (POWERING_UP): a POWER_DOWN
        replayed now would requeue that job and cancel its power-up. A DOWN node cannot be
        allocated, so one read before the releases is enough: a node DOWN here stays DOWN
        until shoal releases it."""
        try:
            shown = await self.client.nodes()
        except SlurmError as exc:  # tried again at the next pass
            log.warning(
                'event=slurm_release_failed nodes=%s error="%s"', compress_hostlist(nodes), exc
            )
            return None
        wanted = set(nodes)
        return {n.name for n in shown if n.name in wanted and not n.down}

    def _released_before(self, node: str) -> None:
        """Drop the entry of a node kept DOWN that Slurm no longer shows DOWN (``_not_down``):
        nothing to release, and a POWER_DOWN might cancel a job's power-up."""
        log.info(
            "event=slurm_kept_down_dropped node=%s reason=not-down state=released-before", node
        )
        del self.state.kept_down[node]
        self.state.changed()

    async def _release(self, node: str, kept: KeptDown, term: TermCheck) -> None:
        """POWER_DOWN a node kept DOWN whose backoff ended (under the node's lock; once ``term``,
        the pass's, is confirmed); its entry is dropped only if it is still the one released."""
        if not await term.confirm(f"POWER_DOWN {node}"):
            return  # kept: released by whoever leads
        try:
            await self.client.power_down(node)
        except SlurmCommandError as exc:
            if exc.code == "exec":  # scontrol could not be run: try again later
                log.error('event=slurm_release_failed node=%s error="%s"', node, exc)
                return
            # Slurm refused (an admin changed the node meanwhile): nothing left to do
            log.warning('event=slurm_release_refused node=%s error="%s"', node, exc)
        except SlurmError as exc:
            log.warning('event=slurm_release_failed node=%s error="%s"', node, exc)
            return
        else:
            log.info("event=slurm_node_released node=%s action=power_down", node)
        if self.state.kept_down.get(node) == kept:
            del self.state.kept_down[node]
            self.state.changed()

    async def _sleep(self, seconds: float | None) -> None:
        """Until ``seconds`` pass or ``_wake`` is set; None: until ``_wake`` (idle: a request
        accepted then sets it)."""
        self._idle = seconds is None
        try:
            if seconds is None:
                await self._wake.wait()
            else:
                await sleep_or_event(self.clock, seconds, self._wake)
        finally:
            self._idle = False
            self._wake.clear()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the workers (their requests stay in the state file)."""
        tasks = [*self._workers.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        """For ``GET /v1/slurm``."""
        return {
            "requests": {n: r.request_id for n, r in sorted(self.state.requests.items())},
            "suspends": {n: s.kind for n, s in sorted(self.state.suspends.items())},
            "kept_down": {
                n: {"until": k.until, "reason": k.reason, "down": k.marked}
                for n, k in sorted(self.state.kept_down.items())
            },
            "busy": sorted(self.busy),
            "instances": dict(sorted(self._by_node.items())),
            "launched": [list(pair) for pair in self.launched],
        }


def _launch_error(report: ExecutionReport) -> str:
    """Why a launch launched nothing, as a node's DOWN reason."""
    outcome = report.launches[0] if report.launches else None
    error = outcome.error if outcome is not None and outcome.error else ""
    return f"shoal: {error or 'every offering is in backoff'}"[:200]


def _job_nodes(job: Mapping[str, Any]) -> str:
    """The nodes a job of SLURM_RESUME_FILE is resumed on: ``nodes_resume`` (Slurm 23.02 and
    later; ``nodes_alloc`` is its whole allocation), ``nodes`` in 22.05."""
    for key in ("nodes_resume", "nodes", "nodes_alloc"):
        if job.get(key):
            return str(job[key])
    return ""


def _jobs_by_node(resume_file: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """SLURM_RESUME_FILE's ``{"jobs": [{"job_id": 1, "nodes": "cloud[1-2]"}]}`` by node (Slurm
    22.05 as observed; ``nodes_resume`` from 23.02)."""
    out: dict[str, list[str]] = {}
    jobs = resume_file.get("jobs") if isinstance(resume_file, Mapping) else None
    for job in jobs if isinstance(jobs, list) else []:
        if not isinstance(job, Mapping):
            continue
        try:
            names = expand_hostlist(_job_nodes(job))
        except ValueError:
            continue
        for name in names:
            out.setdefault(name, []).append(str(job.get("job_id", "?")))
    return {n: tuple(j) for n, j in out.items()}


def _gangs(jobs: Mapping[str, tuple[str, ...]], names: list[str]) -> dict[str, tuple[str, ...]]:
    """The nodes of ``names`` to launch all or nothing, by node: those of one multi-node job,
    joined with the nodes of any other job that shares one of them (a 1-node job may share a
    node with a 3-node job: Slurm packs them). A node of no multi-node job is not in it."""
    by_job: dict[str, list[str]] = {}
    for name in names:
        for job in jobs.get(name, ()):
            by_job.setdefault(job, []).append(name)
    parent = {name: name for name in names}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    for nodes in by_job.values():
        for other in nodes[1:]:
            parent[root(other)] = root(nodes[0])
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(root(name), []).append(name)
    return {
        name: tuple(sorted(group)) for group in groups.values() if len(group) > 1 for name in group
    }
