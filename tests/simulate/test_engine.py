"""The replay engine: analytic cases worked out by hand, a pinned trace, skipping, knobs.

Every case runs the daemon's own controller (``build_controller``) over the simulated cloud;
the numbers below follow from the config's delays, the planner's rules and the catalogue's
prices (c5.xlarge: 4 cores, 8 GiB, $0.17/h on demand, $0.07/h spot; r5.xlarge: 4 cores,
32 GiB, $0.252/h). Usable room is the shape less 1 GiB of memory and 4 GiB of disk.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import configs
import numpy as np
import pytest
from shoal.daemon.config import ShoalConfig, parse_config
from shoal.daemon.simulate import cluster as cluster_module
from shoal.daemon.simulate import engine
from shoal.daemon.simulate.cluster import PLACEMENTS
from shoal.daemon.simulate.engine import (
    Replay,
    ReplayOptions,
    SimulateError,
    _raw_estimate,
    replay,
)
from shoal.daemon.simulate.report import Report, report_json
from shoal.daemon.simulate.synthetic import SyntheticSpec, generate
from shoal.daemon.simulate.trace import Trace, TraceBuilder
from shoal.scaler import order
from shoal.scaler.planner import smooth

GiB = 1024**3
C5 = 0.17  # $/h, c5.xlarge on demand
C5_SPOT = 0.07
R5 = 0.252


def config(**scaler: Any) -> ShoalConfig:
    """One on-demand type; no smoothing, no debounce, so every step lands on whole seconds."""
    provider = scaler.pop("provider", {})
    node_types = scaler.pop("node_types", [{"type": "c5.xlarge", "max": 10}])
    slurm = scaler.pop("slurm", None)  # a Slurm source (external mode) with these settings
    demand: dict[str, Any] = {"api": False}
    extra = {}
    if slurm is not None:
        demand["slurm"] = True
        extra["slurm"] = {"mode": "external", **slurm}
    data = configs.config(
        cluster_name="sim",
        provider={"zone": "sim-1a", "boot_delay": "60s", "join_delay": "30s", **provider},
        node_types=node_types,
        scaler={
            "interval": "30s",
            "debounce": "0s",
            "beta_inertia": 0.0,
            "unneeded_time": "300s",
            "scale_down_budget": 1.0,
            "target_time": "1h",
            **scaler,
        },
        demand=demand,
        **extra,
    )
    return parse_config(data)


Job = tuple[float, float, float, float, float] | tuple[float, float, float, float, float, bool]


def trace(*jobs: Job) -> Trace:
    """Jobs as (submit, run time, wall time, cores, memory GiB[, preemptible])."""
    b = TraceBuilder("test", "csv")
    for line, job in enumerate(jobs, 1):
        submit, run, wall, cores, memory = job[:5]
        pre = bool(job[5]) if len(job) > 5 else False
        b.add(submit, run, wall, cores, memory * GiB, 0, pre, line=line)
    return b.build()


def run(tr: Trace, cfg: ShoalConfig, **options: Any) -> Replay:
    return replay(tr, cfg, ReplayOptions(**options))


def variant_json(r: Replay) -> dict[str, Any]:
    report = Report("t", "csv", r.result.jobs, "c", 0, (r.result,))
    return json.loads(report_json(report))["variants"][0]


# --- one burst -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jobs", "nodes", "billing", "billed_seconds"),
    [
        (4, 1, 1.0, 1020),
        (8, 2, 1.0, 1020),
        (9, 3, 1.0, 1020),
        (8, 2, 3600.0, 3600),  # billed by the hour: each node pays a whole hour
    ],
    ids=["4-jobs-1-node", "8-jobs-2-nodes", "9-jobs-3-nodes", "hourly-billing"],
)
def test_one_burst_by_hand(jobs: int, nodes: int, billing: float, billed_seconds: int) -> None:
    """N one-core jobs at t=0 that ask for 2 h (longer than the 1 h target, so none may
    follow another on a core) and run 600 s, on 4-core c5.xlarge nodes:

    t=0     the first pass launches ceil(N/4) nodes
    t=90    they join (60 s boot + 30 s join): every job starts; each waited 90 s
    t=690   every job ends; the pass marks the nodes unneeded
    t=990   300 s later (a timer pass: 690 + 10 x 30 s) they are drained (budget 1.0)
    t=1020  the next pass terminates them, drained and idle: 1020 s each
    """
    tr = trace(*[(0, 600, 7200, 1, 1)] * jobs)
    r = run(tr, config(), billing_interval=billing)
    v = r.result
    assert (v.launches, v.terminations, v.interruptions) == (nodes, nodes, 0)
    assert v.jobs_completed == jobs and v.jobs_never_started == 0
    assert v.waits.tolist() == [90.0] * jobs
    assert (v.wait.p50, v.wait.max, v.wait.mean) == (90.0, 90.0, 90.0)
    assert v.simulated_seconds == 1020
    assert v.node_hours == pytest.approx(nodes * 1020 / 3600)
    assert v.cost == pytest.approx(nodes * C5 * billed_seconds / 3600)
    [line] = v.by_type
    assert (line.node_type, line.capacity_type) == ("c5.xlarge", "on-demand")
    # busy: N x 600 core-s; joined: nodes x 4 cores x (1020 - 90) s
    assert v.utilisation == pytest.approx(jobs * 600 / (nodes * 4 * 930))
    # the cost series ends at the total; nodes went 0 -> booting -> joined -> 0
    assert v.series.cost[-1] == pytest.approx(v.cost)
    assert v.series.nodes.max() == nodes and v.series.nodes[-1] == 0
    assert v.series.booting.max() == nodes


def test_pinned_two_types() -> None:
    """Three jobs on two node types, every number by hand:

    j0  t=0    2 cores  2 GiB  runs 1000 s -> c5.xlarge (6.1 GiB usable after Toil's overhead,
                                             the first type in Toil's order: count packing)
    j1  t=0    2 cores 20 GiB  runs  500 s -> r5.xlarge (the only type with the memory)
    j2  t=100  2 cores  2 GiB  runs  400 s -> the c5 node already has room: starts at once

    t=0 one c5 and one r5 launch; t=90 both join, j0 and j1 start (waits 90, 90); t=100 j2
    starts (wait 0); t=500 j2 ends; t=590 j1 ends: the r5 is unneeded, drained at 890,
    terminated at 920; t=1090 j0 ends: the c5 is drained at 1390, terminated at 1420.
    Cost: c5 1420 s x $0.17/h + r5 920 s x $0.252/h. Busy: 2x1000 + 2x500 + 2x400 = 3800
    core-s over 4 x (1420 - 90) + 4 x (920 - 90) = 8640 joined core-s.
    """
    cfg = config(node_types=[{"type": "c5.xlarge"}, {"type": "r5.xlarge"}], packing="count")
    r = run(cfg=cfg, tr=trace((0, 1000, 7200, 2, 2), (0, 500, 7200, 2, 20), (100, 400, 7200, 2, 2)))
    v = r.result
    assert v.waits.tolist() == [90.0, 90.0, 0.0]
    assert (v.wait.p50, v.wait.p95, v.wait.max, v.wait.mean) == (90.0, 90.0, 90.0, 60.0)
    lines = {(c.node_type, c.capacity_type): (c.cost, c.node_hours) for c in v.by_type}
    assert lines == {
        ("c5.xlarge", "on-demand"): pytest.approx((C5 * 1420 / 3600, 1420 / 3600)),
        ("r5.xlarge", "on-demand"): pytest.approx((R5 * 920 / 3600, 920 / 3600)),
    }
    assert v.cost == pytest.approx(C5 * 1420 / 3600 + R5 * 920 / 3600)
    assert v.utilisation == pytest.approx(3800 / 8640)
    assert (v.launches, v.terminations, v.simulated_seconds) == (2, 2, 1420)
    assert (v.jobs_completed, v.jobs_never_started, v.requeues) == (3, 0, 0)


def test_job_larger_than_every_node_type_is_reported() -> None:
    tr = trace((0, 600, 7200, 64, 1), (0, 600, 7200, 1, 1), (10, 600, 7200, 2, 100))
    r = run(tr, config())
    v = r.result
    assert (v.jobs_unschedulable, v.jobs_never_started, v.jobs_completed) == (2, 2, 1)
    assert [(u.job, u.reasons) for u in r.unschedulable] == [(0, ("cores",)), (2, ("memory",))]
    assert v.launches == 1  # for the one job that fits; the others launch nothing
    assert not r.stats.capped  # the replay ends although two jobs wait for ever


def test_spot_interruption_requeues_the_job() -> None:
    """A spot node interrupted under a running job: the job queues again, a new node is
    launched for it, and it runs to the end from scratch (rate 1/h, job of 40 min)."""
    cfg = config(
        node_types=[{"type": "c5.xlarge:0.10"}],
        provider={"spot_interruption_rate": 1.0},
    )
    tr = trace((0, 2400, 7200, 1, 1, True))
    seen = []
    for seed in range(6):
        v = run(tr, cfg, seed=seed).result
        seen.append(v.interruptions)
        assert v.jobs_completed == 1
        assert v.requeues <= v.interruptions
        assert v.launches == v.interruptions + v.terminations
        [line] = v.by_type
        assert (line.node_type, line.capacity_type) == ("c5.xlarge", "spot")
        assert line.cost == pytest.approx(
            C5_SPOT * line.node_hours, rel=1e-6 if v.interruptions == 0 else 0.2
        )
        if v.requeues:
            # queued again at the interruption, so it waited for another node to join
            assert v.waits[0] >= 2 * 90
    assert any(seen), "no seed interrupted the node: the case tests nothing"


def test_same_seed_same_interruptions() -> None:
    cfg = config(node_types=[{"type": "c5.xlarge:0.10"}], provider={"spot_interruption_rate": 1.0})
    tr = trace(*[(60 * i, 2400, 7200, 1, 1, True) for i in range(10)])
    a, b = (variant_json(run(tr, cfg, seed=3)) for _ in range(2))
    assert a == b
    assert a != variant_json(run(tr, cfg, seed=4))
    # no seed in the options: the config's provider.seed
    seeded = config(
        node_types=[{"type": "c5.xlarge:0.10"}],
        provider={"spot_interruption_rate": 1.0, "seed": 3},
    )
    assert variant_json(run(tr, seeded)) == a


def test_gap_scales_to_zero_and_back() -> None:
    """Two identical bursts a day apart: the cluster empties in between (each burst alone
    costs what test_one_burst_by_hand worked out), and the quiet day costs no passes."""
    day = 86400
    burst = [(0, 600, 7200, 1, 1)] * 8
    tr = trace(*burst, *[(day, 600, 7200, 1, 1)] * 8)
    r = run(tr, config())
    v = r.result
    assert (v.launches, v.terminations) == (4, 4)
    assert v.cost == pytest.approx(2 * 2 * C5 * 1020 / 3600)
    assert v.waits.tolist() == [90.0] * 16
    t, nodes = v.series.t, v.series.nodes
    # samples hold until the next one: the last before the second burst is an empty cluster
    assert t[t < day][-1] == 1020 and nodes[t < day][-1] == 0
    assert nodes[t >= day].max() == 2
    assert v.simulated_seconds == day + 1020
    # a day is 2880 timer passes; nearly all were skipped
    assert r.stats.passes < 40 and r.stats.passes_skipped > 2800


# --- skipping changes nothing ----------------------------------------------------------


def _small(jobs: int, seed: int, preemptible: float = 0.0) -> Trace:
    return generate(
        SyntheticSpec(jobs=jobs, days=0.5, seed=seed, mean_burst=8, preemptible_share=preemptible)
    )


SKIP_CASES = {
    "smoothing-and-debounce": (
        dict(beta_inertia=0.1, debounce="200ms"),
        {},
        [{"type": "c5.2xlarge", "max": 6}, {"type": "r5.xlarge", "max": 4}],
    ),
    "spot-interruptions": (
        dict(beta_inertia=0.3),
        {"spot_interruption_rate": 0.5, "listing_lag": "5s"},
        [{"type": "c5.2xlarge:0.20", "max": 6}, {"type": "c5.2xlarge", "max": 6}],
    ),
    "slow-smoothing": (  # estimates settle over ~200 passes, cut short by new demand
        dict(beta_inertia=0.9, debounce="1s"),
        {"spot_interruption_rate": 0.2},
        [{"type": "c5.2xlarge:0.20", "max": 6}, {"type": "r5.xlarge", "max": 4}],
    ),
    "cost-ceiling-and-capacity": (
        dict(cost_ceiling_per_hour=0.7, unneeded_time="0s", packing="cost"),
        {"capacity": {"c5.2xlarge": 2}},
        [{"type": "c5.2xlarge", "max": 6}, {"type": "m5.4xlarge", "max": 3}],
    ),
}


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("case", list(SKIP_CASES), ids=list(SKIP_CASES))
def test_skipping_changes_nothing(case: str, placement: str) -> None:
    scaler, provider, types = SKIP_CASES[case]
    cfg = config(**scaler, provider=provider, node_types=types)
    tr = _small(40, seed=5, preemptible=0.5)
    fast = run(tr, cfg, seed=2, placement=placement)
    slow = run(tr, cfg, seed=2, skip=False, placement=placement)
    assert variant_json(fast) == variant_json(slow)
    assert fast.stats.passes_skipped > 0 and slow.stats.passes_skipped == 0
    assert fast.stats.passes + fast.stats.passes_skipped == slow.stats.passes
    assert fast.stats.passes < slow.stats.passes


def test_the_placement_reaches_the_scheduler() -> None:
    """The same trace and config, one case where best fit puts some job elsewhere (and a
    node then lives longer): the option is the scheduler's, not ignored."""
    scaler, provider, types = SKIP_CASES["slow-smoothing"]
    cfg = config(**scaler, provider=provider, node_types=types)
    tr = _small(40, seed=5, preemptible=0.5)
    first = run(tr, cfg, seed=2).result
    best = run(tr, cfg, seed=2, placement="best-fit").result
    assert first.cost != best.cost


def test_node_weights_by_price_reach_the_scheduler() -> None:
    """Two types of different prices: with weights by price (as ``shoal slurm-conf``
    writes them), 1-node jobs fill the cheaper type's nodes first, and the replay differs."""
    scaler, provider, types = SKIP_CASES["spot-interruptions"]  # spot at $0.20 and not
    cfg = config(**scaler, provider=provider, node_types=types)
    tr = _small(40, seed=7, preemptible=0.5)
    equal = run(tr, cfg, seed=2).result
    priced = run(tr, cfg, seed=2, node_weights="price").result
    assert equal.cost != priced.cost


def test_kept_weights_reach_the_scheduler_as_shoal_sets_them_at_its_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``slurm.node_weights: kept``: before a scheduling pass every node weighs what shoal
    set at its last read (``scaler.order`` over the jobs started by then), nodes join at
    their rank's idle weight, and the replay differs from weights by price alone."""
    scaler, provider, types = SKIP_CASES["spot-interruptions"]
    tr = _small(80, seed=5, preemptible=0.5)  # kept cost $10.40 here, price alone $10.96

    def cfg(weights: str) -> ShoalConfig:
        slurm = {"node_weights": weights, "poll_interval": "10s"}
        return config(**scaler, provider=provider, node_types=types, slurm=slurm)

    seen: list[tuple[float, dict[str, int]]] = []
    reweigh = engine._Engine._reweigh

    def spy(self: Any, t: float) -> None:
        reweigh(self, t)
        read = math.floor(t / self.poll + 1e-9) * self.poll
        weights = {}
        for name, jobs in self.cluster.running_by_node(read):
            inst = self.instances[name]
            rank = self._rank[inst.instance_type, inst.preemptible]
            weights[name] = order.kept_weight(rank, order.remaining(jobs))
        seen.append((t, weights))
        assert {n: self.cluster._nodes[n].weight for n in weights} == weights

    monkeypatch.setattr(engine._Engine, "_reweigh", spy)
    kept = run(tr, cfg("kept"), seed=2).result
    busy = [v for _, w in seen for v in w.values() if v % order.SPAN != order.SPAN - 1]
    assert len(seen) > 10 and len(set(busy)) > 2  # busy nodes weighed by their jobs
    priced = run(tr, cfg("price"), seed=2, node_weights="price").result
    assert kept.cost != priced.cost


def test_the_trace_is_taken_a_block_at_a_time_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine makes the trace's jobs Python values a block at a time (``_Arrivals``: a
    million-job trace as lists held 80 MB), and the blocks' ends change nothing: blocks of
    3 jobs (bursts of jobs at one second cut across blocks) replay as one block does, to
    every wait and sample."""
    scaler, provider, types = SKIP_CASES["spot-interruptions"]
    cfg = config(**scaler, provider=provider, node_types=types)
    tr = _small(40, seed=5, preemptible=0.5)
    whole = run(tr, cfg, seed=2).result
    monkeypatch.setattr(engine._Arrivals, "BLOCK", 3)
    blocks = run(tr, cfg, seed=2).result
    assert np.array_equal(blocks.waits, whole.waits) and len(whole.waits) == len(tr)
    assert all(
        np.array_equal(getattr(blocks.series, n), getattr(whole.series, n))
        for n in ("t", *whole.series.NAMES)
    )
    assert (blocks.cost, blocks.launches, blocks.interruptions) == (
        whole.cost,
        whole.launches,
        whole.interruptions,
    )


def test_a_replay_ending_on_a_stale_join_counts_the_passes_it_skipped() -> None:
    """A spot node interrupted while it boots is never replaced (its jobs found room), but its
    join stays due: the replay ends at that join time. The timer passes up to it run when
    every pass runs, each a cost-ceiling hit (the 20 GiB job only r5.xlarge fits is held back
    by the ceiling for ever); skipping must count them too, not end at the last pass run."""
    cfg = config(
        provider={"boot_delay": "1800s", "spot_interruption_rate": 1.0},
        node_types=[{"type": "c5.xlarge:0.10", "max": 4}, {"type": "r5.xlarge", "max": 2}],
        join_timeout="3000s",
        cost_ceiling_per_hour=0.25,
    )
    spot = [(t, 10, 7200, 1, 1, True) for t in (0, 0, 0, 0, 1700, 1700, 1700, 1700)]
    tr = trace(*spot, (0, 60, 7200, 2, 20))
    fast = run(tr, cfg, seed=3, tail=20000.0)
    slow = run(tr, cfg, seed=3, tail=20000.0, skip=False)
    assert variant_json(fast) == variant_json(slow)
    assert fast.stats.passes + fast.stats.passes_skipped == slow.stats.passes
    assert fast.stats.end == slow.stats.end


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_settling_estimates_skip_their_timer_passes(beta: float) -> None:
    """8 one-core jobs (2 nodes) for an hour, then one more at 3 h. The betaInertia estimate
    rounds to 2 nodes after a pass or two, then settles for tens (b = 0.5) or hundreds
    (b = 0.9) of timer passes with the same plan: those are skipped, their state applied as
    they are passed over, and the replay ends where running every pass ends it."""
    tr = trace(*[(0, 3600, 7200, 1, 1)] * 8, (3 * 3600, 60, 120, 1, 1))
    cfg = config(beta_inertia=beta)
    fast = run(tr, cfg)
    slow = run(tr, cfg, skip=False)
    assert variant_json(fast) == variant_json(slow)
    assert fast.stats.end == slow.stats.end
    assert fast.stats.passes + fast.stats.passes_skipped == slow.stats.passes
    # before: 101 (b = 0.5) and 543 (b = 0.9) of them run
    assert fast.stats.passes < 40 < slow.stats.passes - 300


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("raw", [0, 1, 7, 300])
@pytest.mark.parametrize("last", [0.0, 0.4999, 2.5, 12.25, 299.9, 1e5])
def test_the_raw_estimate_is_told_from_one_step(beta: float, raw: int, last: float) -> None:
    after = smooth(raw, last, beta)
    assert _raw_estimate(last, after, beta) == raw


def test_the_raw_estimate_is_not_guessed() -> None:
    assert _raw_estimate(3.0, 3.5, 0.5) == 4
    assert _raw_estimate(3.0, 3.25, 0.5) is None  # no whole raw estimate gives 3.25
    assert _raw_estimate(3.0, 4.0, 1 - 1e-7) is None  # a step too small to tell


def test_cost_ceiling_hits_are_counted() -> None:
    """A ceiling of $0.2/h holds one c5.xlarge ($0.17/h): of 8 one-core jobs, 4 run at 90
    and 4 are held back ("cost-ceiling") by every pass until those end at 690, when they
    start on the same node (wait 690). Passes with the hit: 0, 30, 60, 90 (join), then the
    timer grid from 90: 120 ... 660 (19), skipped ones included: 23. The node idles from
    1290, is drained at 1590 and terminated at 1620."""
    r = run(trace(*[(0, 600, 7200, 1, 1)] * 8), config(cost_ceiling_per_hour=0.2))
    v = r.result
    assert (v.cost_ceiling_hits, v.launches, v.terminations) == (23, 1, 1)
    assert r.stats.passes_skipped > 0
    assert v.waits.tolist() == [90.0] * 4 + [690.0] * 4
    assert v.cost == pytest.approx(C5 * 1620 / 3600)


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_skipped_ceiling_hits_are_counted_up_to_the_tail(beta: float) -> None:
    """Jobs held back by the cost ceiling while the others run past the tail: every timer
    pass up to the cap hits the ceiling, skipped ones too (they were lost before: 4 hits
    counted instead of 101 at b = 0, 1 instead of 88 at b = 0.9)."""
    tr = trace(*[(0, 20000, 40000, 1, 1)] * 8)
    cfg = config(cost_ceiling_per_hour=0.2, beta_inertia=beta)
    fast = run(tr, cfg, tail=3000.0)
    slow = run(tr, cfg, tail=3000.0, skip=False)
    assert fast.result.cost_ceiling_hits == slow.result.cost_ceiling_hits
    assert variant_json(fast) == variant_json(slow)
    assert fast.stats.capped and fast.stats.passes_skipped > 50
    if beta == 0.0:  # every pass at 0, 30 ... 3000 s holds 4 jobs back
        assert fast.result.cost_ceiling_hits == 3000 / 30 + 1


# --- knobs ------------------------------------------------------------------------------


def steady() -> Trace:
    """A steady stream: every 30 minutes for 4 hours, 16 one-core jobs that ask 20 minutes
    and run 10 (a workflow step fanning out)."""
    return trace(*[(1800 * (i // 16), 600, 1200, 1, 1) for i in range(16 * 8)])


def test_larger_target_time_costs_less_and_waits_longer() -> None:
    """The planner sizes the fleet so the queue drains within the target: a 30 minute
    target fits 8 of these jobs on a 4-core node (two 20-minute rounds per core), so each
    step gets 2 nodes; 1 h fits 12 and 2 h all 16 on one node, which then runs them in
    four 10-minute rounds while the rest wait."""
    tr = steady()
    results = [run(tr, config(target_time=t)).result for t in ("30m", "1h", "2h")]
    hours = [v.node_hours for v in results]
    waits = [v.wait.mean for v in results]
    assert hours[0] > hours[1] > hours[2]
    assert waits[0] < waits[1] < waits[2]
    # 30m: two fresh nodes per step, 8 jobs start at the join (90 s), 8 a round later
    assert sorted(set(results[0].waits.tolist())) == [90.0, 690.0]


def test_toil_policy_drains_at_once() -> None:
    """Toil has no unneeded period: the same burst's nodes are drained at the first pass
    after the jobs end (690) and terminated at the next (720): cheaper, here."""
    tr = trace(*[(0, 600, 7200, 1, 1)] * 8)
    shoal = run(tr, config()).result
    toil = run(tr, config(unneeded_time="0s")).result
    assert toil.cost == pytest.approx(2 * C5 * 720 / 3600)
    assert toil.cost < shoal.cost


# --- input ---------------------------------------------------------------------------


def test_needs_the_simulated_provider() -> None:
    cfg = parse_config(
        {
            "cluster_name": "x",
            "provider": {"kind": "aws", "region": "us-west-2", "zone": "a", "image_id": "ami-1"},
            "node_types": "c5.xlarge",
        }
    )
    with pytest.raises(SimulateError, match=r"provider\.kind"):
        run(trace((0, 1, 1, 1, 1)), cfg)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="billing_interval"):
        ReplayOptions(billing_interval=0)
    assert ReplayOptions().billed_seconds(0.5) == 60  # EC2's one-minute minimum
    assert ReplayOptions(billing_interval=3600).billed_seconds(3600.0000001) == 3600
    assert ReplayOptions(billing_interval=3600).billed_seconds(3601) == 7200


def test_tail_caps_the_replay() -> None:
    """A 10-day job with a 1-day tail: the replay stops a day after the submit, the job
    still running, its node billed up to then (launched at 0, one day)."""
    r = run(trace((0, 10 * 86400, 10 * 86400, 1, 1)), config(), tail=86400)
    v = r.result
    assert r.stats.capped and v.simulated_seconds == 86400
    assert (v.jobs_started, v.jobs_completed, v.terminations) == (1, 0, 0)
    assert v.cost == pytest.approx(C5 * 24)
    assert v.waits.tolist() == [90.0]


def test_empty_trace() -> None:
    v = run(trace(), config()).result
    assert (v.jobs, v.cost, v.launches, v.wait.count) == (0, 0, 0, 0)
    assert np.asarray(v.waits).size == 0
    # no demand ever arrives, so the first pass keeps the planner's state (nothing may be
    # decided on no evidence): a fixed point at once, and the replay ends at 0
    assert v.simulated_seconds == 0


# --- gangs -----------------------------------------------------------------------------


def gang_trace(*jobs: tuple[float, float, float, float, float, int]) -> Trace:
    """Jobs as (submit, run time, wall time, cores per node, GiB per node, nodes)."""
    b = TraceBuilder("test", "csv")
    for line, (submit, run_time, wall, cores, memory, nodes) in enumerate(jobs, 1):
        b.add(submit, run_time, wall, cores, memory * GiB, 0, False, line=line, nodes=nodes)
    return b.build()


def test_a_gang_is_launched_whole_and_starts_when_all_its_nodes_joined() -> None:
    """A 4-node job of 4 cores a node (a whole c5.xlarge each): one launch of 4 nodes at
    t=0, all join at t=90, the job starts then on all 4 and runs 600 s."""
    r = run(gang_trace((0, 600, 7200, 4, 4, 4)), config())
    v = r.result
    assert v.launches == 4 and v.waits.tolist() == [90.0]
    assert (v.jobs_completed, v.jobs_never_started) == (1, 0)
    assert v.utilisation == pytest.approx(4 * 4 * 600 / (4 * 4 * (1020 - 90)))


def test_a_gang_beyond_the_max_launches_nothing() -> None:
    """Three c5.xlarge at most: the 4-node job can never start, so no node is launched for
    it (three would bill and never run it); the 1-node job still runs."""
    cfg = config(node_types=[{"type": "c5.xlarge", "max": 3}])
    r = run(gang_trace((0, 600, 7200, 4, 4, 4), (0, 600, 7200, 1, 1, 1)), cfg)
    v = r.result
    assert (v.launches, v.jobs_completed, v.jobs_never_started) == (1, 1, 1)
    assert r.unschedulable == ()  # each part fits a c5.xlarge: it waits for the max


def test_a_gang_gets_new_nodes_when_1_node_jobs_take_the_busy_ones_as_they_free() -> None:
    """Cost packing, 10-minute target (so the held-room wait is 600 s). Two c5.xlarge run
    full-node jobs ending at 1090 and 1290 s; at 700 s a 2-node gang is queued, and a
    full-node 1-node job every 150 s from 710. The nodes free within the wait, but one by
    one, and the simulated scheduler (no reservations) starts a 1-node job on each as it
    frees: the gang, waiting for them, started at 1760 s (1060 s wait). With 1-node jobs
    queued that fit them, it waits for busy nodes only when they end together: it gets
    new nodes, boots (90 s) and starts (10 s to the pass that launches)."""
    jobs = [(0.0, 1000.0, 1000.0, 4.0, 4.0, 1), (0.0, 1200.0, 1200.0, 4.0, 4.0, 1)]
    jobs.append((700.0, 600.0, 600.0, 4.0, 4.0, 2))
    jobs += [(float(t), 300.0, 300.0, 4.0, 4.0, 1) for t in range(710, 3600, 150)]
    r = run(gang_trace(*jobs), config(packing="cost", target_time="10m"))
    v = r.result
    assert v.jobs_never_started == 0
    assert v.waits[2] == 100.0  # the gang (job id 2, by submit time)


def test_settling_timer_passes_keep_the_gangs_waits_and_a_new_wait_is_not_settled():
    # a skipped pass's state keeps when each gang stops waiting for busy nodes: dropped,
    # the gang would begin its wait again after the skip (and could wait for ever)
    from shoal.daemon.simulate import engine
    from shoal.scaler.model import PlannerState, Policy
    from shoal.scaler.shape import Shape

    pol = Policy(node_types=(), beta_inertia=0.1, packing="count")
    waits = {(Shape(600.0, 1.0, 1.0, 1.0, False), 2): 1234.0}
    before = PlannerState(estimates={"a": 0.0}, gang_waits=waits)
    after = PlannerState(estimates={"a": smooth(4, 0.0, 0.1)}, gang_waits=waits)
    settled = engine._settle(pol, before, after)
    assert settled is not None and settled[0]
    assert all(s.gang_waits == waits for s in settled[0])
    assert engine._settle(pol, replace(before, gang_waits={}), after) is None


def test_kept_weights_count_the_jobs_a_read_saw_even_when_they_ended_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """review (reviewu): the daemon sets a node's Weight from the jobs its last read showed
    running; a job that ended after that read still weighs until the next read (and its
    ``scontrol``). The replay must weigh the node as that read saw it, not from the jobs still
    running at the pass (a node emptied since the read already weighs idle there)."""
    scaler, provider, types = SKIP_CASES["spot-interruptions"]
    tr = generate(SyntheticSpec(jobs=600, days=1, seed=2, mean_burst=8, preemptible_share=0.5))
    slurm = {"node_weights": "kept", "poll_interval": "10s"}
    cfg = config(**scaler, provider=provider, node_types=types, slurm=slurm)
    ended: list[tuple[tuple[str, ...], float, float, float]] = []
    release = cluster_module.Cluster._release

    def spy_release(self: Any, job: Any, now: float) -> None:
        ended.append(
            (tuple(n.name for n in (job.node, *job.others)), job.shape.wallTime, job.start, now)
        )
        release(self, job, now)

    wrong: list[tuple[float, str]] = []
    reweigh = engine._Engine._reweigh

    def spy(self: Any, t: float) -> None:
        reweigh(self, t)
        read = math.floor(t / self.poll + 1e-9) * self.poll
        seen: dict[str, list[tuple[float, float]]] = {}
        for names, wall, start, end in ended:
            if start <= read < end:
                for name in names:
                    seen.setdefault(name, []).append((wall, read - start))
        for name, jobs in self.cluster.running_by_node(read):
            inst = self.instances[name]
            rank = self._rank[inst.instance_type, inst.preemptible]
            want = order.kept_weight(rank, order.remaining(jobs + seen.get(name, [])))
            if self.cluster._nodes[name].weight != want:
                wrong.append((t, name))

    monkeypatch.setattr(cluster_module.Cluster, "_release", spy_release)
    monkeypatch.setattr(engine._Engine, "_reweigh", spy)
    run(tr, cfg, seed=2)
    assert wrong == []
