"""The executor: carries out a ``Plan`` through the provider, per node type concurrently.

Every provider call goes through ``call_with_retry`` driven by ``provider.retryPredicate`` and
is timed into ``shoal_provider_call_duration_seconds``. A launch carries a ``requestId`` made
once per planned launch and reused by every retry, so a retried ``addNodes`` never launches
twice. Capacity and quota errors are data, not crashes: they come back in the report as
backoff entries for their offerings. Drains call the drain hook and then mark the node
draining; undrains (draining nodes the plan takes back) call the undrain hook and then mark
the node ready; only the plan's terminations are terminated, and never a static or unknown
node.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from shoal.daemon.drain import DrainError, DrainHook, NoDrainHook, NoUndrainHook, UndrainHook
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.nodes import NodeTracker, TrackedState
from shoal.providers.base import AbstractProvisioner
from shoal.providers.clock import Clock
from shoal.providers.errors import CapacityError, QuotaError
from shoal.providers.retry import RetryPolicy, call_with_retry
from shoal.scaler.backoff import FailureKind
from shoal.scaler.model import Launch, NodeAction, NodeType, Offering, Plan, Policy, RemoveCause

__all__ = ["BackoffEvent", "ExecutionReport", "Executor", "LaunchOutcome"]

log = logging.getLogger(__name__)
T = TypeVar("T")


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


class Executor:
    def __init__(
        self,
        provider: AbstractProvisioner,
        clock: Clock,
        metrics: ShoalMetrics,
        *,
        retry: RetryPolicy | None = None,
        drain_hook: DrainHook | None = None,
        undrain_hook: UndrainHook | None = None,
        request_ids: Callable[[], str] = new_request_id,
    ) -> None:
        self.provider = provider
        self.clock = clock
        self.metrics = metrics
        self.retry = retry or RetryPolicy()
        self.drain_hook: DrainHook = drain_hook or NoDrainHook()
        self.undrain_hook: UndrainHook = undrain_hook or NoUndrainHook()
        self.request_ids = request_ids

    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One provider call with retries on what ``provider.retryPredicate`` accepts.

        ``fn`` must be an ``async def`` (tenacity does not await a lambda's coroutine).
        """
        # A provider that retries its own calls gets one attempt here: retries never nest.
        policy = replace(self.retry, attempts=1) if self.provider.retries_internally else self.retry
        with self.metrics.provider_call(operation, self.clock):
            return await call_with_retry(
                fn,
                self.provider.retryPredicate,
                policy,
                operation=operation,
                sleep=self.clock.sleep,
            )

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
        await asyncio.gather(
            *(
                self._execute_type(
                    name,
                    types.get(name),
                    plan,
                    tracker,
                    unavailable,
                    timed_out,
                    report,
                    allow_launch,
                )
                for name in names
            )
        )
        return report

    async def _execute_type(
        self,
        name: str,
        node_type: NodeType | None,
        plan: Plan,
        tracker: NodeTracker,
        unavailable: set[Offering],
        timed_out: set[Offering],
        report: ExecutionReport,
        allow_launch: bool,
    ) -> None:
        jobs: list[Awaitable[None]] = []
        for launch in plan.launches:
            if launch.node_type != name:
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
            elif set(node_type.offerings()) <= timed_out | unavailable and timed_out:
                log.info(
                    "event=launch_deferred node_type=%s count=%d reason=join-timeout-backoff",
                    name,
                    launch.count,
                )
            elif launch.count > 0:
                jobs.append(self._launch(node_type, launch, unavailable | timed_out, report))
        drains = [a for a in plan.drains if a.node_type == name]
        if drains:
            jobs.append(self._drain_all(drains, tracker, report))
        undrains = [a for a in plan.undrains if a.node_type == name]
        if undrains:
            jobs.append(self._undrain_all(undrains, tracker, report))
        terminations = [a for a in plan.terminations if a.node_type == name]
        if terminations:
            jobs.append(self._terminate(name, terminations, tracker, report))
        await asyncio.gather(*jobs)

    async def _launch(
        self,
        node_type: NodeType,
        launch: Launch,
        unavailable: set[Offering],
        report: ExecutionReport,
    ) -> None:
        offerings = [o for o in node_type.offerings() if o not in unavailable]
        if not offerings:  # the planner chose it anyway; let the provider try them all
            offerings = list(node_type.offerings())
        instance_types = {o.instance_type for o in offerings}
        request_id = self.request_ids()
        log.info(
            'event=scale_up node_type=%s count=%d cause=%s request_id=%s reason="%s"',
            node_type.name,
            launch.count,
            launch.cause,
            request_id,
            launch.message,
        )

        async def add() -> int:
            return await self.provider.addNodes(
                set(instance_types),
                launch.count,
                node_type.preemptible,
                node_type.bid,
                requestId=request_id,
            )

        try:
            launched = await self.call("addNodes", add)
        except CapacityError as exc:
            kind = FailureKind.QUOTA if isinstance(exc, QuotaError) else FailureKind.CAPACITY
            launched = exc.launched
            report.failed_offerings.extend(BackoffEvent(o, kind, str(exc)) for o in exc.offerings)
            self.metrics.scale_up_failures.labels(node_type=node_type.name, reason=kind.value).inc()
            log.warning(
                "event=scale_up_failed node_type=%s requested=%d launched=%d reason=%s "
                'offerings="%s" error="%s"',
                node_type.name,
                launch.count,
                launched,
                kind.value,
                ",".join(str(o) for o in exc.offerings),
                exc,
            )
            error = f"{kind.value}: {exc}"
        except Exception as exc:
            launched = 0
            self.metrics.scale_up_failures.labels(node_type=node_type.name, reason="error").inc()
            log.error(
                'event=scale_up_failed node_type=%s requested=%d reason=error error="%r"',
                node_type.name,
                launch.count,
                exc,
            )
            error = f"error: {exc!r}"
            report.errors.append(f"addNodes {node_type.name}: {exc!r}")
        else:
            error = ""
            if len(offerings) == 1 and launched >= launch.count:
                report.succeeded_offerings.append(offerings[0])
            log.info(
                "event=scaled_up node_type=%s launched=%d request_id=%s",
                node_type.name,
                launched,
                request_id,
            )
        if launched:
            self.metrics.scale_ups.labels(node_type=node_type.name).inc(launched)
        report.launches.append(
            LaunchOutcome(node_type.name, launch.count, launched, request_id, error)
        )

    async def _drain_all(
        self, actions: list[NodeAction], tracker: NodeTracker, report: ExecutionReport
    ) -> None:
        await asyncio.gather(*(self._drain(a, tracker, report) for a in actions))

    async def _drain(
        self, action: NodeAction, tracker: NodeTracker, report: ExecutionReport
    ) -> None:
        tracked = tracker.get(action.node_id)
        if tracked is None or tracked.static:
            log.error("event=drain_refused node=%s reason=unknown-or-static", action.node_id)
            return
        if tracked.state is TrackedState.DRAINING:
            return
        try:
            await self.drain_hook.drain(action.node_id)
        except (DrainError, OSError) as exc:
            report.errors.append(f"drain {action.node_id}: {exc}")
            log.warning('event=drain_failed node=%s error="%s"', action.node_id, exc)
            return
        tracker.mark(action.node_id, TrackedState.DRAINING)
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
        await asyncio.gather(*(self._undrain(a, tracker, report) for a in actions))

    async def _undrain(
        self, action: NodeAction, tracker: NodeTracker, report: ExecutionReport
    ) -> None:
        tracked = tracker.get(action.node_id)
        if tracked is None or tracked.static:
            log.error("event=undrain_refused node=%s reason=unknown-or-static", action.node_id)
            return
        if tracked.state is not TrackedState.DRAINING:
            return  # already back, or terminated meanwhile: nothing to take back
        try:
            await self.undrain_hook.undrain(action.node_id)
        except (DrainError, OSError) as exc:
            report.errors.append(f"undrain {action.node_id}: {exc}")
            log.warning('event=undrain_failed node=%s error="%s"', action.node_id, exc)
            return
        tracker.mark(action.node_id, TrackedState.READY)
        report.undrained.append(action.node_id)
        log.info(
            'event=undrain node=%s node_type=%s cause=%s reason="%s"',
            action.node_id,
            action.node_type,
            action.cause,
            action.message,
        )

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
            chosen.append((action, tracked))
        if not chosen:
            return
        nodes = [t.node for _, t in chosen]

        async def terminate() -> None:
            await self.provider.terminateNodes(nodes)

        try:
            await self.call("terminateNodes", terminate)
        except Exception as exc:
            report.errors.append(f"terminateNodes {name}: {exc!r}")
            log.error(
                'event=scale_down_failed node_type=%s count=%d error="%r"', name, len(nodes), exc
            )
            return
        for action, tracked in chosen:
            tracker.mark(action.node_id, TrackedState.TERMINATED)
            report.terminated.append(action.node_id)
            self.metrics.scale_downs.labels(node_type=name, cause=action.cause.value).inc()
            if action.cause is RemoveCause.JOIN_TIMEOUT:
                report.failed_offerings.append(
                    BackoffEvent(tracked.offering(), FailureKind.CAPACITY, "join-timeout")
                )
            log.info(
                'event=scale_down node=%s node_type=%s cause=%s reason="%s"',
                action.node_id,
                name,
                action.cause,
                action.message,
            )
