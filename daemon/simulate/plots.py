"""The report's PNG plots, drawn with matplotlib's Agg canvas (no display, no pyplot state).

``plot_nodes``     per variant: live and booting nodes over time (left axis) against queued
                   and running jobs (right axis)
``plot_wait_cdf``  the queue-wait CDF of every variant on one chart (symlog minutes)
``plot_cost``      cumulative cost over time of every variant on one chart

Series longer than ``PLOT_POINTS`` are resampled first. The PNGs carry no software
version, so the same report draws the same bytes with the same matplotlib.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from shoal.daemon.simulate.report import Report

__all__ = ["PLOT_POINTS", "plot_cost", "plot_nodes", "plot_wait_cdf"]

PLOT_POINTS = 4000
_DPI = 100
_METADATA = {"Software": None}


def _time_unit(report: Report) -> tuple[float, str]:
    end = max((float(v.series.t[-1]) for v in report.variants if len(v.series)), default=0.0)
    return (86400.0, "days") if end > 3 * 86400 else (3600.0, "hours")


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=_DPI, metadata=_METADATA)
    return path


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def plot_nodes(report: Report, path: str | os.PathLike[str]) -> Path:
    scale, unit = _time_unit(report)
    count = max(1, len(report.variants))
    fig = Figure(figsize=(11, 1.0 + 2.6 * count), layout="constrained")
    axes = fig.subplots(count, 1, sharex=True, squeeze=False)[:, 0]
    for ax, variant in zip(axes, report.variants, strict=False):
        ax.set_title(variant.name, fontsize=10, loc="left")
        s = variant.series.resample(PLOT_POINTS)
        if not len(s):
            _no_data(ax)
            continue
        t = s.t / scale
        ax.fill_between(t, s.nodes, step="post", alpha=0.25, color="tab:blue", label="nodes")
        ax.step(t, s.nodes, where="post", color="tab:blue", linewidth=1)
        ax.step(
            t,
            s.booting,
            where="post",
            color="tab:cyan",
            linestyle="--",
            linewidth=1,
            label="booting",
        )
        ax.set_ylabel("nodes")
        ax.set_ylim(bottom=0)
        jobs = ax.twinx()
        jobs.step(t, s.queued, where="post", color="tab:red", linewidth=1, label="queued jobs")
        jobs.step(t, s.running, where="post", color="tab:green", linewidth=1, label="running jobs")
        jobs.set_ylabel("jobs")
        jobs.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()
        more = jobs.get_legend_handles_labels()
        ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper right", fontsize=8)
    axes[-1].set_xlabel(f"{unit} since the trace start")
    fig.suptitle("Nodes against queued and running jobs")
    return _save(fig, path)


def plot_wait_cdf(report: Report, path: str | os.PathLike[str]) -> Path:
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    right = max([1.0] + [float(np.max(v.waits)) / 60.0 for v in report.variants if len(v.waits)])
    for variant in report.variants:
        waits = np.sort(np.asarray(variant.waits, dtype=np.float64)) / 60.0
        if not len(waits):
            continue
        # Fraction of all jobs: those never started keep the curve below 1. Each curve runs
        # on to the longest wait of any variant, so one whose jobs never waited shows too.
        total = max(variant.jobs, len(waits))
        share = np.arange(1, len(waits) + 1) / total
        label = variant.name
        if variant.jobs_never_started:
            label += f" ({variant.jobs_never_started} never started)"
        x = np.concatenate(([0.0], waits, [right]))
        y = np.concatenate(([0.0], share, [share[-1]]))
        ax.step(x, y, where="post", label=label)
        drawn = True
    if drawn:
        ax.set_xscale("symlog", linthresh=1.0)
        ax.legend(fontsize=8, loc="lower right")
    else:
        _no_data(ax)
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("queue wait (minutes)")
    ax.set_ylabel("fraction of jobs started within")
    ax.grid(True, alpha=0.3)
    ax.set_title("Queue wait distribution (CDF)")
    return _save(fig, path)


def plot_cost(report: Report, path: str | os.PathLike[str]) -> Path:
    scale, unit = _time_unit(report)
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    for variant in report.variants:
        s = variant.series.resample(PLOT_POINTS)
        if not len(s):
            continue
        ax.plot(s.t / scale, s.cost, label=f"{variant.name} (${variant.cost:,.2f})")
        drawn = True
    if drawn:
        ax.legend(fontsize=8, loc="upper left")
    else:
        _no_data(ax)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"{unit} since the trace start")
    ax.set_ylabel("cumulative cost ($)")
    ax.grid(True, alpha=0.3)
    ax.set_title("Cost over time")
    return _save(fig, path)
