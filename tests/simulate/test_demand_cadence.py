"""The replay observes demand the way the configured source does (issue 19): a pushed source
at each change, a Slurm source (``demand.slurm``) only at its ``slurm.poll_interval`` reads.

Numbers by hand, as in ``test_engine.py``: c5.xlarge (4 cores), 60 s boot + 30 s join,
30 s interval, no debounce, unneeded after 300 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from shoal.daemon.config import ShoalConfig
from shoal.daemon.config.slurm import SlurmConfig
from shoal.daemon.simulate.engine import Replay, ReplayOptions, SimulateError, replay
from shoal.daemon.simulate.report import Report, report_json
from shoal.daemon.simulate.synthetic import SyntheticSpec, generate
from shoal.daemon.simulate.trace import Trace
from test_engine import config as pushed_config
from test_engine import trace


def config(slurm: dict[str, Any] | None = None, **scaler: Any) -> ShoalConfig:
    """``test_engine``'s config; ``slurm``: with this slurm section as its demand source
    (``demand.slurm: true``), None: pushed demand."""
    cfg = pushed_config(**scaler)
    if slurm is None:
        return cfg
    demand = cfg.demand.model_copy(update={"slurm": True})
    return cfg.model_copy(update={"demand": demand, "slurm": SlurmConfig(**slurm)})


def burst(submit: float) -> Trace:
    """Four one-core jobs at ``submit`` that ask for 2 h and run 600 s."""
    return trace(*[(submit, 600, 7200, 1, 1)] * 4)


def report(r: Replay) -> str:
    return report_json(Report("t", "csv", r.result.jobs, "c", 0, (r.result,)))


def test_pushed_source_sees_the_submit_at_once() -> None:
    """t=3 submit, pass, launch; t=93 the node joins, the jobs start (wait 90); t=693 they
    end; drained 300 s later (993), terminated at the next timer pass (1023)."""
    r = replay(burst(3), config())
    assert r.result.waits.tolist() == [90.0] * 4
    assert r.result.node_hours == pytest.approx(1020 / 3600)


def test_slurm_source_sees_the_submit_at_its_next_poll() -> None:
    """Reads at 0, 10, 20...: the t=3 submit is read at 10, the pass launches then; the node
    joins at 100 (wait 97); the jobs end at 700, read at once (a poll time), drained at 1000,
    terminated at 1030: 1020 s of node time, as pushed, 7 s later."""
    r = replay(burst(3), config({"mode": "external", "poll_interval": "10s"}))
    assert r.result.waits.tolist() == [97.0] * 4
    assert r.result.node_hours == pytest.approx(1020 / 3600)
    assert r.result.launches == r.result.terminations == 1


def test_a_change_on_a_poll_is_read_at_once_and_no_slurm_command_runs(tmp_path: Path) -> None:
    """A submit at a read (t=20) is seen then. The replay's scheduler stands in for slurmctld:
    draining the node at the end runs no scontrol (the daemon's external-mode drain hook)."""
    ran = tmp_path / "ran"
    command = tmp_path / "scontrol"
    command.write_text(f'#!/bin/sh\necho "$@" >> {ran}\n')
    command.chmod(0o755)
    cfg = config({"mode": "external", "poll_interval": "10s", "scontrol": str(command)})
    r = replay(burst(20), cfg)
    assert r.result.waits.tolist() == [90.0] * 4
    assert r.result.terminations == 1
    assert not ran.exists()


def test_changes_between_two_polls_make_one_pass() -> None:
    """Submits at 1, 2, ... 9 s: a pushed source wakes a pass for each; a Slurm source
    polling every 10 s hands them over at once at t=10, one pass launching for all."""
    tr = trace(*[(float(s), 600, 7200, 4, 1) for s in range(1, 10)])
    pushed = replay(tr, config())
    polled = replay(tr, config({"mode": "external", "poll_interval": "10s"}))
    assert polled.stats.passes < pushed.stats.passes
    # every job waits for the read at 10 plus the 90 s boot and join
    assert polled.result.waits.tolist() == [100.0 - s for s in range(1, 10)]
    assert polled.result.launches == 9


@pytest.mark.parametrize("poll", ["10s", "45s"])
def test_skipping_changes_nothing_with_a_slurm_source(poll: str) -> None:
    """Timer passes skipped as a fixed point give the same report as every pass run, with
    reads on their own grid (45 s: off the 30 s timer grid), spot interruptions included."""
    tr = generate(SyntheticSpec(jobs=40, days=0.5, seed=5, mean_burst=8, preemptible_share=0.5))
    cfg = config(
        {"mode": "external", "poll_interval": poll},
        beta_inertia=0.1,
        debounce="200ms",
        provider={"spot_interruption_rate": 0.5},
        node_types=[{"type": "c5.2xlarge:0.20", "max": 6}, {"type": "c5.2xlarge", "max": 6}],
    )
    fast = replay(tr, cfg, ReplayOptions(skip=True, seed=2))
    slow = replay(tr, cfg, ReplayOptions(skip=False, seed=2))
    assert report(fast) == report(slow)
    assert fast.stats.passes + fast.stats.passes_skipped == slow.stats.passes
    assert fast.stats.passes < slow.stats.passes
    assert fast.result.jobs_never_started == 0


def test_power_save_cannot_be_replayed() -> None:
    cfg = config({"mode": "power_save"})
    with pytest.raises(SimulateError, match="external"):
        replay(burst(3), cfg)
