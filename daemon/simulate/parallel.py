"""``--compare`` variants replayed side by side in worker processes (``shoal simulate -j N``).

``replay_variants(trace, variants, options, jobs=N, progress=bar)`` returns one ``Replay``
per variant, in variant order, whatever order they finish in. A variant's result depends
only on the trace, its config and the options: the simulated cloud's seed is
``options.seed`` or the variant's own ``provider.seed``, and a replay keeps no state
between runs (every one builds its cloud, controller and clock afresh). So the report is
byte-identical for any ``N``, which ``tests/simulate/test_parallel.py`` checks (``-j 1``
against ``-j 2``).

- ``jobs == 1``, or a single variant: the variants are replayed one after the other in this
  process.
- Otherwise a ``ProcessPoolExecutor`` of ``min(jobs, len(variants))`` workers started with
  ``spawn``: a fresh interpreter, with nothing of the parent's (no event loop, threads or
  held locks, as ``fork`` would copy), the same on every platform. Each worker gets the
  trace and the options once, when it starts (``_start_worker``), then a variant's row,
  name, overrides and config per task (``_replay_variant``: module-level, so a spawned
  interpreter can import it).
- Progress: a worker sends ``(row, simulated seconds done)`` over a queue, at most
  ``PROGRESS_STEPS`` times a replay; the parent moves that variant's row of the bar and sets
  it to 100 % when the variant's result comes back. No queue when the bar is off.
- A failure: ``VariantError`` (``variant <name>: <error>``, the worker's exception as its
  ``__cause__``), raised as soon as any variant fails (the lowest row when several are seen
  at once); the variants still queued are cancelled and the workers stopped.
- Ctrl-C: the terminal sends SIGINT to the whole process group, so the workers ignore it
  and the parent alone acts: it cancels what is queued, terminates the workers and
  re-raises ``KeyboardInterrupt``.

Each worker holds its own copy of the trace and its own replay: peak memory is about ``N``
times one variant's.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from queue import Empty
from typing import TYPE_CHECKING, Any

from shoal.daemon.simulate.engine import Replay, ReplayOptions, replay

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

    from shoal.daemon.config import ShoalConfig
    from shoal.daemon.simulate.compare import Variant
    from shoal.daemon.simulate.progress import ReplayProgress
    from shoal.daemon.simulate.trace import Trace

__all__ = ["PROGRESS_STEPS", "VariantError", "default_jobs", "replay_variants"]

PROGRESS_STEPS = 200  # progress messages a worker sends per replay, at most
_POLL = 0.1  # seconds between looks at the progress queue while variants run
_MANAGER_JOIN = 10.0  # seconds to wait, at most, for the pool's thread to reap stopped workers


class VariantError(Exception):
    """A variant's replay failed: ``variant`` is its name, ``__cause__`` the error."""

    def __init__(self, variant: str, error: BaseException) -> None:
        super().__init__(f"variant {variant}: {error}")
        self.variant = variant


def default_jobs() -> int:
    """The cores this process may run on (``-j``'s default)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def replay_variants(
    trace: Trace,
    variants: Sequence[Variant],
    options: ReplayOptions,
    *,
    jobs: int | None = None,
    progress: ReplayProgress | None = None,
) -> list[Replay]:
    """Replay every variant (``jobs`` processes at most; ``None``: ``default_jobs()``); the
    results in variant order. ``progress``'s rows are the variants, in order. Raises
    ``VariantError`` for the first variant that fails."""
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    workers = min(jobs or default_jobs(), len(variants))
    if workers <= 1:
        return [_replay_here(trace, row, v, options, progress) for row, v in enumerate(variants)]
    return _replay_in_workers(trace, variants, options, workers, progress)


def _replay_here(
    trace: Trace, row: int, variant: Variant, options: ReplayOptions, bar: ReplayProgress | None
) -> Replay:
    update = None if bar is None else lambda done: bar.update(done, row)
    try:
        return replay(
            trace,
            variant.config,
            options,
            name=variant.name,
            overrides=variant.overrides,
            progress=update,
        )
    except Exception as exc:
        raise VariantError(variant.name, exc) from exc


# --- in the workers ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _start_worker(trace: Trace, options: ReplayOptions, queue: Queue[Any] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _WORKER.update(trace=trace, options=options, queue=queue)


def _replay_variant(
    row: int, name: str, overrides: tuple[tuple[str, str], ...], config: ShoalConfig
) -> Replay:
    trace: Trace = _WORKER["trace"]
    queue: Queue[Any] | None = _WORKER["queue"]
    report: Callable[[float], None] | None = None
    if queue is not None:
        step = trace.span / PROGRESS_STEPS
        sent = -math.inf

        def report(done: float) -> None:
            nonlocal sent
            if done - sent >= step:
                sent = done
                queue.put((row, done))

    return replay(
        trace, config, _WORKER["options"], name=name, overrides=overrides, progress=report
    )


# --- in the parent -------------------------------------------------------------------------


def _replay_in_workers(
    trace: Trace,
    variants: Sequence[Variant],
    options: ReplayOptions,
    workers: int,
    bar: ReplayProgress | None,
) -> list[Replay]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue() if bar is not None and bar.enabled else None
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(trace, options, queue)
    )
    rows: dict[Future[Replay], int] = {}
    results: list[Replay | None] = [None] * len(variants)
    try:
        for row, v in enumerate(variants):
            rows[pool.submit(_replay_variant, row, v.name, v.overrides, v.config)] = row
        pending = set(rows)
        while pending:
            finished, pending = wait(
                pending, timeout=_POLL if queue else None, return_when=FIRST_COMPLETED
            )
            _show(queue, bar, results)
            for future in sorted(finished, key=rows.__getitem__):
                row = rows[future]
                try:
                    results[row] = future.result()
                except Exception as exc:
                    raise VariantError(variants[row].name, exc) from exc
                if bar is not None:
                    bar.update(trace.span, row)
    except BaseException:  # a failed variant, Ctrl-C: stop everything now
        _stop(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if queue is not None:
            queue.close()
    return [r for r in results if r is not None]


def _show(queue: Queue[Any] | None, bar: ReplayProgress | None, results: list[Any]) -> None:
    """Move the bar's rows to what the workers reported (not a finished row: a late message
    would move it back from 100 %)."""
    if queue is None or bar is None:
        return
    while True:
        try:
            row, done = queue.get_nowait()
        except Empty:
            return
        if results[row] is None:
            bar.update(done, row)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued variants and terminate the workers (a running replay does not look
    for cancellation). Python 3.14 has ``terminate_workers``; before it, the pool's
    processes are only reachable through ``_processes``."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    # ``shutdown(wait=False)`` forgets the pool's manager thread, which then reaps the workers
    # as they die, racing our joins: a join that loses that race returns before the worker is
    # marked dead, and ``multiprocessing.active_children()`` still lists it. So join the
    # thread too (bounded: it only waits on workers that are being terminated).
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()
    if manager is not None:
        manager.join(timeout=_MANAGER_JOIN)
