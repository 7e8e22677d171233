"""Toil 9.6's clusterScalerTest.py, case by case: Toil's own code and shoal on the same inputs.

Each case is one assertion of Toil's test file, translated twice: into calls of Toil's
``ClusterScaler``/``BinPackedFit`` (run in the oracle venv, tests/toil_oracle.py) and into
``scaler.plan``/``scaler.binpack``. The table checks that Toil still gives what its test
asserts (so the translation is right) and that shoal gives the same; a difference names
the case. Each case also holds Toil's numbers (``expected``, or ``recorded`` where Toil's
test asserts less than Toil gives), so the comparison of shoal with Toil's numbers runs
without the oracle venv; only the live check, that Toil still gives those numbers, skips
without it. Shoal runs with its defaults: Toil's overhead per node size, count packing (the
node types have no prices), inertia and compensation as each case sets them.

Where Toil keeps state shoal derives from its snapshot, the translation says how:
a preemptible deficit is a spot type in backoff with fewer live nodes than it wants;
an ignored node is a draining one. The threaded ScalerThread simulations of the file
(testClusterScaling*) time real threads and have no single number to compare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from shoal.scaler.binpack import binpack
from shoal.scaler.model import (
    Demand,
    NodeInfo,
    NodeState,
    NodeType,
    PlannerState,
    Policy,
    QueuedJobs,
    RunningJob,
    Snapshot,
)
from shoal.scaler.planner import plan, round_half_away, usable_shape
from shoal.scaler.shape import Shape
from toil_oracle import require_toil, toil_scaler

G = 1000**3  # Toil's h2b("1G") is decimal
Gi = 1024**3
M = 1000**2
NOW = 1_000_000.0

# Toil's simplified instances (clusterScalerTest.py): (wallTime, memory, cores, disk, preemptible)
C4_SPOT = (3600, 60 * G, 36, 100 * G, True)
C4 = (3600, 60 * G, 36, 100 * G, False)
R3 = (3600, 260 * G, 32, 600 * G, False)
R5_2 = (3600, 64 * Gi, 8, 50 * G, False)
R5_4 = (3600, 128 * Gi, 16, 50 * G, False)
T2 = (3600, 1 * G, 1, 8 * G, False)
NAMES = {C4_SPOT: "c4.8xlarge", C4: "c4.8xlarge", R3: "r3.8xlarge", R5_2: "r5.2xlarge"}
NAMES |= {R5_4: "r5.4xlarge", T2: "t2.micro"}


def instance(shape: tuple) -> str:
    return NAMES[shape]


def type_name(shape: tuple) -> str:
    return instance(shape) + (":1.0" if shape[4] else "")  # a bid makes a spot entry


def node_type(shape: tuple, min_nodes: int = 0, max_nodes: int = 10) -> NodeType:
    return NodeType(
        name=type_name(shape),
        instance_types=(instance(shape),),
        shape=Shape(*shape),
        bid=1.0 if shape[4] else None,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
    )


def node(node_id: str, t: NodeType, state: NodeState = NodeState.READY) -> NodeInfo:
    return NodeInfo(
        node_id,
        t.name,
        t.instance_types[0],
        (t.zones or ("",))[0],
        t.preemptible,
        state,
        NOW - 600.0,
    )


def job(wall: float, memory: float, cores: float, disk: float, preemptible: bool) -> tuple:
    return (wall, memory, cores, disk, preemptible)


@dataclass(frozen=True)
class Case:
    id: str
    toil: dict[str, Any]  # the oracle's op (tests/toil_oracle.py SCALER_SCRIPT)
    shoal: Callable[[], dict[str, Any]]  # the same inputs through shoal, same result form
    expected: dict[str, Any]  # what Toil's test file asserts, in that form (None: nothing)
    recorded: dict[str, Any] | None = None  # Toil 9.6's output, where it says more than that

    def toil_numbers(self) -> dict[str, Any]:
        """Toil 9.6's result for the case, as recorded from the oracle."""
        return self.recorded if self.recorded is not None else self.expected


# -- translations -----------------------------------------------------------------------------


def shoal_binpack(nodes: list[tuple], jobs: list[tuple[tuple, int]], target: float = 1800):
    def run() -> dict[str, Any]:
        shapes = [Shape(*n) for n in nodes]
        packing = binpack({Shape(*j): n for j, n in jobs}, shapes, target)
        return {
            "counts": [packing.counts[s] for s in shapes],
            "unschedulable": len(packing.unschedulable),
        }

    return run


def toil_binpack(nodes: list[tuple], jobs: list[tuple[tuple, int]], target: float = 1800):
    return {"op": "binpack", "nodes": nodes, "jobs": jobs, "target_time": target}


def estimate_case(
    case_id: str,
    shapes: list[tuple],
    jobs: list[tuple[tuple, int]],
    expected: list[int | None],
    *,
    target: float = 1800,
    beta: float = 0.1,
    min_nodes: list[int] | None = None,
    max_nodes: list[int] | None = None,
) -> Case:
    """getEstimatedNodeCounts on an empty cluster == one plan's targets. ``None`` in
    ``expected``: Toil's test does not say (compared between Toil and shoal only)."""
    lows = min_nodes or [0] * len(shapes)
    highs = max_nodes or [10] * len(shapes)
    toil = {
        "op": "estimate",
        "types": [[instance(s), list(s)] for s in shapes],
        "jobs": jobs,
        "target_time": target,
        "beta": beta,
        "min": min_nodes,
        "max": highs,
    }

    def shoal() -> dict[str, Any]:
        types = [node_type(s, lo, hi) for s, lo, hi in zip(shapes, lows, highs, strict=True)]
        policy = Policy(node_types=tuple(types), target_time=target, beta_inertia=beta)
        snap = Snapshot(Demand(queued=tuple(QueuedJobs(Shape(*j), n) for j, n in jobs)), ())
        p = plan(snap, policy, PlannerState(), NOW)
        too_big = {u.shape for u in p.unschedulable if u.reasons != ("max-nodes",)}
        return {"counts": [p.targets[t.name] for t in types], "unschedulable": len(too_big)}

    want = {"counts": expected, "unschedulable": 0}
    return Case(case_id, toil, shoal, want)


def overhead_case(case_id: str, nodes: list[tuple[tuple, int]], **job_needs: float) -> Case:
    """Toil's _check_job_estimate: one preemptible 1-hour job, target 1 s, no inertia,
    at most one node of each type."""
    needs = {"cores": 1, "memory": 1, "disk": 1} | job_needs
    j = job(3600, needs["memory"], needs["cores"], needs["disk"], True)
    shapes = [s for s, _ in nodes]
    return estimate_case(
        case_id,
        shapes,
        [(j, 1)],
        [n for _, n in nodes],
        target=1,
        beta=0.0,
        max_nodes=[1] * len(shapes),
    )


def deficit_response() -> Case:
    """testPreemptibleDeficitResponse: a deficit of 5 spot c4.8xlarge, compensation 0.5.
    In shoal the deficit is what a spot type in backoff misses: it wants its max of 10 for
    1000 spot jobs and has 5 live nodes."""
    spot_jobs = [(job(3600, 1 * G, 2, 2 * G, True), 1000)]
    toil = {
        "op": "estimate",
        "types": [[instance(C4_SPOT), list(C4_SPOT)], [instance(C4), list(C4)]],
        "jobs": spot_jobs,
        "target_time": 1,
        "beta": 0.0,
        "max": [10, 10],
        "compensation": 0.5,
        "deficit": {"c4.8xlarge": 5},
    }

    def shoal() -> dict[str, Any]:
        spot, on_demand = node_type(C4_SPOT), node_type(C4)
        policy = Policy(
            node_types=(spot, on_demand),
            target_time=1,
            beta_inertia=0.0,
            preemptible_compensation=0.5,
        )
        snap = Snapshot(
            Demand(queued=(QueuedJobs(Shape(*spot_jobs[0][0]), 1000),)),
            tuple(node(f"s{i}", spot) for i in range(5)),
            unavailable={o: NOW + 60 for o in spot.offerings()},
        )
        return {"on_demand": plan(snap, policy, PlannerState(), NOW).targets[on_demand.name]}

    case = Case("testPreemptibleDeficitResponse", toil, shoal, {"on_demand": 3})
    VIEWS[case.id] = lambda result: {"on_demand": result["counts"][1]}
    return case


def deficit_is_set() -> Case:
    """testPreemptibleDeficitIsSet: 5 spot nodes wanted, only 3 launched: a deficit of 2;
    then all 5 launched: none. Toil's deficit is compared with what shoal compensates
    with preemptibleCompensation 1.0: a spot type in backoff with 3 live nodes of the 5
    it wants (each live node busy with one of the 5 whole-node jobs), then with its 5."""
    toil = {
        "op": "update",
        "types": [[instance(C4_SPOT), list(C4_SPOT)], [instance(C4), list(C4)]],
        "steps": [
            {"estimates": [5, 0], "add_returns": 3},
            {"estimates": [5, 0], "add_returns": 5},
        ],
    }
    spot_job = Shape(3600, 1 * G, 36, 2 * G, True)  # one a node: 5 jobs want 5 nodes

    def shoal() -> dict[str, Any]:
        spot, on_demand = node_type(C4_SPOT), node_type(C4)
        policy = Policy(  # target 1 s: a queued job does not wait for a running one
            node_types=(spot, on_demand),
            target_time=1,
            beta_inertia=0.0,
            preemptible_compensation=1.0,
        )
        out = []
        for live, blocked in ((3, True), (5, False)):
            busy = tuple(RunningJob(spot_job, f"s{i}", 0.0) for i in range(live))
            snap = Snapshot(
                Demand(queued=(QueuedJobs(spot_job, 5 - live),), running=busy),
                tuple(node(f"s{i}", spot) for i in range(live)),
                unavailable={o: NOW + 60 for o in spot.offerings()} if blocked else {},
            )
            out.append(plan(snap, policy, PlannerState(), NOW).targets[on_demand.name])
        return {"deficits": out}

    def toil_view(result: dict[str, Any]) -> dict[str, Any]:
        return {"deficits": [step["deficit"]["c4.8xlarge"] for step in result["steps"]]}

    case = Case("testPreemptibleDeficitIsSet", toil, shoal, {"deficits": [2, 0]})
    VIEWS[case.id] = toil_view
    return case


def no_launch_if_delta_met() -> Case:
    """testNoLaunchingIfDeltaAlreadyMet: one ignored (draining) c4.8xlarge and a want of
    one: Toil un-ignores it and adds none; shoal takes it back (Plan.undrains)."""
    toil = {
        "op": "update",
        "types": [[instance(C4), list(C4)]],
        "workers": [["127.0.0.1", "c4.8xlarge", False]],
        "ignored": ["127.0.0.1"],
        "steps": [{"estimates": [1]}],
    }

    def shoal() -> dict[str, Any]:
        c4 = node_type(C4)
        snap = Snapshot(
            Demand(queued=(QueuedJobs(Shape(3600, 1 * G, 36, 1 * G, False), 1),)),
            (node("127.0.0.1", c4, NodeState.DRAINING),),
        )
        p = plan(snap, Policy(node_types=(c4,), beta_inertia=0.0), PlannerState(), NOW)
        return {"added": sum(x.count for x in p.launches), "unignored": len(p.undrains)}

    def toil_view(result: dict[str, Any]) -> dict[str, Any]:
        step = result["steps"][0]
        return {"added": step["added"], "unignored": step["unignored"]}

    case = Case("testNoLaunchingIfDeltaAlreadyMet", toil, shoal, {"added": 0, "unignored": 1})
    VIEWS[case.id] = toil_view
    return case


def beta_inertia() -> Case:
    """testBetaInertia: with betaInertia 0.5 and 100 nodes wanted, 50, then 75, and 100
    after 1000 more passes. Shoal's passes carry the estimate in PlannerState."""
    passes, report = 1003, [0, 1, 1002]
    toil = {
        "op": "smooth",
        "types": [[instance(C4_SPOT), list(C4_SPOT)]],
        "beta": 0.5,
        "value": 100,
        "passes": passes,
        "report": report,
    }

    def shoal() -> dict[str, Any]:
        t = node_type(C4_SPOT, max_nodes=1000)
        policy = Policy(node_types=(t,), beta_inertia=0.5)
        whole = Shape(7200, 1 * G, 36, 1 * G, True)  # one a node: 100 jobs want 100
        snap = Snapshot(Demand(queued=(QueuedJobs(whole, 100),)), ())
        state, seen = PlannerState(), []
        for _ in range(passes):
            p = plan(snap, policy, state, NOW)
            seen.append(p.targets[t.name])
            state = p.state
        return {"values": [seen[i] for i in report]}

    return Case("testBetaInertia", toil, shoal, {"values": [50, 75, 100]})


def rounding() -> Case:
    values = [0.0, 1.0, -1.0, 123456789101112.13, 1e-10, 0.5 + 1e-15, -0.9, -0.4]
    values += [0.5, -0.5, 2.5, -2.5, 15.5, -15.5, 123456789101112.5]
    expected = [0, 1, -1, 123456789101112, 0, 1, -1, 0, 1, -1, 3, -3, 16, -16, 123456789101113]
    toil = {"op": "round", "shape": list(C4_SPOT), "values": values}
    return Case(
        "testRounding",
        toil,
        lambda: {"values": [round_half_away(v) for v in values]},
        {"values": expected},
    )


def overhead_formula() -> Case:
    """Toil's _reserve_overhead on every instance of the file, against shoal's usable
    shape for the type (the number the overhead cases rest on)."""
    shapes = [C4, R3, R5_2, R5_4, T2]
    toil = {"op": "overhead", "shapes": [list(s) for s in shapes]}

    def shoal() -> dict[str, Any]:
        policy = Policy(node_types=tuple(node_type(s) for s in shapes))
        usable = [usable_shape(t, policy) for t in policy.node_types]
        return {"usable": [[u.memory, u.disk, u.cores] for u in usable]}

    recorded = [  # Toil 9.6's _reserve_overhead, from the oracle: [memory, disk, cores]
        [54534205809, 90000000000, 36],
        [247436647670, 565000000000, 32],
        [62730513941, 42500000000, 8],
        [127326822073, 42500000000, 16],
        [732613120, 2600000000, 1],
    ]
    return Case("reserve_overhead", toil, shoal, {"usable": None}, {"usable": recorded})


VIEWS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

MICRO_JOBS = {
    "testLowTargetTime": (job(300, 1 * G, 1, 1 * G, False), 0, 1000),
    "testHighTargetTime": (job(300, 1 * G, 1, 1 * G, False), 3600, 84),
    "testZeroResourceJobs": (job(300, 0, 0, 0, False), 0, 1),
    "testLongRunningJobs": (job(30000, 1 * G, 1, 1 * G, False), 3600, 1000),
}
SMALL = job(1000, 1 * G, 2, 2 * G, True)
PATHOLOGICAL = [
    (job(3600000, 10 * G, 0, 10 * G, False), 1),
    (job(3600, 26 * G, 32, 60 * G, False), 500),
]
HUGE = job(3600, 360 * G, 32, 600 * G, False)
BOTH = [(job(3600, 1 * G, 2, 2 * G, True), 1000), (job(3600, 1 * G, 2, 2 * G, False), 1000)]

CASES: list[Case] = [
    # -- BinPackingTest ------------------------------------------------------------------
    Case(
        "testPackingOneShape",  # and testAddingInitialNode: one job opens one spot c4
        toil_binpack([C4_SPOT, R3], [(SMALL, 1)]),
        shoal_binpack([C4_SPOT, R3], [(SMALL, 1)]),
        {"counts": [1, 0], "unschedulable": 0},
    ),
    *(
        Case(
            name,
            toil_binpack([T2], [(j, 1000)], target),
            shoal_binpack([T2], [(j, 1000)], target),
            {"counts": [count], "unschedulable": 0},
        )
        for name, (j, target, count) in MICRO_JOBS.items()
    ),
    Case(
        "testPathologicalCase",  # Toil asserts only "not one r3"; the counts must agree
        toil_binpack([C4_SPOT, R3], PATHOLOGICAL),
        shoal_binpack([C4_SPOT, R3], PATHOLOGICAL),
        {"counts": None, "unschedulable": 0},
        {"counts": [0, 500], "unschedulable": 0},  # Toil 9.6's output, from the oracle
    ),
    Case(
        "testJobTooLargeForAllNodes",
        toil_binpack([C4_SPOT, R3], [(HUGE, 1)]),
        shoal_binpack([C4_SPOT, R3], [(HUGE, 1)]),
        {"counts": [0, 0], "unschedulable": 1},
    ),
    # -- ClusterScalerTest ---------------------------------------------------------------
    rounding(),
    estimate_case(
        "testMaxNodes", [R3, C4_SPOT], BOTH, [2, 3], target=1, beta=0.0, max_nodes=[2, 3]
    ),
    estimate_case("testMinNodes", [R3, C4_SPOT], [], [2, 3], beta=0.0, min_nodes=[2, 3]),
    deficit_response(),
    deficit_is_set(),
    no_launch_if_delta_met(),
    beta_inertia(),
    overhead_formula(),
    overhead_case("test_overhead_accounting_large[mem 100%]", [(C4, 0), (R3, 1)], memory=60 * G),
    overhead_case(
        "test_overhead_accounting_large[mem 98%]", [(C4, 0), (R3, 1)], memory=int(60 * G * 0.98)
    ),
    overhead_case(
        "test_overhead_accounting_large[mem 90%]", [(C4, 1), (R3, 0)], memory=int(60 * G * 0.90)
    ),
    overhead_case("test_overhead_accounting_large[disk 100%]", [(C4, 0), (R3, 1)], disk=100 * G),
    overhead_case("test_overhead_accounting_large[disk 93G]", [(C4, 0), (R3, 1)], disk=93 * G),
    overhead_case("test_overhead_accounting_large[disk 90G]", [(C4, 1), (R3, 0)], disk=90 * G),
    overhead_case("test_overhead_accounting_small[mem 1G]", [(T2, 0), (R3, 1)], memory=1 * G),
    overhead_case(
        "test_overhead_accounting_small[mem 1G-100M]", [(T2, 0), (R3, 1)], memory=1 * G - 100 * M
    ),
    overhead_case(
        "test_overhead_accounting_small[mem 1G-384M]", [(T2, 1), (R3, 0)], memory=1 * G - 384 * M
    ),
    overhead_case(
        "test_overhead_accounting_observed[62.5Gi]", [(R5_2, 0), (R5_4, 1)], memory=int(62.5 * Gi)
    ),
]


@pytest.fixture(scope="module")
def toil_results() -> dict[str, dict[str, Any]]:
    require_toil()
    results = toil_scaler([case.toil for case in CASES])
    return {
        case.id: VIEWS.get(case.id, lambda r: r)(result)
        for case, result in zip(CASES, results, strict=True)
    }


def _matches(expected: dict[str, Any], got: dict[str, Any]) -> bool:
    return all(want is None or got.get(key) == want for key, want in expected.items())


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_shoal_gives_toils_numbers(case: Case) -> None:
    """Runs without the oracle venv: shoal against the numbers each case holds."""
    ours = case.shoal()
    assert ours == case.toil_numbers(), f"{case.id}: shoal {ours} != Toil {case.toil_numbers()}"


@pytest.mark.toil
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_toil_case(case: Case, toil_results: dict[str, dict[str, Any]]) -> None:
    """Live: Toil itself still gives what its test asserts and what the case recorded."""
    toil = toil_results[case.id]
    ours = case.shoal()
    print(f"\n{case.id}: Toil {toil} | shoal {ours}")
    assert _matches(case.expected, toil), f"Toil no longer gives what its test asserts: {toil}"
    assert toil == case.toil_numbers(), f"{case.id}: recorded numbers are stale: Toil {toil}"
    assert ours == toil, f"{case.id}: shoal {ours} != Toil {toil}"
