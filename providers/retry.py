"""Exponential backoff with jitter for provider calls, driven by a retry predicate (tenacity)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

__all__ = ["RetryPolicy", "call_with_retry"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5  # total tries, the first included
    initial: float = 0.5  # first backoff, seconds
    maximum: float = 20.0  # cap on one backoff
    deadline: float = 120.0  # give up once this much time has passed since the first try


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    predicate: Callable[[BaseException], bool],
    policy: RetryPolicy = RetryPolicy(),
    *,
    operation: str = "",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await ``fn()``; while it raises an error ``predicate`` accepts, back off and try again.

    Gives up after ``policy.attempts`` tries or ``policy.deadline`` seconds and re-raises the
    last error as it was. ``sleep`` is injectable so tests never wait.
    """

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "event=retry operation=%s attempt=%d wait=%.2fs error=%r",
            operation,
            state.attempt_number,
            state.next_action.sleep if state.next_action else 0.0,
            exc,
        )

    # The first try runs outside tenacity, whose set-up and per-attempt bookkeeping cost more
    # than most calls: nearly every call succeeds at once. A failure the predicate accepts goes
    # to tenacity as its first attempt (re-raised, not tried again), so attempt numbers,
    # backoffs, the log and the deadline (timed from the first try) are as if tenacity had
    # made it.
    start = time.monotonic()
    try:
        return await fn()
    except BaseException as exc:
        if not predicate(exc):
            raise
        first: list[BaseException] = [exc]

    async def attempt() -> T:
        if first:
            raise first.pop()
        return await fn()

    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(predicate),
        stop=tenacity.stop_after_attempt(policy.attempts) | _since(start, policy.deadline),
        # multiplier, not the deprecated initial= (a DeprecationWarning for any value but 1)
        wait=tenacity.wait_exponential_jitter(multiplier=policy.initial, max=policy.maximum),
        sleep=sleep,
        reraise=True,
        before_sleep=before_sleep,
    )
    return await retrying(attempt)


class _since(tenacity.stop.stop_base):
    """tenacity's ``stop_after_delay``, timed from ``start`` (the first try, made before
    tenacity began) on the same clock (``time.monotonic``)."""

    def __init__(self, start: float, deadline: float) -> None:
        self.start, self.deadline = start, deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return time.monotonic() - self.start >= self.deadline
