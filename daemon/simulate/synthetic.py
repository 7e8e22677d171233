"""A seeded synthetic job trace: steady, bursty and quiet phases, a long tail of run times.

``generate(spec)`` returns a ``Trace`` (the same type the readers give), and is a pure
function of ``spec``: the same spec gives the same jobs on every Python version, because
every draw goes through ``random.Random(seed).random()`` (whose sequence Python keeps
stable) and this module's own transforms, never numpy's or ``random``'s distributions.

The model, over ``spec.days``:

* Phases of 2-12 hours, drawn in turn: *steady* (jobs arrive one by one, a Poisson
  process), *bursty* (jobs arrive in bursts of about ``mean_burst`` jobs within a minute,
  each burst one shape with similar run times: a workflow's fan-out) and *quiet* (no job
  arrives: the cluster should scale to zero). Bursty phases are twice as busy as steady
  ones; the first phase is never quiet. ``spec.jobs`` are shared out by phase weight.
* Run times: a log-normal body around ``median_run_time`` (sigma 1) and, for
  ``tail_share`` of the jobs, a Pareto tail (alpha 1.2) from 4x the median; capped at
  ``max_run_time``; whole seconds, at least 1.
* Requested wall time: the run time times 1.2-3, rounded up to 15 minutes, as people ask
  for more than they use.
* Shapes: a weighted mix of cores and memory (``spec.shapes``); ``preemptible_share`` of
  the jobs (per burst in a bursty phase) may run on spot nodes.
* ``memory="per-job"`` stands in for a real log, where nearly every job asks for its own
  memory: cores are drawn per job (burst) from ``PER_JOB_CORES`` (1-16) and each job's
  memory per core log-uniformly from 256 MiB to ``min(7 GiB, 56 GiB / cores)`` in whole
  KiB (so a job fits a 4-core 32 GiB or a 16-core 64 GiB node after overhead), and
  ``gang_share`` of the jobs (bursts) ask for 17-128 processors, split into nodes as the
  SWF reader splits a job wider than ``cores_per_node`` (ceil(processors / cores per
  node) nodes of ceil(processors / nodes) cores): a gang. ``write_swf`` writes the
  header's ``MaxProcs``/``MaxNodes`` so that the reader splits them the same way.
  The default ``memory="mix"`` draws exactly what it drew before the option existed.

``write_swf`` and ``write_csv`` write a trace in the formats ``trace.read_trace`` reads
(SWF has no preemptible field: it is lost there, and read back as the reader's option).
Regenerate the bundled example with::

    python -m shoal.daemon.simulate.synthetic --jobs 300 --days 3 --seed 7 -o examples/small.swf
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shoal.daemon.simulate.trace import GiB, Trace, TraceBuilder

__all__ = [
    "DEFAULT_SHAPES",
    "SyntheticSpec",
    "generate",
    "main",
    "write_csv",
    "write_swf",
]

MiB = 1024**2
DAY = 86400.0

DEFAULT_SHAPES: tuple[tuple[float, int, float], ...] = (
    # (cores, memory bytes, weight): memory per core is a whole number of KiB, so SWF's
    # "KB per processor" holds it exactly.
    (1, 1 * GiB, 0.30),
    (1, 2 * GiB, 0.18),
    (2, 4 * GiB, 0.18),
    (4, 6 * GiB, 0.12),
    (2, 12 * GiB, 0.07),
    (8, 14 * GiB, 0.07),
    (4, 28 * GiB, 0.04),
    (16, 28 * GiB, 0.04),
)

# memory="per-job": processors per job (weights), as in PWA logs (powers of two dominate)
PER_JOB_CORES: tuple[tuple[int, float], ...] = (
    (1, 0.30),
    (2, 0.15),
    (3, 0.03),
    (4, 0.15),
    (6, 0.04),
    (8, 0.14),
    (12, 0.05),
    (16, 0.14),
)


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    jobs: int = 300
    days: float = 3.0
    seed: int = 7
    mean_burst: float = 40.0  # jobs per burst, on average
    median_run_time: float = 900.0  # seconds, the log-normal body's median
    tail_share: float = 0.05  # fraction of jobs from the Pareto tail
    max_run_time: float = 2 * DAY
    preemptible_share: float = 0.0
    shapes: tuple[tuple[float, int, float], ...] = DEFAULT_SHAPES
    start_epoch: float = 1_700_000_000.0  # 2023-11-14T22:13:20Z, written as UnixStartTime
    memory: str = "mix"  # "mix": spec.shapes; "per-job": every job its own memory (above)
    gang_share: float = 0.0  # memory="per-job": fraction of jobs (bursts) on several nodes
    cores_per_node: int = 16  # memory="per-job": the SWF split's node width

    def __post_init__(self) -> None:
        if self.jobs < 0:
            raise ValueError(f"jobs is {self.jobs}; expected >= 0")
        if not self.days > 0:
            raise ValueError(f"days is {self.days}; expected > 0")
        if not self.mean_burst >= 1:
            raise ValueError(f"mean_burst is {self.mean_burst}; expected >= 1")
        if not self.median_run_time > 0 or not self.max_run_time >= 1:
            raise ValueError("median_run_time must be > 0 and max_run_time >= 1")
        if self.memory not in ("mix", "per-job"):
            raise ValueError(f"memory is {self.memory!r}; expected 'mix' or 'per-job'")
        if self.cores_per_node < 16:
            raise ValueError(f"cores_per_node is {self.cores_per_node}; expected >= 16")
        for name in ("tail_share", "preemptible_share", "gang_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is {getattr(self, name)}; expected 0..1")
        if not self.shapes or any(c <= 0 or m < 0 or w <= 0 for c, m, w in self.shapes):
            raise ValueError("shapes must be (cores > 0, memory >= 0, weight > 0) entries")


class _Draw:
    """Distributions built on ``Random.random()`` alone (its sequence is stable)."""

    def __init__(self, seed: int) -> None:
        self.u = random.Random(seed).random

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.u()

    def normal(self) -> float:
        # Box-Muller; 1 - u is in (0, 1], so the log is finite.
        return math.sqrt(-2.0 * math.log(1.0 - self.u())) * math.cos(2.0 * math.pi * self.u())

    def geometric(self, mean: float) -> int:
        """At least 1, mean ``mean``."""
        if mean <= 1:
            return 1
        p = 1.0 / mean
        return 1 + int(math.log(1.0 - self.u()) / math.log(1.0 - p))

    def pick(self, weights: Sequence[float]) -> int:
        x = self.u() * sum(weights)
        for index, weight in enumerate(weights):
            x -= weight
            if x < 0:
                return index
        return len(weights) - 1


def _share(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split by ``weights`` (largest remainder: exact and deterministic)."""
    whole = sum(weights)
    if total == 0 or whole <= 0:
        return [0] * len(weights)
    exact = [total * w / whole for w in weights]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _phases(draw: _Draw, horizon: float) -> list[tuple[str, float, float]]:
    phases: list[tuple[str, float, float]] = []
    start = 0.0
    while start < horizon:
        end = min(horizon, start + draw.uniform(2, 12) * 3600.0)
        kind = ("steady", "bursty", "quiet")[draw.pick((0.45, 0.35, 0.20))]
        if not phases and kind == "quiet":
            kind = "steady"
        phases.append((kind, start, end))
        start = end
    return phases


def _run_time(draw: _Draw, spec: SyntheticSpec, median: float) -> float:
    if draw.u() < spec.tail_share:
        alpha, low = 1.2, 4.0 * median
        value = low / (1.0 - draw.u()) ** (1.0 / alpha)
    else:
        value = median * math.exp(draw.normal())
    return float(max(1, min(round(value), int(spec.max_run_time))))


def _wall_time(draw: _Draw, run: float) -> float:
    asked = run * draw.uniform(1.2, 3.0)
    return float(max(900, math.ceil(asked / 900.0) * 900))


def generate(spec: SyntheticSpec | None = None) -> Trace:
    """The synthetic trace for ``spec`` (sorted by submit; format ``"synthetic"``)."""
    spec = spec or SyntheticSpec()
    draw = _Draw(spec.seed)
    horizon = spec.days * DAY
    phases = _phases(draw, horizon)
    intensity = {"steady": 1.0, "bursty": 2.0, "quiet": 0.0}
    counts = _share(spec.jobs, [intensity[k] * (e - s) for k, s, e in phases])
    weights = [w for _, _, w in spec.shapes]
    builder = TraceBuilder(f"synthetic(seed={spec.seed})", "synthetic")
    builder.start_epoch = spec.start_epoch
    builder.header.update({"Computer": "shoal synthetic", "UnixStartTime": int(spec.start_epoch)})

    per_job = spec.memory == "per-job"
    if per_job:
        weights = [w for _, w in PER_JOB_CORES]

    def add(submit: float, median: float, shape: int, preemptible: bool) -> None:
        nodes = 1
        if per_job:
            cores, memory, nodes = _per_job_shape(draw, shape)
        else:
            cores, memory, _ = spec.shapes[shape]
        run = _run_time(draw, spec, median)
        builder.add(
            float(min(math.floor(submit), horizon - 1)),
            run,
            _wall_time(draw, run),
            float(cores),
            float(memory),
            0.0,
            preemptible,
            nodes=nodes,
        )

    def _per_job_shape(draw: _Draw, shape: int) -> tuple[float, int, int]:
        """``shape`` < 0: a gang of ``-shape`` processors; else an index into PER_JOB_CORES."""
        nodes = 1
        if shape < 0:
            nodes = math.ceil(-shape / spec.cores_per_node)
            cores = math.ceil(-shape / nodes)
        else:
            cores = PER_JOB_CORES[shape][0]
        low, high = 256 * MiB, min(7 * GiB, 56 * GiB / cores)
        kb = math.floor(low * (high / low) ** draw.u() / 1024)
        return cores, kb * 1024 * cores, nodes

    def pick_shape() -> int:
        if per_job and draw.u() < spec.gang_share:
            return -math.floor(draw.uniform(spec.cores_per_node + 1, 8 * spec.cores_per_node + 1))
        return draw.pick(weights)

    for (kind, start, end), count in zip(phases, counts, strict=True):
        if kind == "steady":
            for _ in range(count):
                preemptible = draw.u() < spec.preemptible_share
                add(draw.uniform(start, end), spec.median_run_time, pick_shape(), preemptible)
        elif kind == "bursty":
            left = count
            while left > 0:
                size = min(left, draw.geometric(spec.mean_burst))
                left -= size
                at = draw.uniform(start, end)
                shape = pick_shape()
                median = spec.median_run_time * math.exp(0.5 * draw.normal())
                preemptible = draw.u() < spec.preemptible_share
                for _ in range(size):
                    add(at + draw.uniform(0, 60), median, shape, preemptible)
    return builder.build()


# --- writers -------------------------------------------------------------------------------


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _open_out(out: str | os.PathLike[str] | IO[str]) -> tuple[IO[str], bool]:
    if isinstance(out, str | os.PathLike):
        return open(out, "w", encoding="utf-8", newline="\n"), True
    return out, False


def write_swf(
    trace: Trace,
    out: str | os.PathLike[str] | IO[str],
    note: str = "",
    cores_per_node: int | None = None,
) -> None:
    """Write ``trace`` as SWF v2.2. Memory is written as requested memory in KB per processor
    (rounded to whole KB); fields shoal does not model are -1; every job has status 1.
    A gang is written as one job of all its nodes' processors; with ``cores_per_node`` the
    header's ``MaxProcs``/``MaxNodes`` say the node width, so that the reader splits such a
    job back into its nodes (a trace with gangs needs it)."""
    if trace.nodes is not None and cores_per_node is None:
        raise ValueError("a trace with gangs needs cores_per_node to be read back as gangs")
    stream, close = _open_out(out)
    try:
        shapes = trace.shapes
        used = {int(i) for i in set(trace.shape_index.tolist())}
        max_procs = max((shapes[i].cores for i in used), default=0)
        machine = []
        if cores_per_node is not None:
            max_nodes = 1 if trace.nodes is None else max(1, int(trace.nodes.max()))
            max_procs = max_nodes * cores_per_node
            machine = [f"; MaxNodes: {max_nodes}"]
        max_run = float(trace.run_time.max()) if len(trace) else 0.0
        max_mem_kb = max(
            (round(shapes[i].memory / shapes[i].cores / 1024) for i in used), default=0
        )
        start = trace.start_epoch if trace.start_epoch is not None else 0
        lines = [
            "; Version: 2.2",
            f"; Computer: {trace.header.get('Computer', 'shoal')}",
            f"; Conversion: written by shoal from {trace.source}",
            f"; MaxJobs: {len(trace)}",
            f"; MaxRecords: {len(trace)}",
            f"; UnixStartTime: {_num(start)}",
            f"; MaxProcs: {_num(max_procs)}",
            *machine,
            f"; MaxRuntime: {_num(max_run)}",
            f"; MaxMemory: {max_mem_kb}",
        ]
        lines += [f"; Note: {part}" for part in note.splitlines() if part.strip()]
        stream.write("\n".join(lines) + "\n;\n")
        for job in trace:
            s = job.shape
            kb = round(s.memory / s.cores / 1024)
            procs = _num(s.cores * job.nodes)
            fields = (
                str(job.index + 1),
                _num(job.submit),
                "-1",
                _num(job.run_time),
                procs,
                "-1",
                "-1",
                procs,
                _num(job.wall_time),
                str(kb),
                "1",
                *("-1",) * 7,
            )
            stream.write(" ".join(fields) + "\n")
    finally:
        if close:
            stream.close()


def write_csv(trace: Trace, out: str | os.PathLike[str] | IO[str]) -> None:
    """Write ``trace`` as shoal's CSV (sizes in bytes, durations in seconds; a ``nodes``
    column when the trace has gangs)."""
    stream, close = _open_out(out)
    try:
        gangs = trace.nodes is not None
        stream.write("submit,cores,memory,disk,wall_time,run_time,preemptible")
        stream.write(",nodes\n" if gangs else "\n")
        for job in trace:
            s = job.shape
            stream.write(
                f"{_num(job.submit)},{_num(s.cores)},{_num(s.memory)},{_num(s.disk)},"
                f"{_num(job.wall_time)},{_num(job.run_time)},{str(s.preemptible).lower()}"
                + (f",{job.nodes}\n" if gangs else "\n")
            )
    finally:
        if close:
            stream.close()


# --- command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    default = SyntheticSpec()
    parser = argparse.ArgumentParser(
        prog="python -m shoal.daemon.simulate.synthetic",
        description="Write a seeded synthetic job trace (SWF, or CSV when -o ends in .csv).",
    )
    parser.add_argument("--jobs", type=int, default=default.jobs)
    parser.add_argument("--days", type=float, default=default.days)
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--mean-burst", type=float, default=default.mean_burst)
    parser.add_argument(
        "--median-run-time", type=float, default=default.median_run_time, help="seconds"
    )
    parser.add_argument("--preemptible-share", type=float, default=0.0)
    parser.add_argument(
        "--memory",
        choices=("mix", "per-job"),
        default=default.memory,
        help="per-job: every job its own memory, as in real logs (default: mix)",
    )
    parser.add_argument(
        "--gang-share", type=float, default=0.0, help="with --memory per-job: jobs on several nodes"
    )
    parser.add_argument("-o", "--out", default="-", help="output file (default: stdout, SWF)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = SyntheticSpec(
            jobs=args.jobs,
            days=args.days,
            seed=args.seed,
            mean_burst=args.mean_burst,
            median_run_time=args.median_run_time,
            preemptible_share=args.preemptible_share,
            memory=args.memory,
            gang_share=args.gang_share,
        )
    except ValueError as exc:
        print(f"synthetic: {exc}", file=sys.stderr)
        return 2
    trace = generate(spec)
    note = f"shoal synthetic trace: jobs={spec.jobs} days={_num(spec.days)} seed={spec.seed}"
    if spec.memory != "mix":
        note += f" memory={spec.memory} gang_share={spec.gang_share:g}"
    width = spec.cores_per_node if spec.memory != "mix" else None
    if args.out == "-":
        write_swf(trace, sys.stdout, note, width)
    elif str(args.out).endswith(".csv"):
        write_csv(trace, Path(args.out))
    else:
        write_swf(trace, Path(args.out), note, width)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
