"""``shoal simulate`` around the replay: trace parsing and report generation, with peers.

    .venv/bin/python bench/simulate_io.py [--lines 1000000]

1. Writes a synthetic SWF of ``--lines`` jobs, then times ``read_trace`` on it against a
   peer in the same run: a bare loop that only splits each line and converts its 18
   fields to floats (no checks, no defaults, no job list). Each runs in a fresh
   interpreter, so its peak RSS is its own. Prints both and the ratio.
2. Replays a 50,000-job, 90-day synthetic trace on fixed fleets through the in-simulation
   scheduler (three variants, series sampled at every event), then times each report
   writer. The peer is matplotlib saving one empty figure, to scale the plot times.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "simulate"))

from fleet import fixed_fleet  # noqa: E402  (shared with tests/simulate)
from matplotlib.figure import Figure  # noqa: E402
from shoal.daemon.simulate import plots  # noqa: E402
from shoal.daemon.simulate.report import (  # noqa: E402
    Report,
    VariantResult,
    format_table,
    write_csv,
    write_html,
    write_json,
)
from shoal.daemon.simulate.synthetic import SyntheticSpec, generate, write_swf  # noqa: E402
from shoal.daemon.simulate.trace import Trace  # noqa: E402
from shoal.scaler.shape import Shape  # noqa: E402

GiB = 1024**3


PARSE_SCRIPT = """
import re, sys, time
sys.path.insert(0, sys.argv[1])
from shoal.daemon.simulate.trace import read_trace

def bare(path):
    jobs = 0
    with open(path) as stream:
        for line in stream:
            text = line.strip()
            if not text or text[0] == ";":
                continue
            list(map(float, text.split()))
            jobs += 1
    return jobs

started = time.perf_counter()
jobs = len(read_trace(sys.argv[3])) if sys.argv[2] == "read_trace" else bare(sys.argv[3])
seconds = time.perf_counter() - started
assert jobs == int(sys.argv[4]), jobs
# VmHWM: this interpreter's own peak (ru_maxrss would carry the parent's over the fork).
status = open("/proc/self/status").read()
print(seconds, int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) // 1024)
"""


def in_fresh_process(which: str, path: Path, lines: int) -> tuple[float, int]:
    """(seconds, peak RSS MB) of parsing ``path`` in a new interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(ROOT), which, str(path), str(lines)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, rss = done.stdout.split()
    return float(seconds), int(rss)


def timed(fn, *args):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def fleet(trace: Trace, nodes: int, price: float) -> VariantResult:
    usable = Shape(3600, 63 * GiB, 16, 96 * GiB, False)
    return fixed_fleet(trace, nodes, price, f"fleet={nodes}", usable)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        swf = out / "big.swf"
        trace, seconds = timed(generate, SyntheticSpec(jobs=args.lines, days=365, seed=1))
        _, write_seconds = timed(write_swf, trace, swf)
        print(
            f"synthetic: {args.lines:,} jobs generated in {seconds:.1f} s, "
            f"written as SWF in {write_seconds:.1f} s ({swf.stat().st_size / 1e6:.0f} MB)"
        )
        del trace
        parse_seconds, parse_rss = in_fresh_process("read_trace", swf, args.lines)
        peer_seconds, peer_rss = in_fresh_process("bare", swf, args.lines)
        print(
            f"parse {args.lines:,} SWF lines: read_trace {parse_seconds:.2f} s "
            f"({args.lines / parse_seconds:,.0f} lines/s, peak RSS {parse_rss} MB) | "
            f"bare split+float loop {peer_seconds:.2f} s (peak RSS {peer_rss} MB) | "
            f"ratio {parse_seconds / peer_seconds:.2f}x"
        )

        trace = generate(SyntheticSpec(jobs=50_000, days=90, seed=1))
        variants, replay_seconds = timed(lambda: tuple(fleet(trace, n, 0.768) for n in (3, 5, 8)))
        samples = sum(len(v.series) for v in variants)
        print(
            f"fixed-fleet replays (scheduler only, 3 x 50,000 jobs, 90 days): "
            f"{replay_seconds:.2f} s, {samples:,} series samples"
        )
        report = Report("synthetic-50k.swf", "swf", len(trace), "bench", 1, variants)
        _, peer = timed(lambda: Figure(figsize=(9, 5)).savefig(out / "empty.png"))
        rows = [
            ("report.json", lambda: write_json(report, out / "report.json")),
            ("report.csv", lambda: write_csv(report, out / "report.csv")),
            ("table", lambda: format_table(report, tty=True)),
            ("nodes.png", lambda: plots.plot_nodes(report, out / "nodes.png")),
            ("wait_cdf.png", lambda: plots.plot_wait_cdf(report, out / "wait_cdf.png")),
            ("cost.png", lambda: plots.plot_cost(report, out / "cost.png")),
            (
                "index.html",
                lambda: write_html(
                    report, out / "index.html", ["nodes.png", "wait_cdf.png", "cost.png"]
                ),
            ),
        ]
        total = 0.0
        parts = []
        for name, fn in rows:
            _, seconds = timed(fn)
            total += seconds
            parts.append(f"{name} {seconds * 1000:.0f} ms")
        print(f"report for 3 variants: {total:.2f} s ({', '.join(parts)})")
        print(f"peer: one empty matplotlib figure saved in {peer * 1000:.0f} ms")


if __name__ == "__main__":
    main()
