"""``shoal simulate``'s replay speed: a synthetic 50,000-job, 90-day trace, one variant.

    .venv/bin/python bench/simulate.py                  # 50,000 jobs over 90 days
    .venv/bin/python bench/simulate.py --jobs 1000000   # the million-job figure (not in CI)

The trace is ``synthetic.generate`` (seed 11): steady, bursty and quiet phases, log-normal
run times with a Pareto tail; ``--days`` defaults to 90 days per 50,000 jobs, so a larger
``--jobs`` keeps the same load. It is replayed under ``examples/simulate.yaml`` through the
daemon's own controller (``engine.replay``), and the script prints jobs/s, simulated days
per second, wall time and peak RSS against the targets (< 60 s and < 500 MB for 50,000
jobs; < 20 minutes for a million).

The peer, in the same run: the trace's first ``--peer-days`` days (default 2) replayed with
skipping and with every pass run (``ReplayOptions(skip=False)``), best of two each,
interleaved; the ratio is what skipping no-op passes saves, and the two results must be
identical (``--peer-only`` stops there). Then the share of the
replay's time spent in the planner (``scaler.planner.plan``), measured by wrapping it.

``--trace FILE`` replays a trace file instead (read by ``trace.read_trace``, as ``shoal
simulate`` reads it), e.g. the stand-in for a real log, where nearly every job has its own
memory size and wide jobs are gangs::

    .venv/bin/python -m shoal.daemon.simulate.synthetic --jobs 50000 --days 90 --seed 11 \
        --memory per-job --gang-share 0.05 -o /tmp/perjob.swf
    .venv/bin/python bench/simulate.py --trace /tmp/perjob.swf --no-peer

A trace file is replayed on ``bench/hpc-slurm.yaml`` (the same cluster with Slurm as its
demand source, read every ``slurm.poll_interval`` as the daemon reads it: a real log is a
batch scheduler's), the synthetic on ``examples/simulate.yaml`` (pushed demand, each change
seen at once); ``--config FILE`` replays on another. ``--policy toil`` replays Toil's policy
on that config (the settings ``policy=toil`` sets, as ``bench/policy.py``'s first variant,
unaudited). ``--cores-per-node N`` splits an SWF log's wide jobs into gangs of ``N``-core
nodes (as ``shoal simulate --cores-per-node``; default: the header's ``MaxProcs / MaxNodes``).

While the replay runs, stderr shows how far it is: a bar on a terminal, else a line at
every tenth of the trace's days (a background run's log says where an hour-long run is).

The replay line gives CPU time (user + sys of this process, ``resource.getrusage``) beside
the wall time: on a shared machine compare CPU times.

``--breakdown`` (alone) says where a pass's time goes, on the trace's first
``--breakdown-days`` days (default 12): passes by what woke them (a demand change or the
timer) with their time, the packings by what asked for them (a type's node count, or the
search for how many queued jobs fit under a type's ``max``), and the same days replayed
with a longer ``scaler.debounce`` (fewer passes, a slightly different policy).
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shoal.daemon.config import ShoalConfig, load_config  # noqa: E402
from shoal.daemon.simulate import engine  # noqa: E402
from shoal.daemon.simulate.compare import build_variants  # noqa: E402
from shoal.daemon.simulate.engine import DAY, ReplayOptions, replay  # noqa: E402
from shoal.daemon.simulate.progress import ReplayProgress  # noqa: E402
from shoal.daemon.simulate.report import Report, report_json  # noqa: E402
from shoal.daemon.simulate.synthetic import SyntheticSpec, generate  # noqa: E402
from shoal.daemon.simulate.trace import Trace, TraceBuilder, TraceOptions, read_trace  # noqa: E402
from shoal.scaler.binpack import COST_PACKINGS  # noqa: E402
from shoal.scaler.patterns import FILLINGS  # noqa: E402
from shoal.scaler.planner import NEEDS  # noqa: E402

from bench.scaler_build import announce  # noqa: E402

CONFIG = ROOT / "examples" / "simulate.yaml"
SLURM_CONFIG = ROOT / "bench" / "hpc-slurm.yaml"  # for --trace: a batch scheduler's log


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prefix(trace: Trace, days: float) -> Trace:
    b = TraceBuilder(trace.source, trace.format)
    for job in trace:
        if job.submit >= days * DAY:
            break
        s = job.shape
        b.add(
            job.submit, job.run_time, job.wall_time, s.cores, s.memory, s.disk, s.preemptible,
            nodes=job.nodes,
        )  # fmt: skip
    return b.build()


def variant_json(done: engine.Replay) -> str:
    return report_json(Report("bench", "synthetic", done.result.jobs, "bench", 0, (done.result,)))


class PlannerClock:
    """Wraps the planner the controller calls to add up the time spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def install(self) -> None:
        from shoal.daemon import loop
        from shoal.scaler.planner import plan

        def timed(*args: object) -> object:
            start = time.perf_counter()
            try:
                return plan(*args)  # type: ignore[arg-type]
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        loop._default_planner = lambda: timed  # type: ignore[assignment]


def breakdown(trace: Trace, days: float, config: ShoalConfig) -> None:
    """Where the replay's time goes, on the first ``days`` days (see the module docstring)."""
    import inspect
    from collections import Counter

    from shoal.scaler import planner as planner_module

    head = prefix(trace, days)
    count: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    real_pass = engine._Engine._pass
    real_binpack = planner_module.binpack
    real_need = planner_module._need
    # _serve's probes in its search for how many queued jobs fit under a type's max
    serve = planner_module._serve
    lines, first = inspect.getsourcelines(serve)
    probe = first + next(i for i, line in enumerate(lines) if "_need(d.running, prefix" in line)
    asker = {"kind": "node count"}

    async def timed_pass(self: engine._Engine, t: float) -> object:
        kind = "demand" if self.change_at is not None else "timer"
        start = time.perf_counter()
        try:
            return await real_pass(self, t)
        finally:
            seconds[kind] += time.perf_counter() - start
            count[kind] += 1

    def need(*args: object, **kwargs: object) -> int:
        caller = sys._getframe(1)  # the search's probe is a lambda inside _serve
        inside = caller.f_code is serve.__code__ or caller.f_code in serve.__code__.co_consts
        asker["kind"] = "limit search" if inside and caller.f_lineno == probe else "node count"
        return real_need(*args, **kwargs)  # type: ignore[arg-type]

    def timed_binpack(*args: object, **kwargs: object) -> object:
        kind = asker["kind"]
        start = time.perf_counter()
        try:
            return real_binpack(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            seconds[kind] += time.perf_counter() - start
            count[kind] += 1

    engine._Engine._pass = timed_pass  # type: ignore[method-assign]
    planner_module.binpack = timed_binpack  # type: ignore[assignment]
    planner_module._need = need  # type: ignore[assignment]
    NEEDS.clear()
    COST_PACKINGS.clear()
    FILLINGS.clear()
    try:
        start = time.perf_counter()
        done = replay(head, config, ReplayOptions())
        wall = time.perf_counter() - start
    finally:
        engine._Engine._pass = real_pass  # type: ignore[method-assign]
        planner_module.binpack = real_binpack
        planner_module._need = real_need
    print(f"breakdown, first {days:g} days ({len(head):,} jobs): {wall:.1f} s")
    for kind in ("demand", "timer"):
        n = count[kind]
        print(f"  passes woken by {kind}: {n:,}, {seconds[kind]:.1f} s "
              f"({1000 * seconds[kind] / max(n, 1):.2f} ms a pass)")  # fmt: skip
    print(f"  timer passes skipped: {done.stats.passes_skipped:,}")
    for kind in ("node count", "limit search"):
        n = count[kind]
        print(f"  packings for a {kind}: {n:,}, {seconds[kind]:.1f} s "
              f"({1000 * seconds[kind] / max(n, 1):.2f} ms each)")  # fmt: skip
    # the config's own debounce again, untimed by the wrappers above: the base to compare with
    for debounce in (config.scaler.debounce, 10.0, 60.0):
        scaler = config.scaler.model_copy(update={"debounce": debounce})
        variant = config.model_copy(update={"scaler": scaler})
        NEEDS.clear()
        COST_PACKINGS.clear()
        FILLINGS.clear()
        start = time.perf_counter()
        v = replay(head, variant, ReplayOptions())
        wall = time.perf_counter() - start
        r = v.result
        print(f"  debounce {debounce:g} s: {wall:.1f} s, {v.stats.passes:,} passes, "
              f"${r.cost:,.2f}, wait p95 {r.wait.p95:.0f} s")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument(
        "--days", type=float, default=None, help="default: 90 per 50,000 jobs; --trace: its first"
    )
    parser.add_argument("--peer-days", type=float, default=2.0)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--peer-only", action="store_true")
    parser.add_argument("--trace", type=Path, default=None, help="replay this trace file")
    parser.add_argument(
        "--cores-per-node",
        type=int,
        default=None,
        help="--trace (SWF): split wide jobs into nodes of this many cores (default: header)",
    )
    parser.add_argument("--breakdown", action="store_true", help="where a pass's time goes")
    parser.add_argument("--breakdown-days", type=float, default=12.0)
    parser.add_argument(
        "--config", type=Path, default=None, help="default: hpc-slurm.yaml with --trace"
    )
    parser.add_argument(
        "--policy", choices=("toil", "shoal"), default=None, help="policy=toil's settings or not"
    )
    args = parser.parse_args(argv)
    days = args.days if args.days is not None else 90.0 * args.jobs / 50_000
    config_path = args.config or (SLURM_CONFIG if args.trace is not None else CONFIG)
    config = load_config(config_path)
    if args.policy is not None:
        config = build_variants(config, [f"policy={args.policy}"])[0].config
    source = f"slurm every {config.slurm.poll_interval:g} s" if config.slurm else "pushed"
    policy = f", policy={args.policy}" if args.policy else ""
    print(f"config: {config_path}{policy} (demand: {source})")
    announce()

    start = time.perf_counter()
    if args.trace is not None:
        trace = read_trace(args.trace, TraceOptions(cores_per_node=args.cores_per_node))
        if args.days is not None:
            trace = prefix(trace, args.days)  # its first days
        print(f"trace: {len(trace):,} jobs, {len(trace.shapes):,} shapes, read from "
              f"{args.trace} in {time.perf_counter() - start:.1f} s")  # fmt: skip
    else:
        trace = generate(SyntheticSpec(jobs=args.jobs, days=days, seed=11))
        print(f"trace: {len(trace):,} jobs over {days:g} days, generated in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    if args.breakdown:
        breakdown(trace, args.breakdown_days, config)
        return 0

    if not args.no_peer:
        head = prefix(trace, args.peer_days)
        times = {}
        results = {}
        for skip in (False, True, False, True):  # best of two each, interleaved
            start = time.perf_counter()
            results[skip] = replay(head, config, ReplayOptions(skip=skip))
            times[skip] = min(times.get(skip, math.inf), time.perf_counter() - start)
        same = variant_json(results[True]) == variant_json(results[False])
        fast, slow = results[True].stats, results[False].stats
        print(
            f"peer, first {args.peer_days:g} days ({len(head):,} jobs): skipping "
            f"{times[True]:.1f} s ({fast.passes:,} passes run, {fast.passes_skipped:,} "
            f"skipped) | every pass {times[False]:.1f} s ({slow.passes:,} passes) | "
            f"ratio {times[False] / times[True]:.2f}x | same result: {'yes' if same else 'NO'}"
        )
    if args.peer_only:
        return 0

    planner = PlannerClock()
    planner.install()
    NEEDS.clear()  # count the replay's own packings, not the peer's
    COST_PACKINGS.clear()
    FILLINGS.clear()
    cpu_start = _cpu()
    start = time.perf_counter()
    # a bar on a terminal, else a line at every tenth of the days (a background run's log)
    with ReplayProgress(trace.span, "replay", lines=10) as bar:
        done = replay(trace, config, ReplayOptions(), progress=bar.update)
    wall = time.perf_counter() - start
    cpu = _cpu() - cpu_start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    simulated_days = done.stats.end / DAY
    v = done.result
    print(
        f"replay: {len(trace):,} jobs, {simulated_days:.1f} simulated days in {wall:.1f} s "
        f"wall, {cpu:.1f} s CPU | {len(trace) / cpu:,.0f} jobs/s | "
        f"{simulated_days / cpu:.2f} simulated days/s (per CPU second) | peak RSS {rss_mb:.0f} MB"
    )
    needs = NEEDS.hits + NEEDS.misses
    print(
        f"  passes: {done.stats.passes:,} run, {done.stats.passes_skipped:,} skipped; planner "
        f"{planner.seconds:.1f} s of it ({100 * planner.seconds / wall:.0f}%, "
        f"{1000 * planner.seconds / max(planner.calls, 1):.2f} ms a pass; "
        f"{NEEDS.misses:,} packings, {100 * NEEDS.hits / max(needs, 1):.0f}% of node counts "
        f"remembered)"
    )
    print(
        f"  result: ${v.cost:,.2f}, {v.node_hours:,.1f} node-hours, wait p50 {v.wait.p50:.0f} s "
        f"p95 {v.wait.p95:.0f} s, {v.launches:,} launches, {v.jobs_never_started} never started"
    )
    if args.trace is not None and simulated_days >= 85:
        print(f"  target (a ~90-day real log): < 90 s: {'met' if cpu < 90 else 'NOT met'} (CPU)")
    elif args.trace is None and args.jobs == 50_000 and args.days is None:
        print(
            f"  targets: < 60 s: {'met' if cpu < 60 else 'NOT met'} (CPU) | < 500 MB: "
            f"{'met' if rss_mb < 500 else 'NOT met'}"
        )
    elif args.trace is None and args.jobs >= 1_000_000:
        print(f"  target: < 20 minutes: {'met' if cpu < 1200 else 'NOT met'} (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
