"""Config to domain objects: what the validated config (``daemon.config``) means to the
planner, the provider and the loop.

``daemon.config`` only validates; ``daemon.service`` builds the running daemon from these:

- ``planner_policy(config, shapes, prices)``: the planner's ``scaler.Policy``, the node types
  with their shapes and prices from the provider's catalogue;
- ``node_type_specs(config)``: the entries as the seed's ``setAutoscaledNodeTypes`` takes them;
- ``retry_policy(config)``: the provider calls' ``RetryPolicy``;
- ``backoff_policy(config)``: an offering's backoff after a capacity error;
- ``demand_reports(demand)``: what pushed demand (API, file) reports;
- ``api_token(config)``: the bearer token, read from ``api.token_file`` (never log it).
"""

from __future__ import annotations

from collections.abc import Mapping

from shoal.daemon.config import DemandConfig, ShoalConfig
from shoal.daemon.demand import DemandReports
from shoal.providers.retry import RetryPolicy
from shoal.scaler.backoff import BackoffPolicy
from shoal.scaler.model import NodeType, Policy
from shoal.scaler.shape import NodeTypeSpec, Shape, parse_node_types

__all__ = [
    "api_token",
    "backoff_policy",
    "demand_reports",
    "node_type_specs",
    "planner_policy",
    "retry_policy",
]


def node_type_specs(config: ShoalConfig) -> list[NodeTypeSpec]:
    """The entries as ``parse_node_types`` gives them (for setAutoscaledNodeTypes)."""
    return [parse_node_types(entry.type)[0] for entry in config.node_types]


def planner_policy(
    config: ShoalConfig,
    shapes: Mapping[str, Shape],
    prices: Mapping[str, float | None] | None = None,
) -> Policy:
    """The planner policy. ``shapes``/``prices`` are keyed by instance type; for a spot
    entry, ``prices`` may hold ``"<type>:spot"`` which is preferred to the on-demand price.
    Raises ``KeyError`` naming an instance type with no shape."""
    prices = prices or {}
    node_types = []
    for entry in config.node_types:
        first = entry.instance_types[0]
        if first not in shapes:
            raise KeyError(f"no shape for instance type {first!r}")
        base = shapes[first]
        bid = entry.bid
        shape = Shape(base.wallTime, base.memory, base.cores, base.disk, bid is not None)
        price = prices.get(f"{first}:spot") if bid is not None else None
        if price is None:
            price = prices.get(first)
        node_types.append(
            NodeType(
                name=entry.type,
                instance_types=entry.instance_types,
                shape=shape,
                price_per_hour=price,
                bid=bid,
                min_nodes=entry.min,
                max_nodes=entry.max,
                zones=config.provider.launch_zones,
                placement_group=entry.placement_group,
            )
        )
    s = config.scaler
    return Policy(
        node_types=tuple(node_types),
        target_time=s.target_time,
        beta_inertia=s.beta_inertia,
        preemptible_compensation=s.preemptible_compensation,
        compensate_other_types=s.compensate_other_types,
        node_memory_overhead=s.node_memory_overhead,
        node_disk_overhead=s.node_disk_overhead,
        scale_down_unneeded_time=s.unneeded_time,
        scale_down_budget=s.scale_down_budget,
        join_timeout=s.join_timeout,
        unhealthy_timeout=s.unhealthy_timeout,
        unhealthy_ok_count=s.unhealthy_ok_count,
        unhealthy_max_fraction=s.unhealthy_max_fraction,
        cost_ceiling_per_hour=s.cost_ceiling_per_hour,
        packing=s.packing,
        solver_time_limit=s.solver_time_limit,
        node_size_premium=s.node_size_premium,
    )


def retry_policy(config: ShoalConfig) -> RetryPolicy:
    r = config.scaler.retry
    return RetryPolicy(attempts=r.attempts, initial=r.initial, maximum=r.max, deadline=r.deadline)


def backoff_policy(config: ShoalConfig) -> BackoffPolicy:
    """An offering's backoff after a capacity error; a quota error starts at half the max."""
    initial, maximum = config.scaler.backoff.initial, config.scaler.backoff.max
    return BackoffPolicy(initial=initial, maximum=maximum, quota_initial=max(initial, maximum / 2))


def demand_reports(demand: DemandConfig) -> DemandReports:
    """What pushed demand (the API, a file) reports besides the queue."""
    return DemandReports(running="running" in demand.reports, joined="joined" in demand.reports)


def api_token(config: ShoalConfig) -> str | None:
    """The bearer token of the API and the Slurm hooks (never log it); None without a file."""
    path = config.api.token_file
    return path.read_text().strip() if path else None
