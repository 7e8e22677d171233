"""JSON views of plans, passes, nodes and status: one renderer for ``GET /v1/status`` and
``shoal plan``, so a field has one name wherever it appears (``reason`` for every human
explanation, ``wall_time``/``memory``/``cores``/``disk``/``preemptible`` for every shape)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from shoal.scaler.backoff import BackoffTable
from shoal.scaler.model import Launch, NodeAction, Plan, Unschedulable
from shoal.scaler.shape import Shape

if TYPE_CHECKING:
    from shoal.daemon.loop import Controller, PassRecord

__all__ = ["backoff_json", "pass_json", "plan_json", "shape_json", "status_json"]


def shape_json(shape: Shape) -> dict[str, Any]:
    return {
        "wall_time": shape.wallTime,
        "memory": shape.memory,
        "cores": shape.cores,
        "disk": shape.disk,
        "preemptible": shape.preemptible,
    }


def _launch_json(launch: Launch) -> dict[str, Any]:
    out = {
        "node_type": launch.node_type,
        "count": launch.count,
        "cause": str(launch.cause),
        "reason": launch.message,
    }
    if launch.gangs:  # multi-node jobs' nodes within count, each launched all or none
        out["gangs"] = list(launch.gangs)
    return out


def _action_json(action: NodeAction) -> dict[str, Any]:
    return {
        "node": action.node_id,
        "node_type": action.node_type,
        "cause": str(action.cause),
        "reason": action.message,
    }


def unschedulable_json(items: Iterable[Unschedulable]) -> list[dict[str, Any]]:
    out = []
    for u in items:
        item = {"shape": shape_json(u.shape), "count": u.count, "reasons": list(u.reasons)}
        if u.node_count > 1:  # a multi-node job: the shape is per node
            item["node_count"] = u.node_count
        out.append(item)
    return out


def plan_json(plan: Plan) -> dict[str, Any]:
    """A plan: launches, drains, undrains and terminations with their causes and reasons, targets,
    unschedulable jobs and the target cluster's cost; ``withheld``: removals withheld, each
    saying why (unhealthy nodes not replaced while too many are missing)."""
    return {
        "launches": [_launch_json(a) for a in plan.launches],
        "drains": [_action_json(a) for a in plan.drains],
        "undrains": [_action_json(a) for a in plan.undrains],
        "terminations": [_action_json(a) for a in plan.terminations],
        "targets": dict(plan.targets),
        "unschedulable": unschedulable_json(plan.unschedulable),
        "cost_per_hour": plan.cost_per_hour,
        "withheld": [_action_json(a) for a in plan.withheld],
    }


def pass_json(record: PassRecord) -> dict[str, Any]:
    return {
        "number": record.number,
        "outcome": str(record.outcome),
        "started_at": record.started_at,
        "duration": record.duration,
        "reason": record.reason,
        "launched": record.launched,
        "drained": list(record.drained),
        "undrained": list(record.undrained),
        "terminated": list(record.terminated),
        "errors": list(record.errors),
        "demand_source": record.demand_source,
    }


def backoff_json(table: BackoffTable, now: float) -> list[dict[str, Any]]:
    """Offerings in backoff at ``now``, sorted by name."""
    return [
        {
            "offering": str(offering),
            "instance_type": offering.instance_type,
            "zone": offering.zone,
            "capacity_type": str(offering.capacity_type),
            "until": entry.until,
            "failures": entry.failures,
            "kind": str(entry.kind),
            "reason": entry.reason,
        }
        for offering, entry in sorted(table.entries.items(), key=lambda kv: str(kv[0]))
        if now < entry.until
    ]


def _counts(nodes: Mapping[str, Mapping[str, list[Any]]]) -> dict[str, dict[str, int]]:
    return {name: {state: len(items) for state, items in s.items()} for name, s in nodes.items()}


def status_json(controller: Controller) -> dict[str, Any]:
    """The JSON of ``GET /v1/status``."""
    now = controller.clock.now()
    nodes: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for t in controller.tracker.all():
        nodes.setdefault(t.node_type or "unmanaged", {}).setdefault(t.state.value, []).append(
            {
                "id": t.id,
                "instance_type": t.node.nodeType,
                "zone": t.zone,
                "preemptible": t.node.preemptible,
                "static": t.static,
                "launched_at": t.node.launchTime.timestamp(),
                "listed": t.listed,
                "joined_at": t.joined_at,
                "missing_since": t.missing_since,  # joined, then left out of the reads
            }
        )
    plan = controller.last_plan
    demand = controller.demand
    last = controller.last_pass
    return {
        "ready": controller.ready,
        "healthy": controller.healthy(),
        "stopping": controller.stopping,
        "now": now,
        # which source fed the last pass: "push" (PUT /v1/demand), "file", "demo", "slurm"
        "demand_source": None if last is None else last.demand_source,
        "nodes": nodes,
        "node_counts": _counts(nodes),
        "demand": {
            "queued_jobs": sum(q.count for q in demand.queued),
            "queued_shapes": len(demand.queued),
            "running_jobs": len(demand.running),
            "joined_nodes": None if controller.joined is None else len(controller.joined),
            "source": controller.demand_source,  # of the demand now, maybe newer than a pass
        },
        "last_plan": None if plan is None else plan_json(plan),
        "unschedulable": [] if plan is None else unschedulable_json(plan.unschedulable),
        "backoff": backoff_json(controller.backoff, now),
        "last_pass": None if last is None else pass_json(last),
        "passes": controller.passes,
    }
