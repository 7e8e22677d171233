"""shoal's default scale-down, replayed: an idle node is let go within about what launching
another would cost (its boot and join time), not after ten minutes.

On per-second billing an idle node costs its price per second, and a new one costs its boot
and join time before it can take work: keeping an idle node longer than that loses (the
ski-rental rule). ``bench/policy.py`` measured it on the stand-in for a real log
(bench/README.md): 1 minute, the default, is within 0.6 % of the best it found.

The default target time (30 minutes) and node-size premium (0.04 a core) were chosen
together on two stand-in traces (bench/README.md, policy.py): each is checked here by the
plan it changes against the old value.
"""

from __future__ import annotations

import configs
from shoal.daemon.config import parse_config
from shoal.daemon.simulate.engine import ReplayOptions, replay
from shoal.daemon.simulate.trace import GiB, TraceBuilder

BOOT, JOIN = 60, 30  # the simulated cloud's delays below
C5 = 0.17  # $/h, c5.xlarge on demand


def _two_bursts(gap: float):
    """Four 1-core, 10-minute jobs (one 4-core c5.xlarge), then four more ``gap`` s after
    the first four end."""
    b = TraceBuilder("test", "csv")
    for submit in (0.0, BOOT + JOIN + 600 + gap):
        for _ in range(4):
            b.add(submit, 600, 1800, 1, GiB, 0, False)
    return b.build()


def test_default_lets_an_idle_node_go_within_its_boot_time() -> None:
    data = configs.config(
        cluster_name="sim",
        provider={"zone": "sim-1a", "boot_delay": f"{BOOT}s", "join_delay": f"{JOIN}s"},
        node_types=[{"type": "c5.xlarge", "max": 4}],
        demand={"api": False},
    )
    default = parse_config(data)  # no scaler section: every knob at its default
    tr = _two_bursts(gap=20 * 60)  # longer than the old default's 10 minutes
    now = replay(tr, default, ReplayOptions()).result
    data["scaler"] = {"unneeded_time": "10m"}
    before = replay(tr, parse_config(data), ReplayOptions()).result
    assert now.wait.max == before.wait.max  # the same waits: each burst boots its node
    # each burst: boot + join + 600 s of work + idle up to unneeded_time + a timer pass
    idle_most = default.scaler.unneeded_time + default.scaler.interval
    assert now.node_hours * 3600 <= 2 * (BOOT + JOIN + 600 + idle_most) + 1
    assert now.cost < before.cost
    saved = 2 * (600 - idle_most) / 3600 * C5
    assert before.cost - now.cost >= saved - 1e-9


def _burst(count: int, cores: float, run_minutes: float):
    """``count`` jobs of ``cores`` cores and 1 GiB, submitted at 0, each running (and
    requesting) ``run_minutes``."""
    b = TraceBuilder("test", "csv")
    for _ in range(count):
        b.add(0.0, run_minutes * 60, run_minutes * 60, cores, GiB, 0, False)
    return b.build()


def _menu(*types: str) -> dict:
    return configs.config(
        cluster_name="sim",
        provider={"zone": "sim-1a", "boot_delay": f"{BOOT}s", "join_delay": f"{JOIN}s"},
        node_types=[{"type": t, "max": 8} for t in types],
        demand={"api": False},
    )


def test_default_starts_queued_jobs_within_half_an_hour() -> None:
    """The default target time is 30 minutes (Toil's): eight 1-core 40-minute jobs get two
    4-core nodes at once, where a 1-hour target queues four of them behind the others on
    one node (bench/README.md, policy.py: the p95 wait fell on both stand-in traces)."""
    data = _menu("c5.xlarge")
    tr = _burst(8, 1, 40)
    now = replay(tr, parse_config(data), ReplayOptions()).result
    data["scaler"] = {"target_time": "1h"}
    before = replay(tr, parse_config(data), ReplayOptions()).result
    assert now.launches == 2 and before.launches == 1
    assert now.wait.max < 30 * 60 < before.wait.max


def test_default_prices_a_large_node_for_its_last_job() -> None:
    """The default node-size premium (0.04 a core) makes cost packing buy small nodes where
    one large node is cheaper by the prices alone: five 3-core 40-minute jobs are five
    c5.xlarge ($0.85/h by the prices, each job its own node) rather than one c5.4xlarge
    ($0.68/h) that the longest of them would hold alone once the others end."""
    data = _menu("c5.xlarge", "c5.4xlarge")
    tr = _burst(5, 3, 40)
    now = replay(tr, parse_config(data), ReplayOptions()).result
    data["scaler"] = {"node_size_premium": 0}
    prices_alone = replay(tr, parse_config(data), ReplayOptions()).result
    assert {line.node_type for line in now.by_type} == {"c5.xlarge"}
    assert now.launches == 5
    assert {line.node_type for line in prices_alone.by_type} == {"c5.4xlarge"}
    assert prices_alone.launches == 1
