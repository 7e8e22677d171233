"""Prometheus metrics of one daemon, in its own ``CollectorRegistry`` (prefix ``shoal_``).

The names are a contract with the Grafana dashboard; change them only together with it.
These are the core metrics; a subsystem registers its own collectors on the same registry
(the Slurm integration's: ``daemon.slurm.metrics``).
``ShoalMetrics.render()`` gives the text exposition served on ``GET /metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from shoal.scaler.planner import WAITING_REASONS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from shoal.runtime.clock import Clock
    from shoal.scaler.model import Offering, Unschedulable

__all__ = ["CONTENT_TYPE_LATEST", "PASS_OUTCOMES", "ShoalMetrics"]

PASS_OUTCOMES = ("ok", "error", "skipped")
NODE_STATES = ("booting", "ready", "draining", "terminated")

_PROVIDER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ShoalMetrics:
    """Every metric shoal exports. One instance per daemon; tests make their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # the series each gauge set by ``_set_exactly`` shows, with their children
        self._shown: dict[Gauge, dict[tuple[str, ...], Gauge]] = {}
        self._call_timers: dict[str, Histogram] = {}  # provider_call_duration's, by operation
        self.nodes = Gauge(
            "shoal_nodes",
            "Worker nodes by node type and state.",
            ["node_type", "state"],
            registry=r,
        )
        self.jobs_queued = Gauge("shoal_jobs_queued", "Jobs waiting for a node.", registry=r)
        self.jobs_running = Gauge("shoal_jobs_running", "Jobs running on a node.", registry=r)
        self.jobs_unschedulable = Gauge(
            "shoal_jobs_unschedulable",
            "Queued jobs that can never fit: no node type has room for them, by the "
            "dimensions that fail (reason: cores, memory, disk, comma-separated).",
            ["reason"],
            registry=r,
        )
        self.jobs_waiting_for_limit = Gauge(
            "shoal_jobs_waiting_for_limit",
            "Queued jobs that fit a node type but wait: its max (max-nodes), the cost "
            "ceiling (cost-ceiling), or every type that fits in capacity backoff (unavailable).",
            ["reason"],
            registry=r,
        )
        self.target_nodes = Gauge(
            "shoal_target_nodes",
            "Node count the last plan wants per type.",
            ["node_type"],
            registry=r,
        )
        self.scale_ups = Counter("shoal_scale_ups", "Nodes launched.", ["node_type"], registry=r)
        self.scale_downs = Counter(
            "shoal_scale_downs", "Nodes terminated, by cause.", ["node_type", "cause"], registry=r
        )
        self.scale_up_failures = Counter(
            "shoal_scale_up_failures",
            "Launches that failed, by reason (capacity, quota, error).",
            ["node_type", "reason"],
            registry=r,
        )
        self.offerings_in_backoff = Gauge(
            "shoal_offerings_in_backoff",
            "Offerings (type x zone x capacity type) backed off after capacity errors.",
            registry=r,
        )
        self.provider_call_duration = Histogram(
            "shoal_provider_call_duration_seconds",
            "Duration of provider calls, retries included.",
            ["operation"],
            buckets=_PROVIDER_BUCKETS,
            registry=r,
        )
        self.provider_errors = Counter(
            "shoal_provider_errors",
            "Provider calls that failed after retries, by error code.",
            ["operation", "code"],
            registry=r,
        )
        self.pass_duration = Histogram(
            "shoal_pass_duration_seconds",
            "Duration of one control-loop pass.",
            buckets=_PASS_BUCKETS,
            registry=r,
        )
        self.passes = Counter(
            "shoal_passes",
            "Control-loop passes by outcome (ok, error, skipped).",
            ["outcome"],
            registry=r,
        )
        self.last_successful_pass = Gauge(
            "shoal_last_successful_pass_timestamp_seconds",
            "Unix time the last pass completed.",
            registry=r,
        )
        self.estimated_cost = Gauge(
            "shoal_estimated_cost_dollars_per_hour",
            "Estimated cost of the target cluster.",
            registry=r,
        )
        self.backoff_until = Gauge(
            "shoal_backoff_until_timestamp_seconds",
            "Unix time an offering in backoff may be tried again.",
            ["instance_type", "zone", "capacity_type"],
            registry=r,
        )
        self.nodes_drained_by_others = Gauge(
            "shoal_nodes_drained_by_others",
            "Nodes the scheduler shows drained by someone else (an admin, the scheduler's own "
            "health checks): never undrained or terminated by shoal, counted toward the max.",
            registry=r,
        )
        self.nodes_unlisted = Gauge(
            "shoal_nodes_unlisted",
            "Nodes the cloud accepted that its listing does not show yet (the launch ledger).",
            registry=r,
        )
        self.price_refreshes = Counter(
            "shoal_price_refreshes",
            "Price refreshes from the cloud's pricing APIs, by outcome (ok, failed).",
            ["outcome"],
            registry=r,
        )
        self.demand_age = Gauge(
            "shoal_demand_age_seconds",
            "Seconds since the demand was last reported.",
            registry=r,
        )
        for outcome in PASS_OUTCOMES:
            self.passes.labels(outcome=outcome)
        for outcome in ("ok", "failed"):
            self.price_refreshes.labels(outcome=outcome)
        for reason in WAITING_REASONS:
            self.jobs_waiting_for_limit.labels(reason=reason)
        self._unschedulable_set: object = None  # the items last set (a plan's tuple)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @contextmanager
    def provider_call(self, operation: str, clock: Clock) -> Iterator[None]:
        """Time a provider call (with its retries); count its error if it raises."""
        start = clock.monotonic()
        try:
            yield
        except BaseException as exc:
            code = getattr(exc, "code", "") or type(exc).__name__
            self.provider_errors.labels(operation=operation, code=code).inc()
            raise
        finally:
            timer = self._call_timers.get(operation)
            if timer is None:
                timer = self.provider_call_duration.labels(operation=operation)
                self._call_timers[operation] = timer
            timer.observe(max(0.0, clock.monotonic() - start))

    def _set_exactly(self, gauge: Gauge, values: Mapping[tuple[str, ...], float]) -> None:
        """Make ``values`` (label values, in the gauge's order -> value) the gauge's only
        series: the others are removed, the ones kept keep their child (``clear`` then
        ``labels`` built each series anew at every pass; ``labels`` is a lookup in itself)."""
        shown = self._shown.setdefault(gauge, {})
        for key in [k for k in shown if k not in values]:
            gauge.remove(*key)
            del shown[key]
        for key, value in values.items():
            child = shown.get(key)
            if child is None:
                child = shown[key] = gauge.labels(*key)
            child.set(value)

    def forget_cluster(self) -> None:
        """When a term ends (``ha``): the gauges that describe the cluster as this daemon
        last saw and planned it are emptied (labelled series removed, the others 0), so a
        follower does not show its last term's nodes, targets and cost beside the leader's
        (a dashboard summing the daemons counted them twice). Counters, histograms and the
        last pass's time stay: they describe this daemon."""
        for gauge in (self.nodes, self.target_nodes, self.backoff_until, self.jobs_unschedulable):
            self._set_exactly(gauge, {})
        self._set_exactly(self.jobs_waiting_for_limit, {(r,): 0 for r in WAITING_REASONS})
        self._unschedulable_set = None
        for plain in (
            self.jobs_queued,
            self.jobs_running,
            self.estimated_cost,
            self.offerings_in_backoff,
            self.nodes_unlisted,
            self.nodes_drained_by_others,
            self.demand_age,
        ):
            plain.set(0)

    def set_nodes(self, counts: Mapping[tuple[str, str], int], node_types: Iterable[str]) -> None:
        """Set ``shoal_nodes`` from ``(node_type, state) -> count``; zeros for known types."""
        values = {(name, state): 0.0 for name in node_types for state in NODE_STATES}
        values.update(counts)
        self._set_exactly(self.nodes, values)

    def set_backoff(self, until: Mapping[Offering, float]) -> None:
        """Set ``shoal_backoff_until_timestamp_seconds`` to exactly the offerings in backoff."""
        self._set_exactly(
            self.backoff_until,
            {(o.instance_type, o.zone, str(o.capacity_type)): at for o, at in until.items()},
        )

    def set_unschedulable(self, items: Iterable[Unschedulable]) -> None:
        """Split the plan's unschedulable jobs: those that can never fit
        (``shoal_jobs_unschedulable``, by failing dimensions) and those waiting for a limit
        or for capacity (``shoal_jobs_waiting_for_limit``), so an alert on the first does
        not page on a queue that is merely full. The very tuple set last (the planner hands
        the same one again while the unschedulable jobs stay the same) is set already."""
        if isinstance(items, tuple) and items is self._unschedulable_set:
            return
        self._unschedulable_set = items if isinstance(items, tuple) else None
        never: dict[str, int] = {}
        waiting = dict.fromkeys(WAITING_REASONS, 0)
        for item in items:
            held = [r for r in item.reasons if r in waiting]
            if held:
                waiting[held[0]] += item.count
            else:
                reason = ",".join(sorted(item.reasons))
                never[reason] = never.get(reason, 0) + item.count
        self._set_exactly(self.jobs_unschedulable, {(r,): n for r, n in never.items()})
        self._set_exactly(self.jobs_waiting_for_limit, {(r,): n for r, n in waiting.items()})

    def set_targets(self, targets: Mapping[str, int]) -> None:
        self._set_exactly(self.target_nodes, {(name,): n for name, n in targets.items()})
