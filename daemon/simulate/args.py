"""The ``shoal simulate`` command line, for the CLI to mount as a subcommand::

    sim = sub.add_parser("simulate", help=HELP, description=DESCRIPTION)
    add_arguments(sim)
    ...
    options = trace_options(args)      # TraceOptions for read_trace
    replay = replay_options(args)      # ReplayOptions for engine.replay
    args.compare                       # list of (key, values), already checked

``--compare`` flags are parsed as they are read (``compare.parse_compare``), so a
malformed one stops argparse with exit status 2 before anything is read or replayed.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from shoal.daemon.simulate.cluster import NODE_WEIGHTS, PLACEMENTS
from shoal.daemon.simulate.compare import CompareError, parse_compare
from shoal.daemon.simulate.trace import GiB, TraceOptions
from shoal.daemon.units import parse_duration, parse_size

if TYPE_CHECKING:
    from shoal.daemon.simulate.engine import ReplayOptions

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "replay_options", "trace_options"]

HELP = "replay a job trace through shoal's policy on a virtual clock; report cost and waits"
DESCRIPTION = (
    "Replay a job trace (SWF v2.2 of the Parallel Workloads Archive, or shoal's CSV or JSON "
    "lines) through the daemon's planner, executor and simulated cloud on a virtual clock. "
    "Writes report.json, report.csv, PNG plots and index.html to --out and prints one row "
    "per variant. --compare runs several configs on the same trace; policy=toil is Toil "
    "9.6's policy on the same cluster."
)


def _compare(text: str) -> tuple[str, tuple[str, ...]]:
    try:
        return parse_compare(text)
    except CompareError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _queues(text: str) -> frozenset[int]:
    try:
        queues = frozenset(int(q) for q in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of queue numbers"
        ) from None
    if any(q < 0 for q in queues):
        raise argparse.ArgumentTypeError(f"queue numbers are >= 0, not {text!r}")
    return queues


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("--trace", required=True, help="trace file (.swf, .csv, .jsonl; .gz)")
    parser.add_argument(
        "--trace-format",
        choices=("swf", "csv", "jsonl"),
        default=None,
        help="trace format (default: from the file name, else its first line)",
    )
    parser.add_argument(
        "--out", default="simulate-report", help="report directory (default: %(default)s)"
    )
    parser.add_argument(
        "--compare",
        action="append",
        type=_compare,
        default=[],
        metavar="KEY=V1,V2",
        help="replay once per value of a dotted config key (e.g. scaler.packing=count,cost, "
        "policy=toil,shoal); several flags give the cross product",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the simulated cloud's spot interruptions, for every variant "
        "(default: the config's provider.seed, else 0)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=_positive,
        default=None,
        metavar="N",
        help="replay up to N variants at once, in worker processes; the report is the same "
        "for any N (default: the number of cores)",
    )
    parser.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="count and report malformed trace lines instead of stopping at the first",
    )
    parser.add_argument(
        "--memory-per-core",
        type=_size,
        default=GiB,
        metavar="SIZE",
        help="SWF: memory per processor when the trace gives none (default: 1GiB)",
    )
    parser.add_argument(
        "--preemptible",
        action="store_true",
        help="SWF, and CSV/JSONL rows without the field: jobs may run on spot nodes",
    )
    parser.add_argument(
        "--cores-per-node",
        type=_positive,
        default=None,
        metavar="N",
        help="SWF: split each job into nodes of at most N cores (a multi-node job starts "
        "only on that many nodes of one type at once; default: the header's MaxProcs / "
        "MaxNodes, else no split)",
    )
    parser.add_argument(
        "--preemptible-queues",
        type=_queues,
        default=frozenset(),
        metavar="Q[,Q...]",
        help="SWF: jobs of these queues (field 15, e.g. a best-effort queue) may run on spot nodes",
    )
    _add_replay_arguments(parser)


def _add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--billing-interval",
        type=_duration,
        default=1.0,
        metavar="DURATION",
        help="each instance is billed for its lifetime rounded up to whole intervals: 1s is "
        "per-second billing (EC2 Linux), 1h bills whole hours (default: 1s)",
    )
    parser.add_argument(
        "--billing-minimum",
        type=_duration,
        default=60.0,
        metavar="DURATION",
        help="the least an instance is billed for (default: 60s, EC2's minimum)",
    )
    parser.add_argument(
        "--tail",
        type=_duration,
        default=30 * 86400.0,
        metavar="DURATION",
        help="stop at the latest this long after the last submit, even if jobs still wait "
        "(default: 30d)",
    )
    parser.add_argument(
        "--placement",
        choices=PLACEMENTS,
        default="first-fit",
        help="which node the simulated scheduler starts a 1-node job on: the first in node "
        "order (Slurm 26.05 and later), or Slurm's best fit through 25.11, the run of nodes "
        "and then the node with the fewest free cores (default: %(default)s)",
    )
    parser.add_argument(
        "--node-weights",
        choices=NODE_WEIGHTS,
        default="equal",
        help="Slurm's node Weight in the simulated scheduler: equal for every node, or by "
        "price as shoal slurm-conf writes it (on power_save's NodeName lines, with each "
        "dynamic node in external mode), so jobs fill the cheapest type's nodes first "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--no-skip",
        action="store_true",
        help="run every timer pass, also those proven to change nothing (slow; a check)",
    )


def replay_options(args: argparse.Namespace) -> ReplayOptions:
    """Raises ``ValueError`` for a billing interval of 0 (the engine's check)."""
    from shoal.daemon.simulate.engine import ReplayOptions  # the daemon: only when replaying

    return ReplayOptions(
        billing_interval=args.billing_interval,
        billing_minimum=args.billing_minimum,
        tail=args.tail,
        skip=not args.no_skip,
        seed=args.seed,
        placement=args.placement,
        node_weights=args.node_weights,
    )


def trace_options(args: argparse.Namespace) -> TraceOptions:
    return TraceOptions(
        skip_bad_lines=args.skip_bad_lines,
        memory_per_core=args.memory_per_core,
        preemptible=args.preemptible,
        cores_per_node=args.cores_per_node,
        preemptible_queues=args.preemptible_queues,
    )
