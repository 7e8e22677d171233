"""The results of a replay, and the files and table that show them.

Model: a ``Report`` (the trace and what reading it took, plus one ``VariantResult`` per
compared config). A ``VariantResult`` holds cost ($ and node-hours, by node type and
capacity type), utilisation, queue waits (``WaitStats`` and every wait, for the CDF),
event counts and a ``Series`` (nodes, booting nodes, queued and running jobs, cumulative
cost) sampled at events with ``SeriesRecorder``.

Writers (``write_report(report, out_dir)`` calls them all)::

    report.json   byte-identical for the same input: sorted keys, floats rounded to 6
                  decimals, no wall-clock times; series resampled to <= 1000 points
    report.csv    one row per variant
    nodes.png, wait_cdf.png, cost.png   (daemon.simulate.plots)
    index.html    the table and the plots on one page

``format_table(report, tty)``: the same table for a terminal (rich) or as plain text.

Waits: the time a job spent queued before it started (requeues included); percentiles
are nearest-rank over the jobs that started; jobs never started are counted apart.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from shoal.daemon.units import format_duration

__all__ = [
    "REPORT_VERSION",
    "TABLE_COLUMNS",
    "CostLine",
    "Report",
    "ReportFiles",
    "Series",
    "SeriesRecorder",
    "VariantResult",
    "WaitStats",
    "format_table",
    "report_json",
    "table_rows",
    "write_csv",
    "write_html",
    "write_json",
    "write_report",
]

REPORT_VERSION = 1
JSON_SERIES_POINTS = 1000


@dataclass(frozen=True, slots=True)
class CostLine:
    """What one node type cost on one capacity type (``"on-demand"`` or ``"spot"``)."""

    node_type: str
    capacity_type: str
    cost: float  # dollars
    node_hours: float


@dataclass(frozen=True, slots=True)
class WaitStats:
    """Queue waits in seconds over ``count`` started jobs (all 0 when none started)."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, waits: Sequence[float] | np.ndarray) -> WaitStats:
        values = np.asarray(waits, dtype=np.float64)
        if not len(values):
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        p50, p95, p99 = np.percentile(values, [50, 95, 99], method="inverted_cdf")
        return cls(
            len(values),
            float(values.mean()),
            float(p50),
            float(p95),
            float(p99),
            float(values.max()),
        )


def _column(values: Iterable[float], dtype: type = np.float64) -> np.ndarray:
    out = np.asarray(values, dtype=dtype)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class Series:
    """Samples at events: each count holds from its ``t`` until the next ``t``; ``cost``
    (cumulative dollars) grows linearly in between. ``t``: seconds since the trace start."""

    t: np.ndarray
    # the counts as the recorder keeps them (int32; float64 once resampled)
    nodes: np.ndarray  # live nodes: booting + joined
    booting: np.ndarray
    queued: np.ndarray
    running: np.ndarray
    cost: np.ndarray

    NAMES = ("nodes", "booting", "queued", "running", "cost")

    def __len__(self) -> int:
        return len(self.t)

    def resample(self, points: int) -> Series:
        """The values at ``points`` evenly spaced times from the first to the last sample
        (each the last sample at or before that time; ``cost`` interpolated linearly);
        unchanged if already that short."""
        if len(self) <= points or points < 2:
            return self
        at = np.linspace(self.t[0], self.t[-1], points)
        index = np.searchsorted(self.t, at, side="right") - 1
        steps = (_column(getattr(self, n)[index]) for n in self.NAMES[:-1])
        # Cumulative cost grows linearly between events (the fleet is fixed in between).
        return Series(_column(at), *steps, _column(np.interp(at, self.t, self.cost)))

    @classmethod
    def empty(cls) -> Series:
        return cls(*(_column(()) for _ in range(6)))


class SeriesRecorder:
    """Collects samples in time order; a sample at the same time as the last replaces it.
    The counts are kept as 32-bit ints: a replay samples ~2 times a job, and 48 bytes a
    sample in doubles were 100 MB on a million-job trace (32 bytes now)."""

    def __init__(self) -> None:
        self._columns = [array(code) for code in "diiiid"]

    def sample(
        self, t: float, nodes: int, booting: int, queued: int, running: int, cost: float
    ) -> None:
        columns = self._columns
        times = columns[0]
        if times and t < times[-1]:
            raise ValueError(f"sample at {t} is before the last one at {times[-1]}")
        if times and t == times[-1]:
            for column in columns:
                column.pop()
        for column, value in zip(columns, (t, nodes, booting, queued, running, cost), strict=True):
            column.append(value)

    def build(self) -> Series:
        t, *counts, cost = self._columns
        return Series(_column(t), *(_column(c, np.int32) for c in counts), _column(cost))


@dataclass(frozen=True, eq=False)
class VariantResult:
    """What one config did on the trace."""

    name: str
    overrides: tuple[tuple[str, str], ...]
    jobs: int
    jobs_started: int
    jobs_completed: int
    jobs_never_started: int  # never started by the end of the replay
    jobs_unschedulable: int  # fit no node type (included in never started)
    cost: float
    node_hours: float
    by_type: tuple[CostLine, ...]
    utilisation: float  # busy core-seconds over joined core-seconds, 0..1
    wait: WaitStats
    launches: int
    terminations: int
    interruptions: int
    cost_ceiling_hits: int  # planner passes whose launches the cost ceiling trimmed
    requeues: int
    simulated_seconds: float
    series: Series = field(default_factory=Series.empty)
    waits: np.ndarray = field(default_factory=lambda: _column(()))  # per started job

    @property
    def spot_cost(self) -> float:
        return sum(line.cost for line in self.by_type if line.capacity_type == "spot")

    @property
    def on_demand_cost(self) -> float:
        return sum(line.cost for line in self.by_type if line.capacity_type != "spot")


@dataclass(frozen=True, eq=False)
class Report:
    """A replay of one trace under one or more configs."""

    trace: str  # the trace file as given
    trace_format: str
    jobs: int
    config: str  # the config file as given
    seed: int
    variants: tuple[VariantResult, ...]
    start_epoch: float | None = None
    bad_lines_skipped: int = 0
    defaults_used: tuple[str, ...] = ()  # one line per field, as the trace reader said
    placement: str = "first-fit"  # the simulated scheduler's node choice (--placement)
    node_weights: str = "equal"  # its node weights (--node-weights)


@dataclass(frozen=True, slots=True)
class ReportFiles:
    json: Path
    csv: Path
    html: Path
    plots: tuple[Path, ...]


# --- JSON ----------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-ready and stable: floats rounded to 6 decimals (integral ones as ints),
    -0.0 and NaN normalised; numpy scalars and arrays as Python values."""
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        rounded = round(value, 6)
        return int(rounded) if rounded.is_integer() and abs(rounded) < 2**53 else rounded
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    raise TypeError(f"cannot write {type(value).__name__} to the report")


def _variant_json(v: VariantResult) -> dict[str, Any]:
    series = v.series.resample(JSON_SERIES_POINTS)
    return {
        "name": v.name,
        "overrides": dict(v.overrides),
        "jobs": {
            "total": v.jobs,
            "started": v.jobs_started,
            "completed": v.jobs_completed,
            "never_started": v.jobs_never_started,
            "unschedulable": v.jobs_unschedulable,
            "requeues": v.requeues,
        },
        "cost": {
            "total": v.cost,
            "node_hours": v.node_hours,
            "spot": v.spot_cost,
            "on_demand": v.on_demand_cost,
            "by_type": [
                {
                    "node_type": line.node_type,
                    "capacity_type": line.capacity_type,
                    "cost": line.cost,
                    "node_hours": line.node_hours,
                }
                for line in v.by_type
            ],
        },
        "utilisation": v.utilisation,
        "wait_seconds": {
            "count": v.wait.count,
            "mean": v.wait.mean,
            "p50": v.wait.p50,
            "p95": v.wait.p95,
            "p99": v.wait.p99,
            "max": v.wait.max,
        },
        "events": {
            "launches": v.launches,
            "terminations": v.terminations,
            "interruptions": v.interruptions,
            "cost_ceiling_hits": v.cost_ceiling_hits,
        },
        "simulated_seconds": v.simulated_seconds,
        "series": {"t": series.t, **{n: getattr(series, n) for n in Series.NAMES}},
    }


def report_json(report: Report) -> str:
    """The report as JSON text: the same report gives the same bytes."""
    data = {
        "version": REPORT_VERSION,
        "trace": {
            "file": report.trace,
            "format": report.trace_format,
            "jobs": report.jobs,
            "start_epoch": report.start_epoch,
            "bad_lines_skipped": report.bad_lines_skipped,
            "defaults_used": list(report.defaults_used),
        },
        "config": report.config,
        "seed": report.seed,
        "placement": report.placement,
        "node_weights": report.node_weights,
        "variants": [_variant_json(v) for v in report.variants],
    }
    return json.dumps(_clean(data), sort_keys=True, indent=1, allow_nan=False) + "\n"


def write_json(report: Report, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.write_text(report_json(report), encoding="utf-8", newline="\n")
    return path


# --- CSV and the table ---------------------------------------------------------------------


def _number(value: float) -> str:
    cleaned = _clean(float(value))
    return "" if cleaned is None else str(cleaned)


def _type_columns(report: Report) -> list[tuple[str, str]]:
    return sorted({(c.node_type, c.capacity_type) for v in report.variants for c in v.by_type})


def write_csv(report: Report, path: str | os.PathLike[str]) -> Path:
    """One row per variant; a cost and a node-hours column per (node type, capacity type)."""
    path = Path(path)
    types = _type_columns(report)
    header = [
        "variant",
        "cost_usd",
        "node_hours",
        "spot_cost_usd",
        "on_demand_cost_usd",
        "utilisation",
        "wait_mean_s",
        "wait_p50_s",
        "wait_p95_s",
        "wait_p99_s",
        "wait_max_s",
        "jobs",
        "jobs_started",
        "jobs_completed",
        "jobs_never_started",
        "jobs_unschedulable",
        "requeues",
        "launches",
        "terminations",
        "interruptions",
        "cost_ceiling_hits",
        "simulated_seconds",
    ]
    for node_type, capacity in types:
        header += [f"cost_usd[{node_type} {capacity}]", f"node_hours[{node_type} {capacity}]"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for v in report.variants:
        w = v.wait
        row = [
            v.name,
            *map(_number, (v.cost, v.node_hours, v.spot_cost, v.on_demand_cost, v.utilisation)),
            *map(_number, (w.mean, w.p50, w.p95, w.p99, w.max)),
            *map(str, (v.jobs, v.jobs_started, v.jobs_completed, v.jobs_never_started)),
            *map(str, (v.jobs_unschedulable, v.requeues, v.launches, v.terminations)),
            *map(str, (v.interruptions, v.cost_ceiling_hits)),
            _number(v.simulated_seconds),
        ]
        lines = {(c.node_type, c.capacity_type): c for c in v.by_type}
        for key in types:
            line = lines.get(key)
            row += [_number(line.cost), _number(line.node_hours)] if line else ["0", "0"]
        writer.writerow(row)
    path.write_text(out.getvalue(), encoding="utf-8", newline="\n")
    return path


TABLE_COLUMNS = (
    "variant",
    "cost $",
    "node-h",
    "util",
    "wait p50",
    "p95",
    "p99",
    "max",
    "never started",
    "unsched.",
    "launches",
    "terms",
    "interrupts",
    "ceiling hits",
)


def _wait(seconds: float) -> str:
    return format_duration(seconds) if seconds else "0s"


def table_rows(report: Report) -> list[list[str]]:
    """The table's cells, one row per variant, as the terminal and index.html show them."""
    rows = []
    for v in report.variants:
        w = v.wait
        rows.append(
            [
                v.name,
                f"{v.cost:,.2f}",
                f"{v.node_hours:,.1f}",
                f"{100 * v.utilisation:.1f}%",
                _wait(w.p50),
                _wait(w.p95),
                _wait(w.p99),
                _wait(w.max),
                str(v.jobs_never_started),
                str(v.jobs_unschedulable),
                str(v.launches),
                str(v.terminations),
                str(v.interruptions),
                str(v.cost_ceiling_hits),
            ]
        )
    return rows


def format_table(report: Report, tty: bool = False, width: int | None = None) -> str:
    """The comparison table: rich's box drawing for a terminal, aligned plain text else."""
    rows = table_rows(report)
    if not tty:
        widths = [max(len(r[i]) for r in [list(TABLE_COLUMNS), *rows]) for i in range(14)]
        lines = []
        for cells in [list(TABLE_COLUMNS), *rows]:
            parts = [
                c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)
            ]
            lines.append("  ".join(parts).rstrip())
        return "\n".join(lines) + "\n"
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"shoal simulate: {Path(report.trace).name}, {report.jobs} jobs")
    for i, name in enumerate(TABLE_COLUMNS):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i > 0)
    for cells in rows:
        table.add_row(*cells)
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, width=width or 160).print(table)
    return buffer.getvalue()


# --- HTML ----------------------------------------------------------------------------------

_PLOT_TITLES = {
    "nodes.png": "Nodes against queued and running jobs",
    "wait_cdf.png": "Queue wait distribution (CDF)",
    "cost.png": "Cost over time",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;font-size:14px}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}"
    "th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:8px 0}"
)


def write_html(report: Report, path: str | os.PathLike[str], plots: Sequence[str]) -> Path:
    """``index.html``: trace summary, the table, and the plots (file names relative to it)."""
    path = Path(path)
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in TABLE_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table_rows(report)
    )
    notes = [
        f"Trace <code>{e(report.trace)}</code> ({e(report.trace_format)}, {report.jobs} jobs), "
        f"config <code>{e(report.config)}</code>, seed {report.seed}, "
        f"placement {e(report.placement)}, node weights {e(report.node_weights)}.",
    ]
    if report.bad_lines_skipped:
        notes.append(f"{report.bad_lines_skipped} malformed trace lines were skipped.")
    defaults = "".join(f"<li>{e(d)}</li>" for d in report.defaults_used)
    figures = "".join(
        f'<h2>{e(_PLOT_TITLES.get(name, name))}</h2><img src="{e(name)}" alt="{e(name)}">'
        for name in plots
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>shoal simulate: {e(Path(report.trace).name)}</title>"
        f"<style>{_STYLE}</style></head><body>\n"
        f"<h1>shoal simulate: {e(Path(report.trace).name)}</h1>\n"
        + "".join(f"<p>{n}</p>" for n in notes)
        + (f"<p>Defaults used for unknown trace fields:</p><ul>{defaults}</ul>" if defaults else "")
        + f"\n<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
        '<p><a href="report.json">report.json</a> · <a href="report.csv">report.csv</a></p>\n'
        f"{figures}\n</body></html>\n"
    )
    path.write_text(page, encoding="utf-8", newline="\n")
    return path


def write_report(report: Report, out_dir: str | os.PathLike[str]) -> ReportFiles:
    """Every report file into ``out_dir`` (created if missing)."""
    from shoal.daemon.simulate import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = (
        plots.plot_nodes(report, out / "nodes.png"),
        plots.plot_wait_cdf(report, out / "wait_cdf.png"),
        plots.plot_cost(report, out / "cost.png"),
    )
    return ReportFiles(
        json=write_json(report, out / "report.json"),
        csv=write_csv(report, out / "report.csv"),
        html=write_html(report, out / "index.html", [p.name for p in written]),
        plots=written,
    )
