"""Results and report files: waits, series, report.json determinism, CSV, table, PNG, HTML."""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image
from shoal.daemon.simulate.progress import ReplayProgress
from shoal.daemon.simulate.report import (
    TABLE_COLUMNS,
    Report,
    Series,
    SeriesRecorder,
    VariantResult,
    WaitStats,
    format_table,
    report_json,
    write_report,
)
from shoal.daemon.simulate.synthetic import SyntheticSpec, generate
from shoal.daemon.simulate.trace import Trace, read_trace
from shoal.scaler.shape import Shape
from simulate import fleet

ROOT = Path(__file__).resolve().parents[2]
GiB = 1024**3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fixed_fleet(trace: Trace, nodes: int, price: float, name: str) -> VariantResult:
    return fleet.fixed_fleet(trace, nodes, price, name, Shape(3600, 31 * GiB, 16, 100 * GiB, False))


def build_report(trace_path: Path = ROOT / "examples" / "small.swf") -> Report:
    trace = read_trace(trace_path)
    return Report(
        trace=str(trace_path.relative_to(ROOT))
        if trace_path.is_relative_to(ROOT)
        else str(trace_path),
        trace_format=trace.format,
        jobs=len(trace),
        config="config.example.yaml",
        seed=1,
        variants=(
            fixed_fleet(trace, 2, 0.768, "fleet=2"),
            fixed_fleet(trace, 6, 0.768, "fleet=6"),
        ),
        start_epoch=trace.start_epoch,
        defaults_used=tuple(str(d) for d in trace.defaults),
    )


# --- the model -----------------------------------------------------------------------------

WAITS = [
    pytest.param([], WaitStats(0, 0, 0, 0, 0, 0), id="none"),
    pytest.param([0, 100, 150], WaitStats(3, 250 / 3, 100, 150, 150, 150), id="three"),
    pytest.param(list(range(1, 101)), WaitStats(100, 50.5, 50, 95, 99, 100), id="hundred"),
]


@pytest.mark.parametrize(("waits", "expected"), WAITS)
def test_wait_stats_nearest_rank(waits: list[float], expected: WaitStats) -> None:
    assert WaitStats.of(waits) == pytest.approx(expected)


def test_series_recorder_keeps_the_last_sample_of_an_instant() -> None:
    r = SeriesRecorder()
    r.sample(0, 0, 0, 5, 0, 0.0)
    r.sample(10, 1, 1, 5, 0, 0.0)
    r.sample(10, 2, 1, 3, 2, 0.0)
    r.sample(20, 2, 0, 0, 5, 1.5)
    s = r.build()
    assert s.t.tolist() == [0, 10, 20]
    assert s.nodes.tolist() == [0, 2, 2]
    assert s.queued.tolist() == [5, 3, 0]
    assert s.cost.tolist() == [0, 0, 1.5]
    with pytest.raises(ValueError, match="before the last"):
        r.sample(5, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="read-only"):
        s.nodes[0] = 9


def test_series_resample_reads_the_step_function() -> None:
    r = SeriesRecorder()
    for t, n in [(0, 1), (1, 2), (2, 3), (7, 4), (10, 5)]:
        r.sample(t, n, 0, 0, 0, 0.0)
    s = r.build().resample(3)
    assert s.t.tolist() == [0, 5, 10]
    assert s.nodes.tolist() == [1, 3, 5]  # at t=5 the value set at t=2 still holds
    assert r.build().resample(10).t.tolist() == [0, 1, 2, 7, 10]


# --- files ---------------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"] or "")
        if tag == "a":
            self.links.append(a["href"] or "")

    def handle_data(self, data: str) -> None:
        self.cells.append(data)


def test_report_files_exist_pngs_are_valid_and_html_references_them(tmp_path: Path) -> None:
    files = write_report(build_report(), tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "cost.png",
        "index.html",
        "nodes.png",
        "report.csv",
        "report.json",
        "wait_cdf.png",
    ]
    for png in files.plots:
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        pixels = image.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert float(pixels[..., :3].std()) > 0.01  # something is drawn, not a blank canvas
    page = _Links()
    page.feed(files.html.read_text())
    assert page.images == ["nodes.png", "wait_cdf.png", "cost.png"]
    assert {"report.json", "report.csv"} <= set(page.links)
    assert "fleet=2" in page.cells and "fleet=6" in page.cells
    for src in [*page.images, "report.json", "report.csv"]:
        assert (files.html.parent / src).is_file()


def test_report_json_is_byte_identical_across_runs(tmp_path: Path) -> None:
    first = write_report(build_report(), tmp_path / "a").json.read_bytes()
    second = write_report(build_report(), tmp_path / "b").json.read_bytes()
    assert first == second
    data = json.loads(first)
    assert list(data) == sorted(data)
    assert [v["name"] for v in data["variants"]] == ["fleet=2", "fleet=6"]
    six = data["variants"][1]
    assert six["jobs"]["total"] == 300
    assert six["wait_seconds"]["max"] <= data["variants"][0]["wait_seconds"]["max"]
    assert len(six["series"]["t"]) <= 1000
    assert data["trace"]["defaults_used"][0].startswith("disk: 0 B")


def test_report_json_rounds_floats_and_drops_non_finite() -> None:
    base = build_report()
    v = base.variants[0]
    odd = VariantResult(
        **{
            **{f: getattr(v, f) for f in v.__dataclass_fields__},
            "cost": 1 / 3,
            "utilisation": float("nan"),
            "node_hours": -0.0,
        }
    )
    text = report_json(Report(**{**base.__dict__, "variants": (odd,)}))
    data = json.loads(text)["variants"][0]
    assert data["cost"]["total"] == 0.333333
    assert data["utilisation"] is None
    assert data["cost"]["node_hours"] == 0
    assert '"total": 0.333333' in text


def test_more_servers_cost_more_and_wait_less() -> None:
    two, six = build_report().variants
    assert six.cost == pytest.approx(3 * two.cost * six.simulated_seconds / two.simulated_seconds)
    assert six.wait.max < two.wait.max
    assert six.wait.mean < two.wait.mean
    assert six.utilisation < two.utilisation
    assert two.jobs_completed == six.jobs_completed == 300


def test_report_csv_one_row_per_variant(tmp_path: Path) -> None:
    report = build_report()
    files = write_report(report, tmp_path)
    rows = list(csv.DictReader(io.StringIO(files.csv.read_text())))
    assert [r["variant"] for r in rows] == ["fleet=2", "fleet=6"]
    for row, v in zip(rows, report.variants, strict=True):
        assert float(row["cost_usd"]) == pytest.approx(v.cost, abs=1e-6)
        assert float(row["wait_p95_s"]) == pytest.approx(v.wait.p95)
        assert int(row["jobs_completed"]) == v.jobs_completed
        assert float(row["cost_usd[m5.4xlarge on-demand]"]) == pytest.approx(v.cost, abs=1e-6)


def test_plain_table_for_a_pipe_rich_for_a_terminal() -> None:
    report = build_report()
    plain = format_table(report, tty=False)
    lines = plain.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["variant", "cost", "$"]
    assert lines[1].startswith("fleet=2 ")
    assert "\x1b[" not in plain
    assert all(len(line) <= len(lines[0]) for line in lines)
    rich = format_table(report, tty=True, width=200)
    assert "\x1b[" in rich
    assert "fleet=6" in rich
    assert all(c in rich for c in "┃━")
    assert len(TABLE_COLUMNS) == 14


def test_an_empty_variant_still_draws(tmp_path: Path) -> None:
    empty = VariantResult(
        name="nothing",
        overrides=(),
        jobs=0,
        jobs_started=0,
        jobs_completed=0,
        jobs_never_started=0,
        jobs_unschedulable=0,
        cost=0.0,
        node_hours=0.0,
        by_type=(),
        utilisation=0.0,
        wait=WaitStats.of([]),
        launches=0,
        terminations=0,
        interruptions=0,
        cost_ceiling_hits=0,
        requeues=0,
        simulated_seconds=0.0,
    )
    report = Report("t.swf", "swf", 0, "c.yaml", 0, (empty,))
    files = write_report(report, tmp_path)
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in files.plots)
    assert json.loads(files.json.read_text())["variants"][0]["series"]["t"] == []
    assert isinstance(Series.empty().resample(5), Series)


# --- progress ------------------------------------------------------------------------------


def test_progress_is_off_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    with ReplayProgress(86400, "replay", stream=stream) as bar:
        assert not bar.enabled
        bar.update(100)
    assert stream.getvalue() == ""


def test_progress_forced_on_draws_a_bar() -> None:
    stream = io.StringIO()
    with ReplayProgress(2 * 86400, "policy=toil", enabled=True, stream=stream, steps=10) as bar:
        for t in np.linspace(0, 2 * 86400, 50):
            bar.update(float(t))
    text = stream.getvalue()
    assert "policy=toil" in text
    assert "2.0 simulated days" in text
    assert "100%" in text


def test_synthetic_trace_report_end_to_end(tmp_path: Path) -> None:
    """A bigger synthetic trace through the same path (numbers differ from the example)."""
    trace = generate(SyntheticSpec(jobs=3000, days=10, seed=2))
    report = Report(
        "synthetic", "synthetic", len(trace), "c.yaml", 2, (fixed_fleet(trace, 4, 0.5, "four"),)
    )
    files = write_report(report, tmp_path)
    data = json.loads(files.json.read_text())
    assert data["variants"][0]["jobs"]["completed"] == 3000
    assert 0 < data["variants"][0]["utilisation"] <= 1


def test_the_html_page_says_the_placement(tmp_path: Path) -> None:
    """Two reports of one trace and config differ by placement alone: the page must say
    which scheduler placed the jobs, as report.json does."""
    report = Report(**{**build_report().__dict__, "placement": "best-fit", "node_weights": "price"})
    files = write_report(report, tmp_path / "out")
    assert "placement best-fit, node weights price" in files.html.read_text()


def test_progress_off_a_terminal_writes_a_plain_line_at_each_tenth() -> None:
    """A background benchmark's log (no terminal) still says how far a long replay is."""
    stream = io.StringIO()
    with ReplayProgress(90 * 86400, ["a", "b"], stream=stream, lines=10) as bar:
        assert not bar.enabled
        for t in np.linspace(0, 90 * 86400, 500):
            bar.update(float(t), 0)
        bar.update(44 * 86400, 1)  # row b: 4 tenths so far, the rest at the end
    lines = [line.split(",")[0] for line in stream.getvalue().splitlines()]
    expected_a = [f"a: {10 * k}% ({9 * k:.1f} of 90.0 simulated days)" for k in range(1, 11)]
    assert lines == [
        *expected_a,
        "b: 40% (36.0 of 90.0 simulated days)",
        "b: 100% (90.0 of 90.0 simulated days)",
    ]
    assert all(line.endswith(" elapsed") for line in stream.getvalue().splitlines())


def test_progress_on_a_terminal_writes_no_plain_lines() -> None:
    stream = io.StringIO()
    with ReplayProgress(86400, "r", enabled=True, stream=stream, steps=10, lines=10) as bar:
        bar.update(86400 / 2)
    assert "50% (" not in stream.getvalue()
