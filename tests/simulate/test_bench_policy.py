"""``bench/policy.py``: the clairvoyant bound by hand, and a run on a tiny trace that prints
every column of both policies, the bound and the audit (seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from shoal.daemon.simulate.engine import DAY
from shoal.daemon.simulate.trace import GiB, TraceBuilder
from shoal.scaler.model import NodeType, Policy
from shoal.scaler.planner import usable_shape
from shoal.scaler.shape import Shape

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.policy import COLUMNS, CONFIG, clairvoyant_bound, main, policy_variants, window  # noqa: E402


def _type(name: str, cores: int, memory_gib: int, price: float, bid: float | None = None):
    shape = Shape(3600, memory_gib * GiB, cores, 100 * GiB, bid is not None)
    return NodeType(name, (name,), shape, price_per_hour=price, bid=bid)


def test_bound_prices_each_job_at_its_cheapest_share() -> None:
    small = _type("c", 8, 16, 0.40)
    wide = _type("r", 8, 64, 0.80)
    spot = _type("s", 8, 64, 0.20, bid=0.3)
    policy = Policy(node_types=(small, wide, spot), node_memory_overhead=0, node_disk_overhead=0)
    room = {t.name: usable_shape(t, policy) for t in policy.node_types}
    assert room["c"].memory == 16 * GiB  # no overhead: shares are exact
    b = TraceBuilder("t", "csv")
    b.add(0, 7200, 7200, 2, 2 * GiB, 0, False)  # 2/8 of c for 2 h: 0.25 x 0.40 x 2 = 0.20
    b.add(10, 3600, 3600, 1, 32 * GiB, 0, False)  # only r: 32/64 x 0.80 = 0.40
    b.add(20, 3600, 3600, 4, 8 * GiB, 0, True, nodes=2)  # spot: 0.5 x 0.20 x 2 nodes = 0.20
    b.add(30, 3600, 3600, 4, 100 * GiB, 0, False)  # fits nothing
    b.add(40, 3600, 3600, 4, 8 * GiB, 0, False, nodes=11)  # 11 nodes: beyond c's max of 10
    b.add(50, 3600, 3600, 4, 8 * GiB, 0, False, nodes=10)  # 10 x 0.5 x 0.40 = 2.00
    bound, unfit = clairvoyant_bound(b.build(), policy)
    assert unfit == 2  # no policy starts the 11-node gang: it costs nothing in a replay
    assert bound == pytest.approx(0.20 + 0.40 + 0.20 + 2.00)


def test_policy_bench_prints_both_policies_and_the_bound(tmp_path: Path) -> None:
    script = str(ROOT / "bench" / "policy.py")
    argv = [sys.executable, script, "--jobs", "150", "--span", "2", "--days", "0.5", "-j", "1"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    header = next(line for line in out.splitlines() if line.startswith("variant"))
    for column in COLUMNS:
        assert column in header
    rows = {}
    for line in out.splitlines():
        for name in ("policy=toil", "policy=shoal", "clairvoyant bound"):
            if line.startswith(name + " "):
                rows[name] = line[len(name) :].split()
    assert set(rows) == {"policy=toil", "policy=shoal", "clairvoyant bound"}
    bound = float(rows["clairvoyant bound"][0].replace(",", ""))
    assert bound > 0
    for name in ("policy=toil", "policy=shoal"):
        cells = rows[name]
        assert len(cells) == len(COLUMNS) - 1
        cost = float(cells[0].replace(",", ""))
        assert cost >= bound  # no policy beats the clairvoyant bound
        assert float(cells[-2]) == pytest.approx(cost / bound, abs=0.01)  # printed in cents
        # the audit's hours add up to the replay's node-hours
        audit = out.split(f"{name}: ", 1)[1]
        total = next(line for line in audit.splitlines() if line.strip().startswith("all"))
        boot, idle, busy = (float(v.replace(",", "")) for v in total.split()[1:4])
        assert boot + idle + busy == pytest.approx(float(cells[1].replace(",", "")), abs=0.2)


def test_window_is_the_trace_cut_at_its_days_and_shifted() -> None:
    """``--from-day``: the jobs submitted in the window, as the awk cut of a busy window of a
    PWA log writes them (submit moved back, start epoch forward), shapes and gangs kept."""

    b = TraceBuilder("t", "swf")
    b.start_epoch = 1_000.0
    rows = [  # submit (days), run, cores, GiB, nodes
        (0.5, 600, 2, 4, 1),
        (2.99, 7200, 8, 8, 3),  # before the window, still running at its start: left out
        (3.0, 60, 4, 2, 1),
        (3.5, 900, 8, 8, 2),
        (4.2, 120, 1, 1, 1),
        (5.0, 30, 2, 4, 1),  # at the window's end: left out
    ]
    for day, run, cores, gib, nodes in rows:
        b.add(day * DAY, run, run, cores, gib * GiB, 0, False, nodes=nodes)
    trace = b.build()
    cut = window(trace, 3, 2)
    want = [row for row in rows if 3 <= row[0] < 5]
    assert [job.submit for job in cut] == pytest.approx([(r[0] - 3) * DAY for r in want])
    assert [(j.run_time, j.shape.cores, j.shape.memory, j.nodes) for j in cut] == [
        (r[1], r[2], r[3] * GiB, r[4]) for r in want
    ]
    assert cut.start_epoch == 1_000.0 + 3 * DAY
    assert not cut.submit.flags.writeable
    only_single = window(trace, 4, 2)  # no gang left: one node each, as the reader says it
    assert only_single.nodes is None and len(only_single) == 2
    assert [j.submit for j in window(trace, 0, 3.5)] == [r[0] * DAY for r in rows[:3]]


def test_vary_adds_shoal_rows_one_key_at_a_time() -> None:
    """``--vary``: each key's values on shoal's defaults alone (not a grid with the others)."""
    from shoal.daemon.config import load_config

    config = load_config(str(CONFIG))
    variants = policy_variants(config, [], ["scaler.unneeded_time=0s", "scaler.target_time=15m,1h"])
    assert [v.name for v in variants] == [
        "policy=toil",
        "policy=shoal",
        "policy=shoal, scaler.unneeded_time=0s",
        "policy=shoal, scaler.target_time=15m",
        "policy=shoal, scaler.target_time=1h",
    ]
    scaler = [v.config.scaler for v in variants[1:]]
    assert [(s.unneeded_time, s.target_time) for s in scaler] == [
        (60.0, 1800.0),
        (0.0, 1800.0),
        (60.0, 900.0),
        (60.0, 3600.0),
    ]
    grid = policy_variants(config, ["scaler.node_size_premium=0"], ["scaler.unneeded_time=0s"])
    assert [v.name for v in grid][1:] == [
        "policy=shoal, scaler.node_size_premium=0",
        "policy=shoal, scaler.node_size_premium=0, scaler.unneeded_time=0s",
    ]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--days", "nan"], "--days: 'nan' is not a finite number of days >= 0"),
        (["--from-day", "-1"], "--from-day: '-1' is not a finite number of days >= 0"),
        (["--from-day", "inf"], "--from-day: 'inf' is not a finite number of days >= 0"),
        (["--from-day", "5", "--days", "1"], "no job submitted in 1 days from day 5"),
        (["--vary", "scaler.no_such_key=1"], "scaler.no_such_key"),
        (["--vary", "no-equals-sign"], "expected KEY=V1,V2"),
        (["--span", "0"], "span must be above 0 days"),
        (["--jobs", "-5"], "--jobs: must be at least 1, not -5"),
        (["--cores-per-node", "0"], "--cores-per-node: must be at least 1, not 0"),
        (["--preemptible-queues", "x"], "'x' is not a comma-separated list of queue numbers"),
    ],
)
def test_bad_flags_are_refused_before_any_replay(tmp_path: Path, capsys, flags, says) -> None:
    """A window with no job, a day count that is not one, or a variant that does not
    validate stop at once with a usage error (exit 2), not a table of zeros or a traceback."""
    trace = tmp_path / "t.csv"
    trace.write_text("submit,cores,memory,run_time\n0,1,1GiB,60\n3600,2,2GiB,120\n")
    with pytest.raises(SystemExit) as stopped:
        main(["--trace", str(trace), "-j", "1", *flags])
    assert stopped.value.code == 2
    assert says in capsys.readouterr().err


def test_audit_walks_the_same_instances_as_every_instance_ever_launched() -> None:
    """``_AuditedEngine`` notes each launch's new instances as they come (not by slicing every
    instance ever launched at each step, which grew quadratically on a 90-day log) and walks
    them again only when the fleet or a node's jobs changed: its audit is the one an engine
    finds by walking every instance not ended at every step, on a replay
    with launches, scale-down and spot interruptions, for both policies. Its sums are added
    in three loops over lists made at the walk (speed4), not in one loop testing each
    instance (``OneLoop``, the code before): each sum gets the same additions in the same
    order, so the very same floats (adding ``n * dt`` per state instead fails this)."""
    import asyncio

    from shoal.daemon.config import load_config
    from shoal.daemon.simulate import engine
    from shoal.daemon.simulate.engine import ReplayOptions
    from shoal.daemon.simulate.synthetic import SyntheticSpec, generate

    from bench.policy import _AuditedEngine

    class WalkAll(_AuditedEngine):
        def _sample(self, t: float) -> None:
            self._live = {n: i for n, i in self.instances.items() if i.ended is None}
            self._walked = None  # every step
            super()._sample(t)

    class OneLoop(_AuditedEngine):
        def _sample(self, t: float) -> None:
            dt = t - self._since
            for name, key, used in self._each if dt > 0 else ():
                self.audit.seconds[key] += dt
                if key[2] == "busy":
                    self._busy[name] += dt
                    if used < 0.5:
                        self.audit.thin[key[:2]] += dt
            self._since = t
            key = (self.cluster.version, len(self.instances), self.live)
            if key != self._walked:
                self._walked, self._each = key, self._one_by_one()
            engine._Engine._sample(self, t)

        def _one_by_one(self) -> list[tuple[str, tuple[str, bool, str], float]]:
            nodes, each = self.cluster._nodes, []
            for name, inst in self._live.items():
                node = nodes.get(name) if inst.joined else None
                busy = inst.ended is None and node is not None and bool(node.jobs)
                kind = "busy" if busy else "idle" if inst.joined else "boot"
                u = node.usable if busy else None
                used = (
                    max(1 - node.cores / u.cores, 1 - node.memory / max(u.memory, 1.0)) if u else 0
                )
                if inst.ended is None:
                    each.append((name, (inst.instance_type, inst.preemptible, kind), used))
            return each

    spec = SyntheticSpec(jobs=120, days=1, seed=5, memory="per-job", preemptible_share=0.4)
    trace = generate(spec)
    for variant in policy_variants(load_config(str(CONFIG)), []):
        audits = []
        for cls in (_AuditedEngine, WalkAll, OneLoop):
            audited = cls(trace, variant.config, ReplayOptions(seed=3), variant.name, (), None)
            with engine._quiet_logs(50):
                done = asyncio.run(audited.run())
            audit = audited.audit
            audits.append(
                (list(audit.seconds.items()), list(audit.thin.items()), audit.lifetimes, audit.busy)
            )
        seconds, thin, lifetimes, busy = audits[0]
        assert audits[0] == audits[1] == audits[2]  # the same floats, in the same key order
        assert len(lifetimes) == done.result.launches > 10
        assert sum(busy) > 0 and any(k[1] for k, _ in seconds)  # jobs ran; spot nodes lived
        assert thin  # some busy node was less than half in use
        assert done.result.interruptions > 0
