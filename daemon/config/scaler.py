"""The ``node_types`` and ``scaler`` sections: Toil's node-type entries, the planner's knobs,
retries and backoff.

Validation only; ``daemon.wiring`` turns them into the planner's ``Policy``, the provider's
``RetryPolicy`` and the backoff policy.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from shoal.daemon.config.common import _STRICT, _FieldError
from shoal.daemon.units import Duration, PositiveDuration, Size
from shoal.scaler.shape import ordered_instance_types, parse_node_types

__all__ = ["Backoff", "NodeTypeEntry", "RetryConfig", "ScalerConfig"]


class NodeTypeEntry(BaseModel):
    """One Toil node-type entry (``"c5.xlarge/c5a.xlarge"``, ``"r5.large:0.05"``) and its limits."""

    model_config = _STRICT

    type: str
    """Toil node type: instance types in preference order separated by "/"; ":<bid>" makes
    it spot (e.g. "c5.xlarge/c5a.xlarge", "r5.large:0.05")."""
    min: int = Field(default=0, ge=0)
    """Never fewer nodes of this type."""
    max: int = Field(default=10, ge=0)
    """Never more nodes of this type."""
    placement_group: Literal["cluster"] | None = None
    """"cluster": launch this type's nodes into a cluster placement group (one per instance
    type and zone, made on first use, deleted with the cluster): low latency between the
    nodes of a multi-node job. AWS only; other providers ignore it. null: none."""

    @field_validator("type")
    @classmethod
    def _parse(cls, value: str) -> str:
        value = value.strip()
        if "," in value:
            raise ValueError(f"{value!r} holds several entries; give one entry per list item")
        if not parse_node_types(value):
            raise ValueError("empty node type; expected e.g. 'c5.xlarge' or 'r5.large:0.05'")
        return value

    @model_validator(mode="after")
    def _limits(self) -> NodeTypeEntry:
        if self.min > self.max:
            raise _FieldError(("min", "max"), f"min ({self.min}) is greater than max ({self.max})")
        return self

    @property
    def instance_types(self) -> tuple[str, ...]:
        return tuple(ordered_instance_types(self.type))

    @property
    def bid(self) -> float | None:
        return parse_node_types(self.type)[0][1]


def _node_types(value: Any) -> Any:
    """A Toil string ``"a/b,c:0.05"`` becomes a list of entries with default limits."""
    if isinstance(value, str):
        parse_node_types(value)  # ValueError quoting the bad part
        value = [{"type": part.strip()} for part in value.split(",")] if value.strip() else []
    # Checked here rather than with min_length: pydantic would also report "at least 1
    # item" for a non-empty list whose only entry is invalid.
    if isinstance(value, list | tuple) and not value:
        raise ValueError("at least one node type is needed")
    return value


def _initial_not_above_max(initial: float, maximum: float) -> None:
    if initial > maximum:
        raise _FieldError(
            ("initial", "max"), f"initial ({initial}s) is greater than max ({maximum}s)"
        )


class Backoff(BaseModel):
    """Backoff of an offering (type x zone x capacity type) after a capacity error."""

    model_config = _STRICT
    initial: PositiveDuration = 180.0
    """First backoff, doubled at each further capacity error."""
    max: PositiveDuration = 1800.0
    """The longest backoff."""

    @model_validator(mode="after")
    def _order(self) -> Backoff:
        _initial_not_above_max(self.initial, self.max)
        return self


class RetryConfig(BaseModel):
    """Retries of one provider call on transient errors."""

    model_config = _STRICT
    attempts: int = Field(default=5, ge=1, le=100)
    """Total tries, the first included."""
    initial: PositiveDuration = 0.5
    """First wait between tries."""
    max: PositiveDuration = 20.0
    """The longest wait between tries."""
    deadline: PositiveDuration = 120.0
    """Give up on the call after this long."""

    @model_validator(mode="after")
    def _order(self) -> RetryConfig:
        _initial_not_above_max(self.initial, self.max)
        return self


class ScalerConfig(BaseModel):
    """The planner's and the control loop's knobs."""

    model_config = _STRICT

    interval: PositiveDuration = 30.0
    """Timer wake-up of the control loop; demand changes wake it at once."""
    debounce: Duration = 0.2
    """After a demand change, wait this long for more changes before planning."""
    target_time: PositiveDuration = 1800.0
    """Jobs should start within this time (Toil's targetTime; 30 minutes, Toil's default too:
    with node_size_premium 0.04 it cut the p95 wait and the cost against 1 hour and no premium
    on two stand-in traces, bench/README.md, policy.py)."""
    beta_inertia: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Smoothing weight of the previous node-count estimate (Toil's betaInertia)."""
    preemptible_compensation: float = Field(default=0.0, ge=0.0, le=1.0)
    """On-demand nodes of the same instance type per missing spot node (Toil's)."""
    compensate_other_types: bool = False
    """Also compensate on another on-demand type when a spot type has no on-demand twin."""
    node_memory_overhead: Size | None = None
    """Memory kept per node for the OS and agents; unset: Toil's reservation by node size."""
    node_disk_overhead: Size | None = None
    """Disk kept per node for the OS; unset: Toil's 5 GB + 5 % of the disk."""
    unneeded_time: Duration = 60.0
    """A node idle this long may be scaled down. On per-second billing an idle node is worth
    keeping at most about as long as a new one takes to boot and join (the ski-rental rule);
    measured shorter is no worse (bench/README.md, bench/policy.py: 10 minutes cost 9 % more
    than 1 minute, 0-1 minute within 0.6 %)."""
    scale_down_budget: float = Field(default=0.1, gt=0.0, le=1.0)
    """Fraction of the nodes removable in one pass (at least one)."""
    join_timeout: PositiveDuration = 900.0
    """A node never seen joined is terminated this long after its launch."""
    unhealthy_timeout: PositiveDuration = 600.0
    """A node that joined and then is missing from every read this long is replaced, if it
    runs nothing; meanwhile it counts as capacity."""
    unhealthy_ok_count: int = Field(default=3, ge=0)
    """Missing nodes tolerated before replacements stop (see unhealthy_max_fraction)."""
    unhealthy_max_fraction: float = Field(default=0.45, ge=0.0, le=1.0)
    """No missing node is replaced while more than max(unhealthy_ok_count,
    unhealthy_max_fraction x nodes) are missing, in the cluster or in their node type (the
    scheduler is likely at fault: Cluster Autoscaler's ok-total-unready-count and
    max-total-unready-percentage)."""
    launch_ledger_ttl: PositiveDuration = 600.0
    """A node the cloud accepted but never lists within this time counts as never joined."""
    cost_ceiling_per_hour: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    """Dollars per hour the target cluster may cost (needs a price for every node type);
    absent: no ceiling."""
    packing: Literal["auto", "count", "cost"] = "auto"
    """"count": each job to the first node type that fits (Toil's order); "cost": the
    cheapest mix of priced node types, after the room live nodes have; "auto": "cost"
    when every node type has a price, else "count"."""
    solver_time_limit: Duration = Field(default=0.2, ge=0.0)
    """Solver (HiGHS) work per pass for cost packing, in seconds of a reference machine (counted in
    simplex iterations and nodes: the same plan on any machine); 0: the heuristic alone."""
    node_size_premium: float = Field(default=0.04, ge=0.0, le=1.0, allow_inf_nan=False)
    """Cost packing prices a node type at its price x (1 + this x its cores), to weigh
    fragmentation over wall time: jobs end at different times, and a large node stays up
    (and billed) for its last one. 0: the prices alone. The default was chosen with
    target_time on two stand-in traces (bench/README.md, policy.py). At most 1 (a 16-core
    type at 17x its price), finite: an infinite premium makes every price equal."""
    backoff: Backoff = Field(default_factory=Backoff)
    """An offering's backoff after a capacity error."""
    retry: RetryConfig = Field(default_factory=RetryConfig)
    """Retries of each provider call (EC2, the Pricing API) on throttling and server errors."""
