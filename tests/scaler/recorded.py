"""Seeded random planner inputs with many running jobs, and plans recorded for them.

``tests/scaler/data/recorded_plans.json`` holds, per seed, the plan that the planner as it
was before its speed work (commit ab55952, the same planner as 1fffab1) made for
``case(seed)``: the differential test (test_planner_recorded.py) checks the planner of
today against it. Recording again from a later planner would check it against itself;
record only from a planner whose decisions are the reference, with

    .venv/bin/python tests/scaler/recorded.py --record [SEED ...]

Given seeds, only those are recorded again (a change meant to move their plans), the ones
off the minute grid with exact remaining times (``RUNNING_JOB_GRID`` 1e-6), as the others
were recorded.

Each case is a cluster in the middle of its work, as a replay sees it: 1-4 node types in
Toil's shapes, live, booting and draining nodes, up to ~150 running jobs each with its
own run time and elapsed time (so each has a distinct remaining time), queued jobs, some
offerings in backoff, betaInertia state, count or cost packing (the cost packer's
heuristic: no solver, so the plan does not depend on the machine's speed).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

from shoal.scaler.model import (
    Demand,
    NodeInfo,
    NodeState,
    NodeType,
    Plan,
    PlannerState,
    Policy,
    QueuedJobs,
    RunningJob,
    Snapshot,
)
from shoal.scaler.shape import Shape

__all__ = ["CASES", "DATA", "canonical", "case", "digest", "on_minute_grid", "summary"]

DATA = Path(__file__).parent / "data" / "recorded_plans.json"
CASES = 300
GiB = 1024**3
NOW = 1_700_000_000.0

# (name, cores, memory GiB, disk GiB, price $/h, spot)
PALETTE = (
    ("c5.xlarge", 4, 8, 50, 0.17, False),
    ("c5.2xlarge", 8, 16, 50, 0.34, False),
    ("r5.xlarge", 4, 32, 50, 0.252, False),
    ("m5.4xlarge", 16, 64, 100, 0.768, False),
    ("m5.4xlarge:0.40", 16, 64, 100, 0.30, True),
    ("c5.2xlarge:0.15", 8, 16, 50, 0.12, True),
)
JOB_SHAPES = (  # (cores, memory GiB, disk GiB)
    (1, 1, 0),
    (1, 2, 1),
    (2, 4, 0),
    (4, 6, 2),
    (2, 20, 0),
    (8, 12, 5),
    (0.5, 0.5, 0),
)


def _node_type(rng: random.Random, entry: tuple) -> NodeType:
    name, cores, memory, disk, price, spot = entry
    lo = rng.choice([0, 0, 0, 1])
    return NodeType(
        name=name,
        instance_types=(name.split(":")[0],),
        shape=Shape(3600.0, memory * GiB, cores, disk * GiB, spot),
        price_per_hour=price,
        bid=price if spot else None,
        min_nodes=lo,
        max_nodes=rng.choice([lo + 2, 6, 10, 20, 40]),
        zones=("sim-1a",),
    )


def _time(rng: random.Random, grid: bool, low: float, high: float) -> float:
    value = rng.uniform(low, high)
    return float(round(value / 60) * 60) if grid else round(value, 1)


def case(seed: int) -> tuple[Snapshot, Policy, PlannerState, float]:
    """The planner's arguments for one seed. Even seeds put every running job's remaining
    time on whole minutes (run and elapsed times are whole minutes)."""
    rng = random.Random(seed)
    grid = seed % 2 == 0
    types = [_node_type(rng, e) for e in rng.sample(PALETTE, rng.randint(1, 4))]
    nodes: list[NodeInfo] = []
    for i in range(rng.randint(0, 30)):
        t = rng.choice(types)
        state = rng.choices(list(NodeState), weights=[1, 6, 1])[0]
        nodes.append(
            NodeInfo(
                id=f"n{i:03d}",
                node_type=t.name,
                instance_type=t.instance_types[0],
                zone="sim-1a",
                preemptible=t.preemptible,
                state=state,
                launched_at=NOW - rng.choice([30, 300, 1000, 1200, 5000, 20000]),
                static=rng.random() < 0.05,
            )
        )
    hosts = [n for n in nodes if n.state is not NodeState.BOOTING]
    running: list[RunningJob] = []
    if hosts:
        for _ in range(rng.choice([0, 5, 20, 60, 150])):
            cores, memory, disk = rng.choice(JOB_SHAPES)
            wall = _time(rng, grid, 60, rng.choice([3000, 20000, 150000]))
            elapsed = _time(rng, grid, 0, wall * 1.2)
            shape = Shape(wall, memory * GiB, cores, disk * GiB, rng.random() < 0.3)
            running.append(RunningJob(shape, rng.choice(hosts).id, elapsed))
    queued = []
    for _ in range(rng.randint(0, 5)):
        cores, memory, disk = rng.choice(JOB_SHAPES)
        wall = rng.choice([60, 600, 1800, 3600, 7200, 30000])
        count = rng.choice([1, 3, 10, 40, 200, 1500])
        queued.append(
            QueuedJobs(
                Shape(float(wall), memory * GiB, cores, disk * GiB, rng.random() < 0.3), count
            )
        )
    unavailable = {}
    for t in types:
        if rng.random() < 0.15:
            for o in t.offerings():
                unavailable[o] = NOW + 120
    packing = rng.choice(["count", "count", "count", "cost"])
    policy = Policy(
        node_types=tuple(types),
        target_time=rng.choice([600.0, 3600.0, 3600.0, 7200.0]),
        beta_inertia=rng.choice([0.0, 0.1, 0.1, 0.5]),
        preemptible_compensation=rng.choice([0.0, 0.0, 0.5, 1.0]),
        scale_down_budget=rng.choice([0.1, 0.5]),
        cost_ceiling_per_hour=rng.choice([None, None, None, 3.0]),
        packing=packing,
        solver_time_limit=0.0,
    )
    state = PlannerState(
        estimates={t.name: rng.choice([0.0, 1.0, 2.7, 6.0]) for t in types},
        unneeded_since={n.id: NOW - rng.choice([0, 200, 900]) for n in nodes if rng.random() < 0.3},
    )
    snapshot = Snapshot(Demand(tuple(queued), tuple(running)), tuple(nodes), unavailable)
    return snapshot, policy, state, NOW


def on_minute_grid(snapshot: Snapshot) -> bool:
    """Whether every running job's remaining time is a whole number of minutes."""
    return all((j.shape.wallTime - j.elapsed) % 60 == 0 for j in snapshot.demand.running)


def _shape(s: Shape) -> list[Any]:
    return [s.wallTime, s.memory, s.cores, s.disk, s.preemptible]


def _action(a: Any) -> list[Any]:
    return [a.node_id, a.node_type, str(a.cause), a.message]


def canonical(p: Plan) -> dict[str, Any]:
    """Everything a plan says, as JSON data."""
    return {
        "launches": [[x.node_type, x.count, str(x.cause), x.message] for x in p.launches],
        "undrains": [_action(a) for a in p.undrains],
        "drains": [_action(a) for a in p.drains],
        "terminations": [_action(a) for a in p.terminations],
        "targets": dict(sorted(p.targets.items())),
        "unschedulable": [[_shape(u.shape), u.count, list(u.reasons)] for u in p.unschedulable],
        "estimates": dict(sorted(p.state.estimates.items())),
        "unneeded_since": dict(sorted(p.state.unneeded_since.items())),
        "cost_per_hour": p.cost_per_hour,
    }


def digest(p: Plan) -> str:
    text = json.dumps(canonical(p), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def summary(p: Plan) -> dict[str, Any]:
    """The decisions in short, kept beside the digest so a failure reads as a diff."""
    return {
        "targets": dict(sorted(p.targets.items())),
        "launches": {x.node_type: x.count for x in p.launches},
        "undrains": sorted(a.node_id for a in p.undrains),
        "drains": sorted(a.node_id for a in p.drains),
        "terminations": sorted(a.node_id for a in p.terminations),
    }


def record(seeds: list[int] | None = None) -> None:
    from shoal.scaler import planner

    out = json.loads(DATA.read_text()) if seeds else {}
    grid = planner.RUNNING_JOB_GRID
    for seed in range(CASES) if seeds is None else seeds:
        args = case(seed)
        planner.RUNNING_JOB_GRID = grid if seeds is None or on_minute_grid(args[0]) else 1e-6
        p = planner.plan(*args)
        out[str(seed)] = {"digest": digest(p), **summary(p)}
    planner.RUNNING_JOB_GRID = grid
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(out)} plans in {DATA}")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--record"]:
        sys.exit(__doc__)
    record([int(seed) for seed in sys.argv[2:]] or None)
