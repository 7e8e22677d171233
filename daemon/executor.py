"""The executor: carries out a ``Plan`` through the provider, per node type concurrently.

This is shoal's one retry layer: every provider call goes through ``call_with_retry``, driven
by ``provider.retryPredicate`` and the configured ``RetryPolicy``, and is timed into
``shoal_provider_call_duration_seconds``. A launch carries a ``requestId`` made once per planned
launch and reused by every retry; the provider derives each offering's client token from it,
so a retried ``addNodes`` returns what an earlier attempt launched and never launches twice.
A launch's gangs (``Launch.gangs``: multi-node jobs) are each one request of their own, all or
nothing (``addNodes(all_or_nothing=True)``: the whole gang in one offering, so one zone, or
none of it), before the rest of its count as single nodes; each request is one intent on disk
(``before_launch``) and one ``LaunchOutcome``.

What the seed's return values cannot say comes from the provider's events
(``providers.outcomes``), collected per request: every offering tried, with the ids it launched
(for the launch ledger) or its error (capacity and quota errors back that offering off, even
when another offering filled the request; a success clears only the offering that launched),
and for terminations which ids are gone and which failed. Drains tag the instance
``shoal:draining=<epoch seconds>`` (``TAG_DRAINING``, so a restarted daemon adopts it as
draining; a failed tag means no drain this pass), call the drain hook and then mark the node
draining, the drain confirmed (a failed hook removes the tag again); a drain the tag alone
vouches for (``TrackedNode.drain_confirmed`` False) runs the hook again, hooks being
idempotent; undrains (draining nodes the plan takes back)
call the undrain hook, remove the tag and then mark the node ready; only the plan's
terminations are terminated, never a static or unknown node; a ledger placeholder (a launch
whose response was lost) has no instance to terminate. With ``ha`` every action on an
existing instance (a termination batch, a draining tag, a drain or undrain hook the tag does
not precede) first confirms the term (``confirm_term``: a fenced state write, as a launch's
intent is), so a deposed leader acts on nothing. Every branch (per node type, and each
step within one) runs to its end even when another raises: that exception is an error in the
report, and the others' outcomes stay in it to be booked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from shoal.daemon.drain import (
    DrainError,
    DrainHook,
    DrainTimeout,
    NoDrainHook,
    NoUndrainHook,
    UndrainHook,
)
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.nodes import INTERRUPTED_MARK, NodeTracker, TrackedState
from shoal.providers.errors import CapacityError, ProviderError, TerminationError
from shoal.providers.node_provider import (
    TAG_DRAINING,
    TAG_EPOCH,
    Provisioner,
    request_term,
    term_request_id,
)
from shoal.providers.outcomes import LaunchAttempt, ProviderEvent, TerminationResult
from shoal.providers.retry import RetryPolicy, call_with_retry
from shoal.runtime.clock import Clock
from shoal.scaler.backoff import FailureKind
from shoal.scaler.model import (
    AddCause,
    Launch,
    NodeAction,
    NodeType,
    Offering,
    Plan,
    Policy,
    RemoveCause,
)

__all__ = [
    "BackoffEvent",
    "ExecutionReport",
    "Executor",
    "LaunchOutcome",
    "OnOffering",
    "Replayable",
    "new_request_id",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Replayable:
    """What a plan's launch unit needs to be made again, exactly, by a daemon that finds its
    intent on disk with no answer (``Executor.replay``): its tags as sent, whether it is one
    gang (all or nothing), and its cause. Its request id and offering give the same client
    token, so the cloud returns what the unit launched, if it did."""

    tags: Mapping[str, str]
    gang: bool
    cause: str


# (request id, node type, count, the offering about to be tried, what replays it: None for a
# launch outside a plan) -> awaited before each offering addNodes tries
# (request id, node type, the count the offering is asked for, the offering, what makes it
# again, the ids the unit's earlier offerings and tries answered, each with its offering)
BeforeLaunch = Callable[
    [str, NodeType, int, Offering, Replayable | None, tuple[tuple[str, Offering], ...]],
    Awaitable[None],
]
# (the offering about to be tried, its client token) -> noted before before_launch's write
OnOffering = Callable[[Offering, str], None]


class _NotWritten(Exception):
    """``before_launch`` failed: the offering was not tried (a launch not on disk could not
    be found again after a crash)."""


@dataclass(frozen=True, slots=True)
class BackoffEvent:
    offering: Offering
    kind: FailureKind
    reason: str


@dataclass(frozen=True, slots=True)
class LaunchOutcome:
    node_type: str
    requested: int
    launched: int
    request_id: str
    error: str = ""  # "" on success


@dataclass(slots=True)
class ExecutionReport:
    launches: list[LaunchOutcome] = field(default_factory=list)
    attempts: list[LaunchAttempt] = field(default_factory=list)  # every offering tried
    drained: list[str] = field(default_factory=list)
    undrained: list[str] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed_offerings: list[BackoffEvent] = field(default_factory=list)
    succeeded_offerings: list[Offering] = field(default_factory=list)

    @property
    def launched(self) -> int:
        return sum(o.launched for o in self.launches)


def new_request_id() -> str:
    return f"shoal-{uuid.uuid4().hex}"


def _no_tags(node_type: NodeType, policy: Policy) -> Mapping[str, str]:
    return {}


class Executor:
    def __init__(
        self,
        provider: Provisioner,
        clock: Clock,
        metrics: ShoalMetrics,
        *,
        retry: RetryPolicy | None = None,
        drain_hook: DrainHook | None = None,
        undrain_hook: UndrainHook | None = None,
        request_ids: Callable[[], str] = new_request_id,
        launch_tags: Callable[[NodeType, Policy], Mapping[str, str]] | None = None,
        before_launch: BeforeLaunch | None = None,
    ) -> None:
        self.provider = provider
        self.clock = clock
        self.metrics = metrics
        self.retry = retry or RetryPolicy()
        self.drain_hook: DrainHook = drain_hook or NoDrainHook()
        self.undrain_hook: UndrainHook = undrain_hook or NoUndrainHook()
        self.request_ids = request_ids
        # awaited before each offering addNodes tries: the launch's intent, with that offering,
        # goes on disk (daemon.durable)
        self.before_launch = before_launch
        # extra tags for every launch of a node type (a Slurm cluster's node features), under
        # the policy in force (``policy``: the controller keeps it up to date)
        self.launch_tags: Callable[[NodeType, Policy], Mapping[str, str]] = launch_tags or _no_tags
        self.policy: Policy | None = None
        # ha: the leader's term, in every new request id and a tag on every launch
        self.epoch: int | None = None
        # awaited before a termination or a draining tag reaches the cloud (ha: a fenced
        # state write confirming the term, as a launch's intent does); raising refuses it
        self.before_actuate: Callable[[], Awaitable[None]] | None = None
        self._events: dict[str, list[ProviderEvent]] = {}
        self._node_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        provider.subscribe(self._on_event)

    @contextlib.asynccontextmanager
    async def node_lock(self, node_id: str) -> AsyncIterator[None]:
        """Held across a node's drain (tag, hook), undrain (hook, untag) or adoption (the
        tag, and the check before it), so none of them interleaves with another."""
        lock, users = self._node_locks.setdefault(node_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._node_locks[node_id]

    def _on_event(self, event: ProviderEvent) -> None:
        if isinstance(event, LaunchAttempt | TerminationResult):
            collected = self._events.get(event.request_id)
            if collected is not None:
                collected.append(event)

    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One provider call with retries on what ``provider.retryPredicate`` accepts.

        ``fn`` must be an ``async def`` (tenacity does not await a lambda's coroutine).
        """
        with self.metrics.provider_call(operation, self.clock):
            return await call_with_retry(
                fn,
                self.provider.retryPredicate,
                self.retry,
                operation=operation,
                sleep=self.clock.sleep,
            )

    async def _tracked_call(
        self, operation: str, request_id: str, fn: Callable[[], Awaitable[T]]
    ) -> tuple[T | BaseException, list[ProviderEvent]]:
        """``call`` that also collects the provider's events for ``request_id``; returns the
        result or the exception it ended with, and the events."""
        self._events[request_id] = []
        try:
            return await self.call(operation, fn), self._events[request_id]
        except Exception as exc:
            return exc, self._events[request_id]
        finally:
            self._events.pop(request_id, None)

    async def execute(
        self,
        plan: Plan,
        policy: Policy,
        tracker: NodeTracker,
        unavailable: set[Offering],
        *,
        allow_launch: bool = True,
    ) -> ExecutionReport:
        """Carry out ``plan``: per node type, launches, drains and terminations concurrently."""
        report = ExecutionReport()
        types = {nt.name: nt for nt in policy.node_types}
        # Offerings whose nodes this plan removes for never joining are not launched into again
        # in the same pass: those launches wait for the next plan, which sees the backoff.
        timed_out = {
            tracked.offering()
            for action in plan.terminations
            if action.cause is RemoveCause.JOIN_TIMEOUT
            and (tracked := tracker.get(action.node_id)) is not None
        }
        names = sorted(
            {a.node_type for a in plan.launches}
            | {a.node_type for a in plan.drains}
            | {a.node_type for a in plan.undrains}
            | {a.node_type for a in plan.terminations}
        )
        await self._gather(
            [
                self._execute_type(
                    name,
                    types.get(name),
                    plan,
                    tracker,
                    unavailable | timed_out,
                    report,
                    allow_launch,
                )
                for name in names
            ],
            report,
        )
        return report

    @staticmethod
    async def _gather(jobs: list[Awaitable[None]], report: ExecutionReport) -> None:
        """Run ``jobs`` to the end, every one of them: a job that raises becomes an error in
        the report, and what the others did stays in it (a launch of one type is booked
        even when another type's drain hook raised). Cancellation is not caught."""
        for result in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(result, Exception):
                report.errors.append(f"{type(result).__name__}: {result}")
                log.error('event=execute_branch_failed error="%r"', result)
                log.debug("event=execute_branch_failed_traceback", exc_info=result)
            elif isinstance(result, BaseException):
                raise result

    async def _execute_type(
        self,
        name: str,
        node_type: NodeType | None,
        plan: Plan,
        tracker: NodeTracker,
        unavailable: set[Offering],
        report: ExecutionReport,
        allow_launch: bool,
    ) -> None:
        jobs: list[Awaitable[None]] = []
        for launch in plan.launches:
            if launch.node_type != name or launch.count <= 0:
                continue
            if not allow_launch:
                log.info(
                    "event=launch_skipped node_type=%s count=%d reason=stopping",
                    name,
                    launch.count,
                )
            elif node_type is None:
                report.errors.append(f"launch of unknown node type {name!r}")
                log.error("event=launch_skipped node_type=%s reason=unknown-node-type", name)
            elif set(node_type.offerings()) <= unavailable:
                log.info(
                    "event=launch_deferred node_type=%s count=%d reason=offerings-in-backoff",
                    name,
                    launch.count,
                )
            else:
                jobs.append(self._launch(node_type, launch, unavailable, report))
        drains = [a for a in plan.drains if a.node_type == name]
        if drains:
            jobs.append(self._drain_all(drains, tracker, report))
        undrains = [a for a in plan.undrains if a.node_type == name]
        if undrains:
            jobs.append(self._undrain_all(undrains, tracker, report))
        terminations = [a for a in plan.terminations if a.node_type == name]
        if terminations:
            jobs.append(self._terminate(name, terminations, tracker, report))
        await self._gather(jobs, report)

    def new_request_id(self) -> str:
        """A launch's request id: the term's while leading (``term_request_id``)."""
        return term_request_id(self.request_ids(), self.epoch)

    async def confirm_term(self) -> None:
        """Before a termination or a tag reaches the cloud: ``before_actuate`` (ha: a fenced
        write proving the term still holds its key, so a deposed leader whose guard has not
        fired yet cannot act). Raises what it raised (``Fenced``): nothing may be called then."""
        if self.before_actuate is not None:
            await self.before_actuate()

    def _launched(self, request_id: str) -> dict[str, Offering]:
        """The ids this request's attempts so far launched, each with its offering."""
        return {
            i: e.offering
            for e in self._events.get(request_id, ())
            if isinstance(e, LaunchAttempt)
            for i in e.ids
        }

    async def term_holds(self, skipped: str) -> bool:
        """``confirm_term`` for a loop beside the plan (the Slurm clean-up, the weigher):
        False when it was refused, logged as the loop's ``skipped`` event; the loop changes
        nothing and tries again at its next run."""
        try:
            await self.confirm_term()
        except Exception as exc:
            log.warning('event=%s reason=term-unconfirmed error="%r"', skipped, exc)
            return False
        return True

    async def _confirmed(self, what: str, report: ExecutionReport) -> bool:
        """``confirm_term``; False, with the error in the report, when it was refused."""
        try:
            await self.confirm_term()
        except Exception as exc:
            report.errors.append(f"{what}: term not confirmed: {exc!r}")
            log.error('event=actuation_refused what="%s" error="%r"', what, exc)
            return False
        return True

    def _epoch_tag(self, request_id: str) -> dict[str, str]:
        """The term that made the request (a caller's, restored from an earlier term, keeps
        its own: its client token sent again must carry the same tags, or EC2 answers
        ``IdempotentParameterMismatch``), else this one; none without ``ha``."""
        if self.epoch is None:
            return {}
        term = request_term(request_id)
        return {TAG_EPOCH: str(self.epoch if term is None else term)}

    async def launch(
        self,
        node_type: NodeType,
        launch: Launch,
        unavailable: set[Offering],
        *,
        request_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        first: Offering | None = None,
        on_offering: OnOffering | None = None,
    ) -> ExecutionReport:
        """One launch outside a plan (a Slurm resume request): as a plan's launch, with the
        caller's request id (a retried request then launches nothing twice), extra tags, the
        offering to try first, and ``on_offering`` called with each offering and its client
        token before it is tried (and before ``before_launch``'s write, which saves what it
        changed). ``Controller.launch`` calls it and books the report."""
        report = ExecutionReport()
        await self._launch(
            node_type, launch, unavailable, report, request_id, tags, first, on_offering
        )
        return report

    async def _launch(
        self,
        node_type: NodeType,
        launch: Launch,
        unavailable: set[Offering],
        report: ExecutionReport,
        request_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        first: Offering | None = None,
        on_offering: OnOffering | None = None,
    ) -> None:
        """``launch`` as one request per unit, one after the other: each gang of
        ``launch.gangs`` all or nothing (in one offering: one zone), then the rest of its count
        as single nodes. A unit is one request id (the caller's for the first, suffixed ``-i``
        for the i-th after it), one intent on disk and one ``LaunchOutcome``."""
        units = [(n, True) for n in launch.gangs if n > 0]
        if (rest := launch.count - sum(n for n, _ in units)) > 0:
            units.append((rest, False))
        for i, (count, all_or_nothing) in enumerate(units):
            unit_id = self.new_request_id() if request_id is None else request_id
            if request_id is not None and i:
                unit_id = f"{request_id}-{i}"
            unit_tags = {
                **self._type_tags(node_type),
                **(tags or {}),
                **self._epoch_tag(request_id or unit_id),
            }
            # a plan's unit is made again as it was if its answer never reached the ledger;
            # one made for a caller (a Slurm resume request) is that caller's to ask again
            replay = Replayable(unit_tags, all_or_nothing, launch.cause.value)
            await self._launch_unit(
                node_type,
                launch,
                count,
                all_or_nothing,
                unavailable,
                report,
                unit_id,
                unit_tags,
                first,
                on_offering,
                replay if request_id is None else None,
            )

    async def replay(
        self,
        node_type: NodeType,
        request_id: str,
        offering: Offering,
        count: int,
        replay: Replayable,
        unavailable: set[Offering],
    ) -> ExecutionReport:
        """Make again a plan's launch unit whose intent was found on disk with no answer (the
        daemon stopped, or lost its store, between the two): the same request id, tags and
        count, ``offering`` (the last one it may have tried) first. Its client token there
        returns what it launched, if it did; if it did not, this launches it now, so the
        capacity the planner counts as booting is real. Its intent is written again first."""
        report = ExecutionReport()
        cause = next((c for c in AddCause if c.value == replay.cause), AddCause.DEMAND)
        message = f"the launch of {request_id} made again: its answer never reached the ledger"
        launch = Launch(node_type.name, count, cause, message, (count,) if replay.gang else ())
        await self._launch_unit(
            node_type,
            launch,
            count,
            replay.gang,
            unavailable,
            report,
            request_id,
            dict(replay.tags),
            offering,
            None,
            replay,
        )
        return report

    def _type_tags(self, node_type: NodeType) -> Mapping[str, str]:
        if self.launch_tags is _no_tags:
            return {}
        if self.policy is None:
            raise RuntimeError("launch tags need the policy in force (Executor.policy)")
        return self.launch_tags(node_type, self.policy)

    async def _launch_unit(
        self,
        node_type: NodeType,
        launch: Launch,
        count: int,
        all_or_nothing: bool,
        unavailable: set[Offering],
        report: ExecutionReport,
        request_id: str,
        tags: Mapping[str, str],
        first: Offering | None,
        on_offering: OnOffering | None,
        replay: Replayable | None = None,
    ) -> None:
        log.info(
            'event=scale_up node_type=%s count=%d gang=%s cause=%s request_id=%s reason="%s"',
            node_type.name,
            count,
            all_or_nothing,
            launch.cause,
            request_id,
            launch.message,
        )

        async def before_offering(offering: Offering, token: str) -> None:
            # Each offering and its intent on disk before it is tried, not just the first: a
            # replay after a crash starts at the last one that may have launched, whose client
            # token returns what it did (one that failed may have capacity again by then).
            if on_offering is not None:
                on_offering(offering, token)
            if self.before_launch is not None:
                # what the unit's earlier offerings (and tries) launched goes on disk with the
                # intent, which counts only the rest, as this offering is asked for it: made
                # again after a crash, the rest is asked for, under this offering's token
                answered = self._launched(request_id)
                rest, again = count - len(answered), replay
                if all_or_nothing and answered:  # a gang's ids are whole or undone: not made
                    rest, again, answered = count, None, {}  # again; its placeholders wait
                try:
                    await self.before_launch(
                        request_id, node_type, rest, offering, again, tuple(answered.items())
                    )
                except Exception as exc:  # not on disk: it could not be found after a crash
                    raise _NotWritten(f"state not written: {exc!r}") from exc

        async def add() -> int:
            # A retry starts at the offering whose answer was lost: it may have launched, and
            # its client token returns what it did. Starting over at the first offering would
            # launch again elsewhere once that one has capacity back.
            doubt = [
                e
                for e in self._events.get(request_id, ())
                if isinstance(e, LaunchAttempt) and e.uncertain
            ]
            # Single nodes an earlier attempt launched are not asked for again: the retry
            # asks the rest, as the offering in doubt was asked before (its token sent with
            # another count is EC2's IdempotentParameterMismatch; a throttled one would
            # launch the whole unit), and not in the offerings that launched them: their
            # tokens have answered, and sent with the smaller count they would be refused
            # so, ending the unit before the offerings after them (review reviewn). A
            # gang's ids never count: it is whole or undone.
            done = {} if all_or_nothing else self._launched(request_id)
            return await self.provider.addNodes(
                list(node_type.instance_types),  # preference order, as configured
                count - len(done),
                node_type.preemptible,
                node_type.bid,
                requestId=request_id,
                exclude=unavailable | set(done.values()),
                tags=tags,
                first=doubt[-1].offering if doubt else first,
                before_offering=before_offering,
                all_or_nothing=all_or_nothing,
                placement_group=node_type.placement_group,
            )

        result, events = await self._tracked_call("addNodes", request_id, add)
        attempts = [e for e in events if isinstance(e, LaunchAttempt)]
        report.attempts.extend(attempts)
        launched_ids = {i for a in attempts for i in a.ids}
        failed: dict[Offering, BackoffEvent] = {}
        for attempt in attempts:
            if attempt.ids:
                report.succeeded_offerings.append(attempt.offering)
            elif attempt.capacity_error and attempt.offering not in failed:
                kind = FailureKind.QUOTA if attempt.quota_error else FailureKind.CAPACITY
                failed[attempt.offering] = BackoffEvent(attempt.offering, kind, str(attempt.error))
        report.failed_offerings.extend(failed.values())
        for event in failed.values():
            self.metrics.scale_up_failures.labels(
                node_type=node_type.name, reason=event.kind.value
            ).inc()
        error = ""
        if isinstance(result, _NotWritten):
            log.error('event=launch_not_journaled request_id=%s error="%s"', request_id, result)
            report.errors.append(f"addNodes {node_type.name}: {result}")
            error = f"error: {result}"
        elif isinstance(result, BaseException):
            if not isinstance(result, CapacityError):
                self.metrics.scale_up_failures.labels(
                    node_type=node_type.name, reason="error"
                ).inc()
                report.errors.append(f"addNodes {node_type.name}: {result!r}")
            kind = "error" if not isinstance(result, CapacityError) else "capacity"
            error = f"{kind}: {result}"
            log.warning(
                "event=scale_up_failed node_type=%s requested=%d launched=%d request_id=%s "
                'error="%r"',
                node_type.name,
                count,
                len(launched_ids),
                request_id,
                result,
            )
        else:
            log.info(
                "event=scaled_up node_type=%s launched=%d requested=%d request_id=%s",
                node_type.name,
                len(launched_ids),  # every try's: a retry's answer counts only its own
                count,
                request_id,
            )
        if launched_ids:
            self.metrics.scale_ups.labels(node_type=node_type.name).inc(len(launched_ids))
        report.launches.append(
            LaunchOutcome(node_type.name, count, len(launched_ids), request_id, error)
        )

    async def _drain_all(
        self, actions: list[NodeAction], tracker: NodeTracker, report: ExecutionReport
    ) -> None:
        await self._gather([self._drain(a, tracker, report) for a in actions], report)

    async def _drain(
        self, action: NodeAction, tracker: NodeTracker, report: ExecutionReport
    ) -> None:
        async with self.node_lock(action.node_id):
            await self._drain_locked(action, tracker, report)

    async def drain_now(
        self, action: NodeAction, tracker: NodeTracker, reason: str | None = None
    ) -> ExecutionReport:
        """Drain one node outside a plan (an interruption notice), as a plan's drain is made
        (the mark, then the hook, given ``reason``); what it did is in the report."""
        report = ExecutionReport()
        async with self.node_lock(action.node_id):
            await self._drain_locked(action, tracker, report, reason)
        return report

    async def _drain_locked(
        self,
        action: NodeAction,
        tracker: NodeTracker,
        report: ExecutionReport,
        reason: str | None = None,
    ) -> None:
        tracked = tracker.get(action.node_id)
        if tracked is None or tracked.static:
            log.error("event=drain_refused node=%s reason=unknown-or-static", action.node_id)
            return
        # a drain only the mark vouches for is made again (drain hooks are idempotent)
        again = tracked.state is TrackedState.DRAINING
        if again and tracked.drain_confirmed:
            return
        # The mark first: a daemon restarted after the hook ran must find the node draining.
        if not again and not await self._retag(action.node_id, self.clock.now(), report):
            return  # no mark, no drain: the next plan asks again
        if again and not await self._confirmed(f"drain {action.node_id}", report):
            return  # the mark confirmed the term; without one, this does
        try:
            if reason is None:  # a plan's drain: the hook's own reason
                await self.drain_hook.drain(action.node_id)
            else:
                await self.drain_hook.drain(action.node_id, reason)
        except DrainTimeout as exc:
            # As documented: a drain that times out counts as done; the node is terminated
            # once no job runs on it.
            report.errors.append(f"drain {action.node_id}: {exc}")
            log.warning(
                'event=drain_timeout node=%s action=treat-as-drained error="%s"',
                action.node_id,
                exc,
            )
        except (DrainError, OSError) as exc:
            report.errors.append(f"drain {action.node_id}: {exc}")
            log.warning('event=drain_failed node=%s error="%s"', action.node_id, exc)
            # left as it was, mark included (a mark that stays makes it a drain to make again)
            if not again and await self._retag(action.node_id, None, report):
                tracker.mark_undrained(action.node_id, self.clock.now())
            return
        tracker.mark_drained(action.node_id)
        report.drained.append(action.node_id)
        log.info(
            'event=drain node=%s node_type=%s cause=%s reason="%s"',
            action.node_id,
            action.node_type,
            action.cause,
            action.message,
        )

    async def _undrain_all(
        self, actions: list[NodeAction], tracker: NodeTracker, report: ExecutionReport
    ) -> None:
        await self._gather([self._undrain(a, tracker, report) for a in actions], report)

    async def _undrain(
        self, action: NodeAction, tracker: NodeTracker, report: ExecutionReport
    ) -> None:
        async with self.node_lock(action.node_id):
            await self._undrain_locked(action, tracker, report)

    async def _undrain_locked(
        self, action: NodeAction, tracker: NodeTracker, report: ExecutionReport
    ) -> None:
        tracked = tracker.get(action.node_id)
        if tracked is None or tracked.static:
            log.error("event=undrain_refused node=%s reason=unknown-or-static", action.node_id)
            return
        if tracked.state is not TrackedState.DRAINING:
            return  # already back, or terminated meanwhile: nothing to take back
        if not await self._confirmed(f"undrain {action.node_id}", report):
            return  # the hook runs before the tag's removal: confirm the term first
        try:
            await self.undrain_hook.undrain(action.node_id)
        except (DrainError, OSError) as exc:
            report.errors.append(f"undrain {action.node_id}: {exc}")
            log.warning('event=undrain_failed node=%s error="%s"', action.node_id, exc)
            return
        # The scheduler takes work again. The tracker ignores a mark listings still show (its
        # removal not listed yet, or failed) for the ledger's TTL; one left after that is a
        # drain to make again.
        await self._retag(action.node_id, None, report)
        tracker.mark_undrained(action.node_id, self.clock.now())
        report.undrained.append(action.node_id)
        log.info(
            'event=undrain node=%s node_type=%s cause=%s reason="%s"',
            action.node_id,
            action.node_type,
            action.cause,
            action.message,
        )

    async def mark_draining(
        self, node_id: str, since: float | None, *, interrupted: bool = False
    ) -> None:
        """Tag a node ``TAG_DRAINING=<since>`` (epoch seconds; ``<since> interrupted`` when
        the cloud takes it away: ``INTERRUPTED_MARK``), or remove the tag (None), through the
        retry layer; raises what the provider raised last."""
        value = f"{int(since or 0)} {INTERRUPTED_MARK}" if interrupted else str(int(since or 0))

        async def tag() -> None:
            await self.provider.tag_instances([node_id], {TAG_DRAINING: value})

        async def untag() -> None:
            await self.provider.untag_instances([node_id], [TAG_DRAINING])

        await self.confirm_term()
        if since is not None:
            await self.call("tagInstances", tag)
        else:
            await self.call("untagInstances", untag)

    async def _retag(self, node_id: str, since: float | None, report: ExecutionReport) -> bool:
        """``mark_draining``; False, with the error in the report, when the cloud refused."""
        try:
            await self.mark_draining(node_id, since)
        except Exception as exc:
            report.errors.append(f"draining mark of {node_id}: {exc!r}")
            log.warning('event=drain_mark_failed node=%s since=%s error="%r"', node_id, since, exc)
            return False
        return True

    async def _terminate(
        self,
        name: str,
        actions: list[NodeAction],
        tracker: NodeTracker,
        report: ExecutionReport,
    ) -> None:
        chosen = []
        for action in actions:
            tracked = tracker.get(action.node_id)
            if tracked is None or tracked.static:
                log.error(
                    "event=terminate_refused node=%s reason=unknown-or-static", action.node_id
                )
                continue
            if tracked.state is TrackedState.TERMINATED:
                continue
            if tracked.placeholder:  # a lost launch response: no instance id to terminate
                tracker.forget(action.node_id)
                self._removed(name, action, tracked.offering(), report)
                continue
            chosen.append((action, tracked))
        if not chosen:
            return
        # one confirmation per batch (concurrent ones share the store's write)
        if not await self._confirmed(f"terminateNodes {name}", report):
            return
        request_id = self.request_ids()

        async def terminate() -> None:
            await self.provider.terminateNodes([t.node for _, t in chosen], requestId=request_id)

        result, events = await self._tracked_call("terminateNodes", request_id, terminate)
        done = {i for e in events if isinstance(e, TerminationResult) for i in e.done}
        failures: dict[str, ProviderError] = {}
        if isinstance(result, TerminationError):
            failures = result.failed
        elif isinstance(result, BaseException):
            report.errors.append(f"terminateNodes {name}: {result!r}")
        for action, tracked in chosen:
            if action.node_id not in done:
                error = failures.get(action.node_id, result)
                report.errors.append(f"terminate {action.node_id}: {error!r}")
                log.error(
                    'event=scale_down_failed node=%s node_type=%s error="%r"',
                    action.node_id,
                    name,
                    error,
                )
                continue
            tracker.mark(action.node_id, TrackedState.TERMINATED)
            self._removed(name, action, tracked.offering(), report)

    def _removed(
        self, name: str, action: NodeAction, offering: Offering, report: ExecutionReport
    ) -> None:
        report.terminated.append(action.node_id)
        self.metrics.scale_downs.labels(node_type=name, cause=action.cause.value).inc()
        if action.cause is RemoveCause.JOIN_TIMEOUT:
            report.failed_offerings.append(
                BackoffEvent(offering, FailureKind.CAPACITY, "join-timeout")
            )
        log.info(
            'event=scale_down node=%s node_type=%s cause=%s reason="%s"',
            action.node_id,
            name,
            action.cause,
            action.message,
        )
