"""A progress bar on stderr for long replays (rich), off when stderr is not a terminal, or
there a plain line at every tenth (``lines=10``: a log file, a background benchmark).

    with ReplayProgress(total=trace_seconds, description="policy=toil") as bar:
        ...
        bar.update(simulated_seconds_done)

One bar per variant: ``description`` may be a list of names, and ``update(done, row)``
moves row ``row`` (``--compare`` replays in parallel move several rows at once; a row not
started yet stays at 0 %, a finished one at 100 %). ``update`` is cheap to call at every
event: it forwards to rich only when the row has moved on by ``1 / steps`` of the total
(and always at the end). With ``lines=N`` and no terminal, it writes a line each time a row
passes another ``1 / N`` of the total instead::

    policy=toil: 10% (9.0 of 90.0 simulated days), 0:00:21 elapsed
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ReplayProgress"]


class ReplayProgress:
    """Simulated seconds done out of ``total``, one row per description. ``enabled=None``: on
    when ``stream`` (default stderr) is a terminal; ``lines``: plain lines when it is off."""

    def __init__(
        self,
        total: float,
        description: str | Sequence[str] = "replay",
        enabled: bool | None = None,
        stream: IO[str] | None = None,
        steps: int = 1000,
        lines: int = 0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.total = max(float(total), 0.0)
        self.descriptions = (description,) if isinstance(description, str) else tuple(description)
        self._step = self.total / max(steps, 1)
        self._shown = [-1.0] * len(self.descriptions)
        self._progress: Progress | None = None
        self._tasks: list[TaskID] = []
        self.lines = 0 if enabled else max(lines, 0)
        self._lines_shown = [0] * len(self.descriptions)  # tenths (1 / lines) written per row
        self._started = time.monotonic()

    def __enter__(self) -> ReplayProgress:
        self._started = time.monotonic()
        if self.enabled:
            console = Console(file=self.stream, force_terminal=True)
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[days]} simulated days"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._progress.start()
            self._tasks = [
                self._progress.add_task(name, total=self.total or 1, days="0.0")
                for name in self.descriptions
            ]
        return self

    def update(self, done: float, row: int = 0) -> None:
        if self.lines:
            self._line(done, row)
        if self._progress is None:
            return
        done = min(max(done, 0.0), self.total)
        if done < self.total and done - self._shown[row] < self._step:
            return
        self._shown[row] = done
        self._progress.update(self._tasks[row], completed=done, days=f"{done / 86400:.1f}")

    def _line(self, done: float, row: int) -> None:
        part = self.lines if self.total <= 0 else int(min(done / self.total, 1.0) * self.lines)
        if part <= self._lines_shown[row]:
            return
        self._lines_shown[row] = part
        elapsed = dt.timedelta(seconds=round(time.monotonic() - self._started))
        days = self.total / 86400
        print(
            f"{self.descriptions[row]}: {100 * part // self.lines}% "
            f"({days * part / self.lines:.1f} of {days:.1f} simulated days), {elapsed} elapsed",
            file=self.stream,
            flush=True,
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None and self.lines:
            for row in range(len(self.descriptions)):
                self._line(self.total, row)
        if self._progress is not None:
            if kind is None:
                for row in range(len(self._tasks)):
                    self.update(self.total, row)
            self._progress.stop()
            self._progress = None
