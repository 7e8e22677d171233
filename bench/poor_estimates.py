"""An SWF log with poor run-time estimates: a what-if for running jobs past their estimate.

    .venv/bin/python bench/poor_estimates.py IN.swf OUT.swf [--sigma 1.0] [--seed 1]

Logs without requested times (NASA iPSC: wall time = run time) and the bench/policy.py
stand-in (requests 1.2-3x the run time) have no job that runs past its estimate, so the
planner's rule for such jobs (``planner.running_remaining``) never acts on them. This
writes each job's requested time (SWF field 9) as its run time times e**N(0, sigma), at
least a minute, whole seconds: with sigma 1 half the jobs run past their estimate, a
quarter by more than 2x, as the estimates a workflow system guesses (Toil's) can be. All
else is copied as it is; comment lines too.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal spread (1.0)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    lines = []
    for line in args.source.read_text().splitlines():
        fields = line.split()
        if line.startswith(";") or len(fields) < 9 or float(fields[3]) < 0:
            lines.append(line)
            continue
        estimate = float(fields[3]) * math.exp(rng.gauss(0.0, args.sigma))
        fields[8] = str(max(60, round(estimate)))
        lines.append(" ".join(fields))
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
