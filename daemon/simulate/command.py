"""``shoal simulate``: read the config and the trace, replay every variant, write the report.

``run(args, stdout, stderr) -> exit status``: 0 when the report was written; 2 for bad
input, with a message naming what is wrong (the config file and its key, the trace file,
line and field, a ``--compare`` variant, or an instance type the simulated cloud does not
know); nothing is replayed then. The variants run in ``-j`` worker processes
(``daemon.simulate.parallel``: the report does not depend on how many); a variant that
fails stops the others, exit 2 naming it; Ctrl-C stops them all, exit 130. The table goes
to ``stdout`` (rich's box drawing when it is a terminal, aligned plain text otherwise), the
progress bar (a row per variant) to ``stderr`` when that is a terminal, and, once every
variant is done, a note to ``stderr`` for jobs that fit no node type.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO

from shoal.daemon.config import ConfigError, load_config
from shoal.daemon.simulate.args import replay_options, trace_options
from shoal.daemon.simulate.compare import CompareError, Variant, build_variants
from shoal.daemon.simulate.engine import Replay, SimulateError
from shoal.daemon.simulate.parallel import VariantError, replay_variants
from shoal.daemon.simulate.progress import ReplayProgress
from shoal.daemon.simulate.report import Report, format_table, write_report
from shoal.daemon.simulate.trace import Trace, TraceError, read_trace
from shoal.providers.errors import ProviderError

__all__ = ["run"]

UNSCHEDULABLE_SHOWN = 5


def _isatty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _config_error(exc: ConfigError, stderr: IO[str]) -> int:
    print(f"invalid config {exc.source}:", file=stderr)
    for issue in exc.errors:
        print(f"  {issue}", file=stderr)
    return 2


def _unschedulable_note(trace: Trace, variant: Variant, done: Replay, stderr: IO[str]) -> None:
    jobs = done.unschedulable
    if not jobs:
        return
    print(f"{variant.name}: {len(jobs)} jobs fit no node type and never started:", file=stderr)
    sizes: dict[int, int] = {}
    for job in jobs:
        sizes[job.nodes] = sizes.get(job.nodes, 0) + 1
    if len(sizes) > 1 or 1 not in sizes:
        by_size = ", ".join(
            f"{count} of {n} node{'s' if n > 1 else ''}" for n, count in sorted(sizes.items())
        )
        print(f"  by gang size: {by_size}", file=stderr)
    for job in jobs[:UNSCHEDULABLE_SHOWN]:
        s = job.shape
        each = f"{job.nodes} nodes of " if job.nodes > 1 else ""
        print(
            f"  {trace.source} line {int(trace.line[job.job])}: {each}{s.cores:g} cores, "
            f"{s.memory / 2**30:g} GiB memory, {s.disk / 2**30:g} GiB disk "
            f"(too large: {', '.join(job.reasons)})",
            file=stderr,
        )
    if len(jobs) > UNSCHEDULABLE_SHOWN:
        print(f"  ... and {len(jobs) - UNSCHEDULABLE_SHOWN} more", file=stderr)


def run(
    args: argparse.Namespace, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _config_error(exc, stderr)
    try:
        variants = build_variants(config, args.compare)
    except ConfigError as exc:
        return _config_error(exc, stderr)
    except CompareError as exc:
        print(f"shoal simulate: {exc}", file=stderr)
        return 2
    try:
        options = replay_options(args)
    except ValueError as exc:
        print(f"shoal simulate: {exc}", file=stderr)
        return 2
    try:
        trace = read_trace(args.trace, trace_options(args), fmt=args.trace_format)
    except TraceError as exc:
        print(f"invalid trace: {exc}", file=stderr)
        return 2
    except OSError as exc:
        print(f"cannot read trace {args.trace}: {exc}", file=stderr)
        return 2
    for default in trace.defaults:
        print(f"trace: {default}", file=stderr)
    if trace.bad_lines:
        print(f"trace: {trace.bad_lines} malformed lines skipped; the first:", file=stderr)
        for error in trace.errors:
            print(f"  {error}", file=stderr)
    try:
        with ReplayProgress(trace.span, [v.name for v in variants], stream=stderr) as bar:
            replays = replay_variants(trace, variants, options, jobs=args.jobs, progress=bar)
    except VariantError as exc:
        if not isinstance(exc.__cause__, SimulateError | ProviderError):
            raise
        print(f"shoal simulate: {exc}", file=stderr)
        return 2
    except KeyboardInterrupt:
        print("shoal simulate: interrupted; no report written", file=stderr)
        return 130
    for variant, done in zip(variants, replays, strict=True):
        _unschedulable_note(trace, variant, done, stderr)
    results = [done.result for done in replays]
    report = Report(
        trace=str(args.trace),
        trace_format=trace.format,
        jobs=len(trace),
        config=str(args.config),
        seed=args.seed if args.seed is not None else getattr(config.provider, "seed", 0),
        variants=tuple(results),
        start_epoch=trace.start_epoch,
        bad_lines_skipped=trace.bad_lines,
        defaults_used=tuple(str(d) for d in trace.defaults),
        placement=options.placement,
        node_weights=options.node_weights,
    )
    files = write_report(report, args.out)
    stdout.write(format_table(report, tty=_isatty(stdout)))
    print(
        f"report: {files.html} ({files.json.name}, {files.csv.name}, "
        + ", ".join(p.name for p in files.plots)
        + ")",
        file=stdout,
    )
    return 0
