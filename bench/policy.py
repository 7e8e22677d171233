"""Decision quality: a trace replayed under ``policy=toil`` and under shoal's defaults.

    .venv/bin/python bench/policy.py                      # the stand-in, first 10 days
    .venv/bin/python bench/policy.py --trace LOG.swf      # a real PWA log, first 10 days
    .venv/bin/python bench/policy.py --days 30 -j 2       # a longer slice, 2 processes
    .venv/bin/python bench/policy.py --trace LOG.swf --from-day 669 --days 14  # a window

Both policies replay the same slice of the trace on the same node-type menu
(``bench/policy.yaml``: c5/m5/m6i/r5 types of 8 to 48 cores on demand, one spot type) with
the same seed, through ``shoal simulate``'s machinery: ``compare.build_variants`` makes
the variants (``policy=toil``, then ``policy=shoal``; ``--compare KEY=V1,V2`` replaces the
latter with shoal's policy under each value, as ``shoal simulate --compare`` does, so
``--compare scaler.unneeded_time=2m,10m`` is three rows; several ``--compare`` make a grid,
while each ``--vary KEY=V1,V2`` adds rows of shoal's policy with that one key changed) and
the replay engine runs each in its own spawned process (``-j``).

Printed side by side: cost, node-hours, utilisation, wait p50/p95/p99, launches, and each
policy's cost over the clairvoyant lower bound: every job's node time (run time x nodes)
priced at the cheapest share of a node type it fits, the share being the largest of its
cores, memory and disk over the type's usable room (after overhead), times the type's
price; no idle time, no boot time, no billing minimum. Preemptible jobs may use spot types
for it, the others only on-demand ones. No policy can cost less.

Then where the money goes, per policy and node type, from an audit of every instance's
life in the replay (``_AuditedEngine``: the replay engine, sampling each live instance at
every step it stops at): node-hours booting, idle (joined, no job) and busy, the busy
hours with less than half the node in use (one small job holding a large node), their
cost, and the launches that lived under ``--short`` minutes or never ran a job.

Without ``--trace`` the stand-in for a real log is written as SWF and read back through the
SWF reader, as ``python -m shoal.daemon.simulate.synthetic --jobs 50000 --days 90 --seed 11
--memory per-job --gang-share 0.05 -o FILE`` writes it (every job its own memory size, 5% of
the bursts gangs of 2-8 nodes). A PWA log's multi-node jobs become gangs the same way (its
header's ``MaxProcs``/``MaxNodes``, or ``--cores-per-node``); ``--preemptible-queues``
names the SWF queues whose jobs may run on spot.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shoal.daemon.config import ConfigError, ShoalConfig, load_config  # noqa: E402
from shoal.daemon.simulate import engine  # noqa: E402
from shoal.daemon.simulate.args import _positive, _queues  # noqa: E402
from shoal.daemon.simulate.cluster import NODE_WEIGHTS, PLACEMENTS  # noqa: E402
from shoal.daemon.simulate.compare import CompareError, Variant, build_variants  # noqa: E402
from shoal.daemon.simulate.engine import DAY, Replay, ReplayOptions  # noqa: E402
from shoal.daemon.simulate.report import TABLE_COLUMNS  # noqa: E402
from shoal.daemon.simulate.synthetic import SyntheticSpec, generate, write_swf  # noqa: E402
from shoal.daemon.simulate.trace import Trace, TraceOptions, read_trace  # noqa: E402
from shoal.providers.outcomes import LaunchAttempt  # noqa: E402
from shoal.scaler.binpack import COST_PACKINGS  # noqa: E402
from shoal.scaler.model import Policy  # noqa: E402
from shoal.scaler.patterns import FILLINGS  # noqa: E402
from shoal.scaler.planner import NEEDS, usable_shape  # noqa: E402

from bench.scaler_build import announce  # noqa: E402

CONFIG = ROOT / "bench" / "policy.yaml"
STATES = ("boot", "idle", "busy")


@dataclass
class Audit:
    """Seconds per (node type, spot, state) and per instance, and the bound's inputs."""

    seconds: dict[tuple[str, bool, str], float] = field(default_factory=lambda: defaultdict(float))
    thin: dict[tuple[str, bool], float] = field(default_factory=lambda: defaultdict(float))
    prices: dict[tuple[str, bool], float] = field(default_factory=dict)
    lifetimes: list[float] = field(default_factory=list)  # per instance, seconds
    busy: list[float] = field(default_factory=list)  # per instance, seconds with a job
    bound: float = 0.0  # the clairvoyant lower bound, dollars
    unfit: int = 0  # jobs no type fits (left out of the bound)


def clairvoyant_bound(trace: Trace, policy: Policy) -> tuple[float, int]:
    """Dollars for every job's node time at the cheapest share of a type it fits, and the
    number of jobs no type fits (left out): a gang fits a type only if its nodes are within
    the type's max, else no policy can start it (a wide SWF job split into gangs of small
    nodes, say) and it costs nothing in any replay."""
    types = [
        (usable_shape(t, policy), t.price_per_hour or 0.0, t.max_nodes) for t in policy.node_types
    ]
    nodes = np.ones(len(trace), dtype=np.int64) if trace.nodes is None else trace.nodes
    widths = np.unique(nodes)
    # dollars per hour of one job node, per shape and gang width (its index in ``widths``)
    rate = np.full((len(trace.shapes), len(widths)), np.inf)
    for i, job in enumerate(trace.shapes):
        for room, price, most in types:
            if room.preemptible and not job.preemptible:
                continue
            need = [(job.cores, room.cores), (job.memory, room.memory), (job.disk, room.disk)]
            if any(want > have + 1e-9 for want, have in need):
                continue
            share = max(want / have for want, have in need if have > 0)
            within = widths <= most
            rate[i, within] = np.minimum(rate[i, within], share * price)
    per_job = rate[trace.shape_index, np.searchsorted(widths, nodes)]
    fits = np.isfinite(per_job)
    hours = trace.run_time * nodes / 3600.0
    return float(np.sum(per_job[fits] * hours[fits])), int(np.sum(~fits))


@dataclass
class _Walked:
    """What ``_AuditedEngine._walk`` found, as ``_sample`` adds each step's seconds to it."""

    states: list[tuple[str, bool, str]]  # every live instance's (type, spot, state)
    busy: list[str]  # the busy ones
    thin: list[tuple[str, bool]]  # the busy ones less than half in use: (type, spot)


class _AuditedEngine(engine._Engine):
    """The replay engine, noting each live instance's state between the steps it stops at
    (the fleet and the jobs only change at steps)."""

    async def _build(self) -> None:
        await super()._build()
        self.audit = Audit()
        for (instance_type, spot), _ in self._usable.items():
            self.audit.prices[instance_type, spot] = self.provider.types[instance_type].price(spot)
        self._since = 0.0
        self._state = _Walked([], [], [])
        self._busy: dict[str, float] = defaultdict(float)
        self._live: dict[str, engine._Instance] = {}  # every instance not known ended
        self._walked: tuple[int, int, int] | None = None  # what _state was walked at

    def _launched(self, attempt: LaunchAttempt, t: float) -> None:
        # the instances this launch adds, in launch order (a retried request's are known);
        # noted here, not by slicing every instance ever launched at each step: a 90-day
        # log launches ~46,000, and that copy grew with them (quadratic in the replay)
        new = [name for name in attempt.ids if name not in self.instances]
        super()._launched(attempt, t)
        for name in new:
            self._live[name] = self.instances[name]

    def _sample(self, t: float) -> None:
        dt = t - self._since
        audit = self.audit
        if dt > 0:
            # each sum gets the same additions in the same order as when one loop over the
            # instances added to all three (so the same floats), with no test per instance
            seconds, busy, thin = audit.seconds, self._busy, audit.thin
            for key in self._state.states:
                seconds[key] += dt
            for name in self._state.busy:
                busy[name] += dt
            for pair in self._state.thin:
                thin[pair] += dt
        self._since = t
        # each instance's state changes only with a launch, an end (``live``), a join or a
        # job's start or end (the cluster's ``version``): walked again only then
        key = (self.cluster.version, len(self.instances), self.live)
        if key != self._walked:
            self._walked = key
            self._state = self._walk()
        super()._sample(t)

    def _walk(self) -> _Walked:
        """Each live instance's (type, spot, boot/idle/busy), the busy ones' names and the
        (type, spot) of those less than half in use, in the instances' order."""
        nodes = self.cluster._nodes
        state = _Walked([], [], [])
        for name, inst in list(self._live.items()):
            if inst.ended is not None:
                del self._live[name]
                continue
            node = nodes.get(name) if inst.joined else None
            if node is None:
                kind = "boot" if not inst.joined else "idle"
            elif not node.jobs:
                kind = "idle"
            else:
                room = node.usable
                used = max(1 - node.cores / room.cores, 1 - node.memory / max(room.memory, 1.0))
                kind = "busy"
                state.busy.append(name)
                if used < 0.5:
                    state.thin.append((inst.instance_type, inst.preemptible))
            state.states.append((inst.instance_type, inst.preemptible, kind))
        return state

    def _result(self, end: float, capped: bool) -> Replay:
        done = super()._result(end, capped)
        for inst in self.instances.values():
            assert inst.ended is not None
            self.audit.lifetimes.append(inst.ended - inst.launched)
            self.audit.busy.append(self._busy.get(inst.name, 0.0))
        return done


_WORKER: dict[str, object] = {}


def _start(trace: Trace, options: ReplayOptions) -> None:
    _WORKER.update(trace=trace, options=options)


def _replay(variant: Variant) -> tuple[Replay, Audit, float]:
    """One variant, audited (module level: a spawned worker imports it)."""
    import asyncio

    trace: Trace = _WORKER["trace"]  # type: ignore[assignment]
    options: ReplayOptions = _WORKER["options"]  # type: ignore[assignment]
    NEEDS.clear()  # with -j 1 the variants share a process: none reuses another's packings
    COST_PACKINGS.clear()
    FILLINGS.clear()
    started = time.process_time()
    audited = _AuditedEngine(trace, variant.config, options, variant.name, variant.overrides, None)
    with engine._quiet_logs(50):
        done = asyncio.run(audited.run())
    audit = audited.audit
    audit.bound, audit.unfit = clairvoyant_bound(trace, audited.controller.policy)
    audit.seconds = dict(audit.seconds)
    audit.thin = dict(audit.thin)
    return done, audit, time.process_time() - started


def replay_all(
    trace: Trace, variants: Sequence[Variant], options: ReplayOptions, jobs: int
) -> list[tuple[Replay, Audit, float]]:
    """Every variant's replay, audit and CPU seconds, in variant order; each one's end is
    noted on stderr as it comes (a long slice of a real log runs for minutes)."""
    workers = min(jobs, len(variants))
    if workers <= 1:
        _start(trace, options)
        return [_done(v, _replay(v)) for v in variants]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, context, initializer=_start, initargs=(trace, options)) as p:
        futures = {p.submit(_replay, v): v for v in variants}
        for future in as_completed(futures):
            _done(futures[future], future.result())
        return [f.result() for f in futures]


def _done(variant: Variant, result: tuple[Replay, Audit, float]) -> tuple[Replay, Audit, float]:
    print(f"  replayed {variant.name}: {result[2]:.0f} s CPU", file=sys.stderr, flush=True)
    return result


def _wait(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds / 3600:.1f}h"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            r[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# the simulate table's first seven columns, then this bench's
COLUMNS = [*TABLE_COLUMNS[:7], "launches", "never started", "x bound", "x toil"]


def summary(results: Sequence[tuple[Replay, Audit, float]]) -> str:
    """The side-by-side table: one row per variant, then the clairvoyant bound."""
    bound = results[0][1].bound
    toil = next(
        (r.result.cost for r, _, _ in results if r.result.name.startswith("policy=toil")), 0
    )
    rows = [COLUMNS]
    for done, _, _ in results:
        r = done.result
        rows.append(
            [
                r.name,
                f"{r.cost:,.2f}",
                f"{r.node_hours:,.1f}",
                f"{r.utilisation:.1%}",
                _wait(r.wait.p50),
                _wait(r.wait.p95),
                _wait(r.wait.p99),
                f"{r.launches:,}",
                f"{r.jobs_never_started:,}",
                f"{r.cost / bound:.3f}" if bound else "-",
                f"{r.cost / toil:.3f}" if toil else "-",
            ]
        )
    rows.append(["clairvoyant bound", f"{bound:,.2f}", *["-"] * 7, "1.000", "-"])
    return _table(rows)


def _cells(values: Sequence[float]) -> list[str]:
    """Hours with one decimal, then dollars with two."""
    return [*(f"{v:,.1f}" for v in values[:4]), *(f"{v:,.2f}" for v in values[4:])]


def breakdown(done: Replay, audit: Audit, short: float) -> str:
    """Where one variant's node-hours and money go, per node type."""
    rows = [["  type", "boot h", "idle h", "busy h", "<half-used h", "idle $", "boot $", "cost $"]]
    keys = sorted({k[:2] for k in audit.seconds})
    totals = [0.0] * 7
    for key in keys:
        h = [audit.seconds.get((*key, s), 0.0) / 3600 for s in STATES]
        thin = audit.thin.get(key, 0.0) / 3600
        price = audit.prices[key]
        line = [*h, thin, h[1] * price, h[0] * price, sum(h) * price]
        totals = [a + b for a, b in zip(totals, line, strict=True)]
        name = key[0] + (" (spot)" if key[1] else "")
        rows.append([f"  {name}", *_cells(line)])
    rows.append(["  all", *_cells(totals)])
    life = np.asarray(audit.lifetimes)
    busy = np.asarray(audit.busy)
    few = int(np.sum(life < short * 60))
    idle = int(np.sum(busy <= 0))
    median = float(np.median(life)) if len(life) else 0.0
    return (
        f"{done.result.name}: {len(life):,} instances, {few:,} lived under {short:g} min, "
        f"{idle:,} never ran a job, median life {median / 3600:.2f} h\n" + _table(rows)
    )


def stand_in(jobs: int, days: float, seed: int, directory: Path) -> Path:
    """The stand-in for a real log, written as SWF (read back through the SWF reader)."""
    spec = SyntheticSpec(
        jobs=jobs, days=days, seed=seed, memory="per-job", gang_share=0.05
    )  # the flags bench/README.md gives
    path = directory / f"standin-{jobs}-{days:g}-{seed}.swf"
    write_swf(generate(spec), path, "bench/policy.py stand-in", spec.cores_per_node)
    return path


def window(trace: Trace, start: float, days: float) -> Trace:
    """The jobs submitted in [``start``, ``start`` + ``days``) days, their submit times moved
    back by ``start`` days (and the SWF start epoch forward by as much): a busy stretch of a
    long log replayed on its own, as an empty cluster would meet it. Jobs submitted before
    ``start`` are not in it, even those still running then. Start 0: the first ``days``
    (the same jobs as ``bench.simulate.prefix``, with the trace's header kept)."""
    lo, hi = np.searchsorted(trace.submit, [start * DAY, (start + days) * DAY], side="left")
    nodes = None if trace.nodes is None else trace.nodes[lo:hi]
    submit = trace.submit[lo:hi] - start * DAY
    submit.flags.writeable = False
    return dataclasses.replace(
        trace,
        submit=submit,
        run_time=trace.run_time[lo:hi],
        wall_time=trace.wall_time[lo:hi],
        shape_index=trace.shape_index[lo:hi],
        line=trace.line[lo:hi],
        nodes=nodes if nodes is not None and bool(np.any(nodes > 1)) else None,
        start_epoch=None if trace.start_epoch is None else trace.start_epoch + start * DAY,
    )


def policy_variants(
    config: ShoalConfig, compare: Sequence[str], vary: Sequence[str] = ()
) -> tuple[Variant, ...]:
    """Toil's policy as it is, shoal's under each ``compare`` combination (none: its
    defaults), then for each ``vary`` flag shoal's under those with that one key's values."""
    variants = build_variants(config, ["policy=toil"])
    for flags in ((), *((flag,) for flag in vary)):
        variants += build_variants(config, ["policy=shoal", *compare, *flags])
    return variants


def _days(text: str) -> float:
    """A number of days for ``--days`` / ``--from-day``: finite and not negative."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of days >= 0")
    return value


def _span(text: str) -> float:
    """``--span``: days above 0."""
    value = _days(text)
    if value == 0:
        raise argparse.ArgumentTypeError("the stand-in's span must be above 0 days")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trace", help="an SWF/CSV/JSONL trace (default: the stand-in)")
    p.add_argument("--days", type=_days, default=10.0, help="replay the first D days (10)")
    p.add_argument("--from-day", type=_days, default=0.0, help="skip the trace's first D days")
    p.add_argument("--jobs", type=_positive, default=50_000, help="stand-in: jobs over --span days")
    p.add_argument("--span", type=_span, default=90.0, help="stand-in: days (90)")
    p.add_argument("--seed", type=int, default=11, help="stand-in and simulated cloud seed")
    p.add_argument("-c", "--config", default=str(CONFIG), help="the node-type menu")
    p.add_argument("--compare", action="append", default=[], help="shoal variants: KEY=V1,V2")
    p.add_argument(
        "--vary", action="append", default=[], help="shoal variants, one key at a time: KEY=V1,V2"
    )
    p.add_argument("-j", type=int, default=2, help="processes (2)")
    p.add_argument("--short", type=float, default=10.0, help="minutes: a short-lived launch")
    p.add_argument("--cores-per-node", type=_positive, help="SWF: split wider jobs into gangs")
    p.add_argument(
        "--preemptible-queues",
        type=_queues,
        default=frozenset(),
        help="SWF: queues whose jobs may use spot",
    )
    p.add_argument(
        "--placement",
        choices=PLACEMENTS,
        default="first-fit",
        help="the simulated scheduler's node choice (shoal simulate --placement)",
    )
    p.add_argument(
        "--node-weights",
        choices=NODE_WEIGHTS,
        default="equal",
        help="Slurm's node weights in the simulated scheduler (shoal simulate --node-weights)",
    )
    p.add_argument("--no-breakdown", action="store_true", help="the table alone")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config: ShoalConfig = load_config(args.config)
    try:
        variants = policy_variants(config, args.compare, list(dict.fromkeys(args.vary)))
    except (CompareError, ConfigError) as e:  # --vary's flags are --compare's
        parser.error(str(e))
    trace_options = TraceOptions(
        cores_per_node=args.cores_per_node, preemptible_queues=args.preemptible_queues
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = (
            Path(args.trace) if args.trace else stand_in(args.jobs, args.span, args.seed, Path(tmp))
        )
        whole = read_trace(path, trace_options)
    trace = window(whole, args.from_day, args.days)
    if not len(trace):
        parser.error(f"no job submitted in {args.days:g} days from day {args.from_day:g}")
    gangs = 0 if trace.nodes is None else int(np.sum(trace.nodes > 1))
    source = (
        args.trace or f"stand-in ({args.jobs:,} jobs over {args.span:g} days, seed {args.seed})"
    )
    print(
        f"trace: {source}; {args.days:g} days from day {args.from_day:g}: {len(trace):,} jobs, "
        f"{len(set(trace.shape_index.tolist())):,} shapes, {gangs:,} gangs"
    )
    for default in whole.defaults:  # what the reader assumed where the log says nothing
        print(f"  assumed {default}")
    print(
        f"menu: {args.config}, {len(config.node_types)} node types; {len(variants)} variants; "
        f"placement {args.placement}, node weights {args.node_weights}"
    )
    announce()
    started = time.monotonic()
    results = replay_all(
        trace,
        variants,
        ReplayOptions(seed=args.seed, placement=args.placement, node_weights=args.node_weights),
        args.j,
    )
    cpu = ", ".join(f"{cpu:.0f} s" for _, _, cpu in results)
    print(f"replayed in {time.monotonic() - started:.0f} s wall (CPU per variant: {cpu})\n")
    print(summary(results))
    unfit = results[0][1].unfit
    if unfit:
        print(
            f"({unfit:,} jobs fit no node type, or are gangs wider than the max of every type "
            "they fit: left out of the bound; no policy starts them. A wide SWF job is a gang "
            "of nodes of --cores-per-node cores)"
        )
    if not args.no_breakdown:
        for done, audit, _ in results:
            print()
            print(breakdown(done, audit, args.short))
    return 0


if __name__ == "__main__":
    sys.exit(main())
