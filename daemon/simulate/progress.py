"""A progress bar on stderr for long replays (rich), off when stderr is not a terminal.

    with ReplayProgress(total=trace_seconds, description="policy=toil") as bar:
        ...
        bar.update(simulated_seconds_done)

``update`` is cheap to call at every event: it forwards to rich only when the replay has
moved on by ``1 / steps`` of the total (and always at the end).
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ReplayProgress"]


class ReplayProgress:
    """Simulated seconds done out of ``total``. ``enabled=None``: on when ``stream`` (default
    stderr) is a terminal."""

    def __init__(
        self,
        total: float,
        description: str = "replay",
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
        self.description = description
        self._step = self.total / max(steps, 1)
        self._shown = -1.0
        self._progress: Progress | None = None
        self._task: int | None = None

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
            self._task = self._progress.add_task(
                self.description, total=self.total or 1, days="0.0"
            )
        return self

    def update(self, done: float) -> None:
        if self._progress is None or self._task is None:
            return
        done = min(max(done, 0.0), self.total)
        if done < self.total and done - self._shown < self._step:
            return
        self._shown = done
        self._progress.update(self._task, completed=done, days=f"{done / 86400:.1f}")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            if kind is None:
                self.update(self.total)
            self._progress.stop()
            self._progress = None
