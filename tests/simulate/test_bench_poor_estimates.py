"""``bench/poor_estimates.py``: an SWF log whose requested times are poor estimates, read back
through the SWF reader as a replay reads it."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from shoal.daemon.simulate.trace import TraceOptions, read_trace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.poor_estimates import main  # noqa: E402


def test_estimates_scatter_around_the_run_times_and_all_else_is_kept(tmp_path: Path) -> None:
    # 400 one-processor jobs without requested times (as the NASA log): wall time = run time
    rows = [
        f"{i + 1} {10 * i} -1 {600 + 7 * i} 1 -1 -1 -1 -1 -1 1 1 1 -1 -1 -1 -1 -1"
        for i in range(400)
    ]
    source = tmp_path / "log.swf"
    source.write_text("; Version: 2.2\n; MaxProcs: 1\n;\n" + "\n".join(rows) + "\n")
    out = tmp_path / "poor.swf"
    main([str(source), str(out), "--seed", "3"])
    before = read_trace(source, TraceOptions())
    after = read_trace(out, TraceOptions())
    assert out.read_text().startswith("; Version: 2.2\n; MaxProcs: 1\n;\n")
    assert list(after.submit) == list(before.submit)
    assert list(after.run_time) == list(before.run_time)
    assert list(before.wall_time) == list(before.run_time)
    ratios = [w / r for w, r in zip(after.wall_time, after.run_time, strict=True)]
    over = sum(ratio < 1 for ratio in ratios)
    assert 160 <= over <= 240  # about half run past their estimate (sigma 1)
    geometric_mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    assert 0.7 < geometric_mean < 1.4  # unbiased in log
    assert all(w >= 60 and w == int(w) for w in after.wall_time)
    main([str(source), str(tmp_path / "again.swf"), "--seed", "3"])
    assert (tmp_path / "again.swf").read_text() == out.read_text()  # seeded
