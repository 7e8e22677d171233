"""``bench/simulate.py --breakdown`` counts the limit search's packings: its probes are asked
from a lambda inside ``planner._serve``; before, it looked for ``_serve``'s own frame and
counted none."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from shoal.daemon.config import load_config
from shoal.daemon.simulate.synthetic import SyntheticSpec, generate

BENCH = Path(__file__).resolve().parents[2] / "bench" / "simulate.py"


def test_breakdown_counts_the_limit_search(capsys) -> None:
    spec = importlib.util.spec_from_file_location("bench_simulate", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # a busy day: queues over the types' max, so the planner searches under the max
    trace = generate(SyntheticSpec(jobs=1500, days=1, seed=11))
    bench.breakdown(trace, 0.5, load_config(bench.CONFIG))
    out = capsys.readouterr().out
    found = re.search(r"packings for a limit search: ([\d,]+)", out)
    assert found is not None, out
    assert int(found.group(1).replace(",", "")) > 0, out
