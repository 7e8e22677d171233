"""Interruption notices (``provider.interruption_queue``): act before the cloud takes a node.

The ``interruptions`` integration (``daemon.integration``; AWS only) runs one background
task that long-polls the queue (``providers.aws_interruptions``) and handles each notice as
Karpenter's interruption controller does:

- **spot interruption** (the 2-minute warning) and **scheduled change** (AWS Health: a
  retirement or maintenance of the instance): the node is marked interrupted in the tracker
  (out of the planner's view at once: no room, never undrained; after a spot warning the
  jobs running on it are requeued into the snapshot's demand, ``nodes.requeue_running``, so
  the plan launches their room now, while a scheduled change's, weeks ahead maybe, finish
  there and get no second node), drained through the drain hook as a plan's drain is (the
  ``shoal:draining`` mark, then the hook with the reason "spot interruption" or "scheduled
  change": Slurm's ``scontrol update state=drain reason="spot interruption"`` stops placing
  jobs on it), and
  the controller is woken for a pass now, which launches the replacement. A spot
  interruption also backs off the node's offering (instance type x zone x spot), as Karpenter
  marks it unavailable: the pool is being reclaimed. Once drained, the drain mark's value
  says interrupted (``nodes.INTERRUPTED_MARK``): a restarted daemon's tracker marks it
  interrupted again, so it is never taken back as room after the message is gone. The loop
  terminates an interrupted node once it is drained and runs no job: a scheduled change may
  come weeks before the cloud acts, and a node out of the planner's view has no idle timer
  (not with Slurm's power saving, ``Controller.remove_interrupted`` off: Slurm, which shoal
  does not drain there, suspends the node once idle, and a kill could catch a new job).
- **state change** to stopping, stopped, shutting-down or terminated: the shared listing is
  out of date; it is invalidated and a pass woken (a stopped worker is terminated by the
  plan, a terminated one leaves the view).
- **rebalance recommendation**: logged and counted only, as Karpenter does by default. It
  comes well before (and often without) an interruption; draining on it would idle nodes
  that keep running, and the interruption warning, when it comes, still leaves two minutes.

A notice for an instance the tracker does not know as one of this cluster's autoscaled
workers is ignored (another cluster's instance, a static node), so the queue is read only
once the loop's first listing is in (``Controller.ready``): warnings queued while the
daemon was down are not taken for another cluster's. Each message is deleted only
once it has been handled, so a daemon that dies in between handles it again when SQS
re-delivers it: handling is idempotent (a node marked interrupted already is neither backed
off again nor drained twice; the executor skips a confirmed drain). A message that is not a
readable event is logged, counted and deleted; one whose handling failed (the drain's mark
could not be written) is left for re-delivery. Errors of the queue itself are retried by the
provider's retry layer; past it, the loop logs, waits ``error_pause`` and polls again.

Metrics (on the daemon's registry, ``register_metrics``): ``shoal_interruptions_total{kind}``,
notices for this cluster's nodes, and ``shoal_interruption_messages_total{outcome}`` (handled,
ignored, malformed, failed) per message.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from shoal.daemon.drain import INTERRUPTION_REASONS
from shoal.daemon.executor import BackoffEvent, ExecutionReport
from shoal.daemon.nodes import TrackedState
from shoal.providers.aws_interruptions import (
    InterruptionQueue,
    MalformedMessage,
    Notice,
    NoticeKind,
    QueueMessage,
    parse_event,
)
from shoal.scaler.backoff import FailureKind
from shoal.scaler.model import NodeAction, RemoveCause

if TYPE_CHECKING:
    from aiohttp import web
    from shoal.daemon.config import ShoalConfig
    from shoal.daemon.demand import DemandSource
    from shoal.daemon.drain import DrainHook, UndrainHook
    from shoal.daemon.http import BearerToken
    from shoal.daemon.integration import LaunchTags
    from shoal.daemon.loop import Controller, Planner
    from shoal.daemon.metrics import ShoalMetrics
    from shoal.runtime.clock import Clock

__all__ = [
    "INTERRUPTIONS",
    "InterruptionHandler",
    "InterruptionMetrics",
    "Outcome",
    "register_metrics",
]

log = logging.getLogger(__name__)

# a state change that means the instance is going or gone (Karpenter's list)
GOING_STATES = frozenset({"stopping", "stopped", "shutting-down", "terminated"})


class Outcome(enum.StrEnum):
    """What became of one message (``shoal_interruption_messages_total{outcome}``)."""

    HANDLED = "handled"
    IGNORED = "ignored"
    MALFORMED = "malformed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class InterruptionMetrics:
    interruptions: Counter  # shoal_interruptions_total{kind}
    messages: Counter  # shoal_interruption_messages_total{outcome}


def register_metrics(registry: CollectorRegistry) -> InterruptionMetrics:
    """The interruption handler's metrics, on the daemon's registry."""
    return InterruptionMetrics(
        interruptions=Counter(
            "shoal_interruptions",
            "Interruption notices for this cluster's nodes, by kind (spot_interruption, "
            "rebalance, state_change, scheduled_change).",
            ["kind"],
            registry=registry,
        ),
        messages=Counter(
            "shoal_interruption_messages",
            "Messages read from the interruption queue, by outcome (handled, ignored: not "
            "this cluster's or not a watched event, malformed: deleted unread, failed: left "
            "for re-delivery).",
            ["outcome"],
            registry=registry,
        ),
    )


class InterruptionHandler:
    """Reads ``queue`` and acts on ``controller``; ``run()`` until cancelled."""

    def __init__(
        self,
        controller: Controller,
        queue: InterruptionQueue,
        metrics: InterruptionMetrics,
        *,
        error_pause: float = 10.0,
        idle_pause: float = 0.0,
    ) -> None:
        self.controller = controller
        self.queue = queue
        self.metrics = metrics
        self.error_pause = error_pause  # after a failed receive, past the retry layer
        # after an empty receive: 0 with a long poll (SQS waited already); tests short-poll
        self.idle_pause = idle_pause
        # the first listing done (Controller.ready): before it every notice would be taken
        # for another cluster's and deleted
        self._ready = asyncio.Event()
        controller.on_ready.append(self._ready.set)
        if controller.ready:
            self._ready.set()

    @property
    def clock(self) -> Clock:
        return self.controller.clock

    async def run(self) -> None:
        await self._ready.wait()
        while True:
            try:
                handled = await self.poll_once()
            except Exception as exc:
                log.warning(
                    'event=interruption_queue_failed queue=%s retry_in=%.0fs error="%r"',
                    self.queue.queue,
                    self.error_pause,
                    exc,
                )
                await self.clock.sleep(self.error_pause)
                continue
            if not handled and self.idle_pause > 0:
                await self.clock.sleep(self.idle_pause)

    async def poll_once(self) -> int:
        """One receive, its messages handled together (EC2 reclaims spot capacity in bulk:
        a slow drain of one node must not hold back the next node's), each deleted once
        handled; returns how many messages were read. A message whose handling failed is
        left for SQS to deliver again; an error raised by one is raised once all are done."""
        messages = await self.queue.receive()
        results = await asyncio.gather(*map(self._one, messages), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(messages)

    async def _one(self, message: QueueMessage) -> None:
        outcome = await self.handle_message(message)
        self.metrics.messages.labels(outcome=outcome).inc()
        if outcome != Outcome.FAILED:
            await self.queue.delete(message)

    async def handle_message(self, message: QueueMessage) -> Outcome:
        try:
            notice = parse_event(message.body)
        except MalformedMessage as exc:
            log.warning(
                'event=interruption_malformed message=%s error="%s" action=delete',
                message.message_id,
                exc,
            )
            return Outcome.MALFORMED
        if notice is None:
            log.debug("event=interruption_not_watched message=%s", message.message_id)
            return Outcome.IGNORED
        return await self.handle(notice)

    async def handle(self, notice: Notice) -> Outcome:
        """Act on one notice (idempotent); its outcome."""
        tracker = self.controller.tracker
        ours = []
        for instance_id in notice.instance_ids:
            tracked = tracker.get(instance_id)
            if tracked is None or tracked.static or tracked.state is TrackedState.TERMINATED:
                log.info(
                    "event=interruption_ignored kind=%s node=%s reason=not-this-clusters-worker",
                    notice.kind,
                    instance_id,
                )
                continue
            ours.append(instance_id)
        if not ours:
            return Outcome.IGNORED
        self.metrics.interruptions.labels(kind=notice.kind.value).inc(len(ours))
        if notice.kind is NoticeKind.REBALANCE:
            for node in ours:
                log.info("event=rebalance_recommendation node=%s action=none", node)
            return Outcome.HANDLED
        if notice.kind is NoticeKind.STATE_CHANGE:
            if notice.state in GOING_STATES:
                log.info(
                    "event=instance_state_change nodes=%s state=%s action=relist",
                    ",".join(ours),
                    notice.state,
                )
                self.controller.invalidate_listing()
                self.controller.wake()
            return Outcome.HANDLED
        failed = await self._interrupted(notice, ours)
        return Outcome.FAILED if failed else Outcome.HANDLED

    async def _interrupted(self, notice: Notice, nodes: Sequence[str]) -> bool:
        """Spot interruption or scheduled change: out of the view, drained, its offering
        backed off (spot), a pass woken. True when a drain could not even be marked."""
        controller = self.controller
        tracker = controller.tracker
        now = self.clock.now()
        backoff = ExecutionReport()
        for node in nodes:
            tracked = tracker.get(node)
            assert tracked is not None
            imminent = notice.kind is NoticeKind.SPOT_INTERRUPTION
            if tracker.mark_interrupted(node, now, imminent=imminent):
                warned = notice.at if notice.at is not None else now
                log.warning(
                    "event=node_interrupted kind=%s node=%s node_type=%s offering=%s "
                    "warned_at=%.0f action=drain,replace",
                    notice.kind,
                    node,
                    tracked.node_type or "-",
                    tracked.offering(),
                    warned,
                )
                if notice.kind is NoticeKind.SPOT_INTERRUPTION:
                    backoff.failed_offerings.append(
                        BackoffEvent(tracked.offering(), FailureKind.CAPACITY, notice.kind.value)
                    )
        controller.record_outcomes(backoff)
        controller.wake()  # the replacement: a pass now, not at the next interval
        reason = INTERRUPTION_REASONS[notice.kind.value]
        actions = [
            NodeAction(
                node,
                tracked.node_type,
                RemoveCause.INTERRUPTED,
                f"{reason}: the cloud takes it away",
            )
            for node in nodes
            if (tracked := tracker.get(node)) is not None
        ]
        reports = await asyncio.gather(
            *(controller.executor.drain_now(a, tracker, reason) for a in actions)
        )
        failed = False
        for action, report in zip(actions, reports, strict=True):
            tracked = tracker.get(action.node_id)
            if tracked is not None and tracked.state is not TrackedState.DRAINING:
                failed = True  # no mark, no drain: handled again on re-delivery
                log.warning(
                    'event=interruption_drain_failed node=%s errors="%s"',
                    action.node_id,
                    "; ".join(report.errors),
                )
            elif tracked is not None and not await self._mark(action.node_id, now):
                failed = True  # a restart would not know: handled again on re-delivery
        return failed

    async def _mark(self, node: str, now: float) -> bool:
        """The drain mark says interrupted, so a restarted daemon keeps the node out of
        the planner's view (never undrained) and terminates it once idle; False: refused."""
        try:
            await self.controller.executor.mark_draining(node, now, interrupted=True)
        except Exception as exc:
            log.warning('event=interruption_mark_failed node=%s error="%r"', node, exc)
            return False
        return True


class _InterruptionIntegration:
    """The background task around one controller."""

    def __init__(self, handler: InterruptionHandler) -> None:
        self.handler = handler

    def demand_sources(self) -> Sequence[DemandSource]:
        return ()

    def add_routes(self, app: web.Application) -> None:
        return None

    async def run(self) -> None:
        await self.handler.run()

    async def close(self) -> None:
        return None


class _InterruptionKind:
    """``provider.interruption_queue`` set (AWS): read it beside the control loop."""

    name = "interruptions"

    def planner(self, config: ShoalConfig) -> Planner | None:
        return None

    def drain_hook(self, config: ShoalConfig) -> DrainHook | None:
        return None

    def undrain_hook(self, config: ShoalConfig) -> UndrainHook | None:
        return None

    def launch_tags(self, config: ShoalConfig) -> LaunchTags | None:
        return None

    def build(
        self,
        config: ShoalConfig,
        clock: Clock,
        metrics: ShoalMetrics,
        controller: Controller,
        token: BearerToken | None = None,
    ) -> _InterruptionIntegration:
        from shoal.daemon.wiring import retry_policy
        from shoal.providers.aws import AWSProvisioner

        provider = controller.provider
        queue_name = getattr(config.provider, "interruption_queue", None)
        if not isinstance(provider, AWSProvisioner) or not queue_name:
            raise ValueError("provider.interruption_queue needs provider.kind aws")
        queue = InterruptionQueue.for_provider(provider, queue_name, retry=retry_policy(config))
        handler = InterruptionHandler(controller, queue, register_metrics(metrics.registry))
        if config.slurm is not None and config.slurm.mode == "power_save":
            controller.remove_interrupted = False  # Slurm suspends the idle node: no kill
        log.info("event=interruption_queue_watched queue=%s", queue_name)
        return _InterruptionIntegration(handler)


INTERRUPTIONS = _InterruptionKind()
