"""A progress bar on stderr for long replays (rich), off when stderr is not a terminal.

    with ReplayProgress(total=trace_seconds, description="policy=toil") as bar:
        ...
        bar.update(simulated_seconds_done)

One bar per variant: ``description`` may be a list of names, and ``update(done, row)``
moves row ``row`` (``--compare`` replays in parallel move several rows at once; a row not
started yet stays at 0 %, a finished one at 100 %). ``update`` is cheap to call at every
event: it forwards to rich only when the row has moved on by ``1 / steps`` of the total
(and always at the end).
"""

from __future__ import annotations

import sys
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
    when ``stream`` (default stderr) is a terminal."""

    def __init__(
        self,
        total: float,
        description: str | Sequence[str] = "replay",
        enabled: bool | None = None,
        stream: IO[str] | None = None,
        steps: int = 1000,
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

    def __enter__(self) -> ReplayProgress:
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
        if self._progress is None:
            return
        done = min(max(done, 0.0), self.total)
        if done < self.total and done - self._shown[row] < self._step:
            return
        self._shown[row] = done
        self._progress.update(self._tasks[row], completed=done, days=f"{done / 86400:.1f}")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            if kind is None:
                for row in range(len(self._tasks)):
                    self.update(self.total, row)
            self._progress.stop()
            self._progress = None
