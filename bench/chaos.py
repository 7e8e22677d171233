"""Deterministic simulation testing with fault injection: many seeds, each six simulated hours
of the daemon's own controller on the simulated cloud with a random mix of faults
(``tests/chaos/harness.py`` describes the run and its invariants, ``tests/chaos/faults.py`` the
faults).

    .venv/bin/python bench/chaos.py --seeds 300              # seeds 0..299, each mode, 2 processes
    .venv/bin/python bench/chaos.py --mode power_save --seed 17 --verbose   # replay one seed
    .venv/bin/python bench/chaos.py --seeds 300 --faults crash,lag   # only these kinds

Modes: ``push`` (shoal's planner, demand pushed as PUT /v1/demand would) and ``power_save``
(Slurm's power saving: the power saver, the clean-up loop and the hook spool driven by a
simulated slurmctld, ``tests/chaos/powersave.py``); ``both`` (the default) runs these two;
``ha`` runs push mode with two daemons on one elector, partitions and kills of a daemon
(``tests/chaos/ha.py``); ``all`` runs the three.

    .venv/bin/python bench/chaos.py --mode ha --seeds 100     # two daemons, one elector
    .venv/bin/python bench/chaos.py --mode push --packing cost --seeds 300   # plan by price

Prints each violating seed with its violations and the tail of its event log, then a summary:
violations per invariant, seeds per second, and the RunInstances calls the cloud answered
``IdempotentParameterMismatch`` (a client token sent again with other arguments: the
``argchange`` fault's bite). Exits 1 when any invariant was violated.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from chaos.harness import KINDS, MODES, mode_kinds, run_seed, run_seeds  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    ap.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    ap.add_argument("--seed", type=int, help="run this one seed only")
    ap.add_argument("--verbose", action="store_true", help="print every event of the run")
    ap.add_argument(
        "--faults",
        help="fault kinds allowed, comma-separated (default: all of the mode's: push "
        f"{','.join(mode_kinds('push'))}; power_save {','.join(mode_kinds('power_save'))}; "
        "ha push's and store)",
    )
    ap.add_argument(
        "--mode",
        default="both",
        choices=(*MODES, "both", "all"),
        help="which mode (default both: push and power_save; all: with ha)",
    )
    ap.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    ap.add_argument(
        "--packing",
        default="count",
        choices=("count", "cost"),
        help="the planner's scaler.packing (default count; cost: by price, the default for "
        "priced types; power_save launches by Slurm's requests, not by packing)",
    )
    ap.add_argument("--show", type=int, default=5, help="violating seeds printed in full")
    args = ap.parse_args(argv)
    kinds = None if args.faults is None else tuple(k for k in args.faults.split(",") if k)
    bad = sorted(set(kinds or ()) - set(KINDS))
    if bad:
        ap.error(f"unknown fault kinds {bad}; known: {', '.join(KINDS)}")
    modes = {"both": ("push", "power_save"), "all": MODES}.get(args.mode, (args.mode,))
    if args.seed is not None:
        failed = False
        for mode in modes:
            result = run_seed(
                args.seed, kinds, mode=mode, verbose=args.verbose, packing=args.packing
            )
            failed |= bool(result.violations)
            print(
                result.report()
                if result.violations
                else f"seed {args.seed} ({mode}): ok; {result.faults}; "
                f"{result.mismatches} IdempotentParameterMismatch"
            )
        return 1 if failed else 0
    total = 0
    for mode in modes:
        total += run_mode(mode, args, kinds)
    return 1 if total else 0


def run_mode(mode: str, args: argparse.Namespace, kinds: tuple[str, ...] | None) -> int:
    """Run the seeds in one mode and print its summary; the violations found."""
    start = time.perf_counter()
    by_invariant: collections.Counter[str] = collections.Counter()
    seeds_by_invariant: dict[str, list[int]] = collections.defaultdict(list)
    failing = 0
    mismatches = collections.Counter[int]()  # seed -> IdempotentParameterMismatch answers
    seeds = range(args.first, args.first + args.seeds)
    for result in run_seeds(seeds, kinds, mode=mode, workers=args.workers, packing=args.packing):
        if result.mismatches:
            mismatches[result.seed] = result.mismatches
        if not result.violations:
            continue
        failing += 1
        if failing <= args.show:
            print(result.report(tail=30 if not args.verbose else 10_000))
        for invariant in sorted({v.invariant for v in result.violations}):
            seeds_by_invariant[invariant].append(result.seed)
        for v in result.violations:
            by_invariant[v.invariant] += 1
    elapsed = time.perf_counter() - start
    total = sum(by_invariant.values())
    allowed = ",".join(kinds if kinds is not None else mode_kinds(mode))
    print(
        f"{mode} ({args.packing} packing): {args.seeds} seeds x 6 simulated hours, "
        f"faults {allowed}: {total} "
        f"violations in {failing} seeds; {elapsed:.1f} s, {args.seeds / elapsed:.2f} seeds/s "
        f"({args.workers} processes)"
    )
    print(
        f"  IdempotentParameterMismatch answers: {mismatches.total()} in {len(mismatches)} "
        f"seeds, e.g. {sorted(mismatches)[:8]}"
    )
    for invariant, count in by_invariant.most_common():
        some = seeds_by_invariant[invariant]
        print(f"  {invariant}: {count} in {len(some)} seeds, e.g. {some[:8]}")
    return total


if __name__ == "__main__":
    sys.exit(main())
