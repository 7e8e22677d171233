"""A replay whose queue fills with gangs that can never run, as a real log's does.

The NASA iPSC/860 log of the Parallel Workloads Archive (NASA-iPSC-1993-3.1-cln.swf) has
thousands of jobs of 32 to 128 one-core nodes, each with its own run time: wider than any
``max`` in ``bench/hpc-slurm.yaml``, so they queue for the whole replay, and every pass
reports them. The speed work of issue 19 made a pass cost one step per distinct waiting
gang (the planner's ``_place_gangs`` and ``_reported``, the scheduler's gang groups, the
demand read), not one per job. This trace is a small one of the same kind, with 1-node jobs
and runnable gangs beside the wide ones; its report's bytes were recorded before that work
(main at 0781875) and must not move.
"""

from __future__ import annotations

import hashlib
import json
import random

import configs
from shoal.daemon.config import ShoalConfig, parse_config
from shoal.daemon.simulate.engine import ReplayOptions, replay
from shoal.daemon.simulate.report import Report, report_json
from shoal.daemon.simulate.trace import Trace, TraceBuilder

GiB = 1024**3
# sha256 of the report's JSON, recorded on main at 0781875 (before the speed work)
# (skipping the passes proven to change nothing and running every pass agree)
RECORDED = "1ac3578c87fa3f1e66fc34170be1672de388e2e7eec95d62e9f72282f4dfe34c"


def wide_queue_trace(seed: int = 19) -> Trace:
    """Two days: 1-node jobs of 1-4 cores, gangs of 2-4 nodes that can run, and gangs of
    12-64 one-core nodes that cannot (the types' max is 10 and 4), identical but for their
    run times, about a third of the jobs."""
    rng = random.Random(seed)
    b = TraceBuilder("wide", "swf")
    t = 0.0
    for line in range(1, 301):
        t += rng.expovariate(1 / 500)
        run = float(rng.randint(30, 4000))
        kind = rng.random()
        if kind < 0.35:
            nodes, cores = rng.choice([12, 16, 32, 64]), 1
        elif kind < 0.5:
            nodes, cores = rng.randint(2, 4), rng.choice([1, 2])
        else:
            nodes, cores = 1, rng.choice([1, 2, 4])
        b.add(t, run, run, cores, cores * GiB, 0, False, line=line, nodes=nodes)
    return b.build()


def config() -> ShoalConfig:
    data = configs.config(
        cluster_name="sim",
        provider={"zone": "sim-1a", "boot_delay": "60s", "join_delay": "30s"},
        node_types=[{"type": "c5.xlarge", "max": 10}, {"type": "r5.xlarge", "max": 4}],
        scaler={"interval": "30s", "unneeded_time": "300s", "target_time": "1h"},
        demand={"api": False, "slurm": True},
        slurm={"mode": "external", "poll_interval": "10s"},
    )
    return parse_config(data)


def digest(skip: bool) -> str:
    done = replay(wide_queue_trace(), config(), ReplayOptions(skip=skip))
    report = Report("wide", "swf", done.result.jobs, "sim", 0, (done.result,))
    # the report as recorded then: without the placement and node weights it has named
    # since (first fit and equal weights, the only ones then), written as report_json writes it
    data = json.loads(report_json(report))
    assert data.pop("placement") == "first-fit"
    assert data.pop("node_weights") == "equal"
    text = json.dumps(data, sort_keys=True, indent=1, allow_nan=False) + "\n"
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_queue_of_wide_gangs_replays_to_the_recorded_bytes() -> None:
    assert digest(True) == RECORDED


def test_every_pass_run_gives_the_recorded_bytes_too() -> None:
    assert digest(False) == RECORDED
