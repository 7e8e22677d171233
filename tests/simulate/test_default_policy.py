"""shoal's default scale-down, replayed: an idle node is let go within about what launching
another would cost (its boot and join time), not after ten minutes.

On per-second billing an idle node costs its price per second, and a new one costs its boot
and join time before it can take work: keeping an idle node longer than that loses (the
ski-rental rule). ``bench/policy.py`` measured it on the stand-in for a real log
(bench/README.md): 1 minute, the default, is within 0.6 % of the best it found.
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
