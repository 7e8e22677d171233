"""The synthetic trace generator: deterministic, bursty and quiet phases, long tail, formats."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.daemon.simulate.synthetic import SyntheticSpec, generate, main, write_csv, write_swf
from shoal.daemon.simulate.trace import GiB, Trace, TraceOptions, read_trace

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "small.swf"


def rows(trace: Trace) -> list[tuple[float, float, float, object]]:
    return [(j.submit, j.run_time, j.wall_time, j.shape) for j in trace]


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    spec = SyntheticSpec(jobs=500, days=2, seed=11, preemptible_share=0.3)
    assert rows(generate(spec)) == rows(generate(spec))
    other = SyntheticSpec(jobs=500, days=2, seed=12, preemptible_share=0.3)
    assert rows(generate(other)) != rows(generate(spec))


@settings(max_examples=30, deadline=None)
@given(
    jobs=st.integers(min_value=0, max_value=400),
    days=st.floats(min_value=0.1, max_value=10),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_exact_count_sorted_and_within_the_horizon(jobs: int, days: float, seed: int) -> None:
    trace = generate(SyntheticSpec(jobs=jobs, days=days, seed=seed))
    assert len(trace) == jobs
    submit = trace.submit
    assert bool(np.all(submit[1:] >= submit[:-1]))
    assert bool(np.all((submit >= 0) & (submit < days * 86400)))
    assert bool(np.all(trace.run_time >= 1))
    assert bool(np.all(trace.wall_time >= trace.run_time))
    assert bool(np.all(trace.wall_time % 900 == 0))


def test_bursty_and_quiet_phases_long_tail_mixed_shapes() -> None:
    trace = generate(SyntheticSpec(jobs=20_000, days=30, seed=3))
    per_minute = np.bincount((trace.submit // 60).astype(int))
    # Bursts: many jobs within one minute (a steady phase at this rate has ~1 a minute).
    assert per_minute.max() >= 20
    # Quiet phases: whole hours with no job at all, after a busy hour.
    per_hour = np.bincount((trace.submit // 3600).astype(int), minlength=30 * 24)
    empty = np.flatnonzero(per_hour == 0)
    assert len(empty) >= 24
    assert empty[0] > 0 and per_hour[empty[0] - 1] > 0
    # Long tail: the longest runs are far above the median.
    median = float(np.median(trace.run_time))
    assert float(np.percentile(trace.run_time, 99.9)) > 20 * median
    # Mixed shapes: every entry of the default mix occurs.
    assert len({(s.cores, s.memory) for s in trace.shapes}) == len(SyntheticSpec().shapes)


def test_swf_round_trip(tmp_path: Path) -> None:
    trace = generate(SyntheticSpec(jobs=400, days=2, seed=5))
    path = tmp_path / "t.swf"
    write_swf(trace, path, note="round trip")
    back = read_trace(path)
    assert rows(back) == rows(trace)
    assert back.start_epoch == trace.start_epoch
    assert back.header["MaxJobs"] == 400
    assert back.header["Note"] == "round trip"
    assert back.header["MaxProcs"] == max(s.cores for s in trace.shapes)


def test_csv_round_trip_keeps_preemptible(tmp_path: Path) -> None:
    trace = generate(SyntheticSpec(jobs=300, days=1, seed=9, preemptible_share=0.5))
    assert {s.preemptible for s in trace.shapes} == {True, False}
    path = tmp_path / "t.csv"
    write_csv(trace, path)
    assert rows(read_trace(path)) == rows(trace)


def test_swf_loses_preemptible_and_the_reader_option_sets_it_for_all(tmp_path: Path) -> None:
    trace = generate(SyntheticSpec(jobs=50, days=1, seed=9, preemptible_share=1.0))
    out = io.StringIO()
    write_swf(trace, out)
    text = out.getvalue()
    assert text.startswith("; Version: 2.2\n")
    assert all(len(line.split()) == 18 for line in text.splitlines() if line[0] != ";")
    path = tmp_path / "t.swf"
    path.write_text(text)
    assert {s.preemptible for s in read_trace(path).shapes} == {False}
    again = read_trace(path, TraceOptions(preemptible=True))
    assert rows(again) == rows(trace)


def test_bundled_example_is_the_generator_output(tmp_path: Path) -> None:
    """examples/small.swf is what the documented command writes, byte for byte."""
    out = tmp_path / "small.swf"
    assert main(["--jobs", "300", "--days", "3", "--seed", "7", "-o", str(out)]) == 0
    assert out.read_bytes() == EXAMPLE.read_bytes()
    trace = read_trace(EXAMPLE, TraceOptions())
    assert len(trace) == 300
    assert 2 * 86400 < float(trace.submit[-1]) < 3 * 86400


def test_main_writes_csv_by_extension(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    assert main(["--jobs", "20", "--days", "1", "-o", str(out)]) == 0
    assert out.read_text().startswith("submit,cores,memory,disk,wall_time,run_time,preemptible\n")
    assert len(read_trace(out)) == 20


BAD_SPECS = [
    pytest.param({"jobs": -1}, "jobs", id="jobs"),
    pytest.param({"days": 0}, "days", id="days"),
    pytest.param({"mean_burst": 0.5}, "mean_burst", id="burst"),
    pytest.param({"tail_share": 2}, "tail_share", id="tail"),
    pytest.param({"shapes": ((0, 1, 1),)}, "shapes", id="shapes"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_SPECS)
def test_spec_rejects_bad_values(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SyntheticSpec(**kwargs)  # type: ignore[arg-type]


def test_main_reports_a_bad_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--jobs", "-3"]) == 2
    assert "jobs is -3" in capsys.readouterr().err


def test_per_job_memory_gives_every_job_its_own_size_and_gangs_survive_swf(
    tmp_path: Path,
) -> None:
    """The stand-in for a real log: nearly every job its own memory, gangs split as SWF's."""
    spec = SyntheticSpec(jobs=2000, days=4, seed=11, memory="per-job", gang_share=0.05)
    trace = generate(spec)
    assert len(trace.shapes) > 0.95 * len(trace)  # (wall time is in the shape key too)
    assert len({s.memory for s in trace.shapes}) > 0.9 * len(trace)
    assert {s.cores for s in trace.shapes} <= set(range(1, 17))
    assert trace.nodes is not None
    gangs = [j for j in trace if j.nodes > 1]
    assert 0.01 * len(trace) < len(gangs) < 0.2 * len(trace)
    for j in gangs:
        assert 2 <= j.nodes <= 8 and j.shape.cores <= 16
    # every job fits a 4-core 32 GiB or a 16-core 64 GiB node (after ~6 GiB of overhead)
    for s in trace.shapes:
        assert s.memory <= (28 * GiB if s.cores <= 4 else 56 * GiB)
    path = tmp_path / "t.swf"
    write_swf(trace, path, cores_per_node=spec.cores_per_node)
    back = read_trace(path)
    assert rows(back) == rows(trace)
    assert back.nodes is not None and back.nodes.tolist() == trace.nodes.tolist()
    with pytest.raises(ValueError, match="cores_per_node"):
        write_swf(trace, tmp_path / "u.swf")
    csv_path = tmp_path / "t.csv"
    write_csv(trace, csv_path)
    again = read_trace(csv_path)
    assert rows(again) == rows(trace) and again.nodes.tolist() == trace.nodes.tolist()


def test_per_job_memory_leaves_the_default_mix_as_it_was() -> None:
    base = generate(SyntheticSpec(jobs=500, days=2, seed=11))
    same = generate(SyntheticSpec(jobs=500, days=2, seed=11, memory="mix", gang_share=0.5))
    assert rows(base) == rows(same)
