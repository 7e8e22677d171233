"""Exponential backoff with jitter for provider calls, driven by a retry predicate (tenacity)."""

from __future__ import annotations

import asyncio
import logging
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

    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(predicate),
        stop=tenacity.stop_after_attempt(policy.attempts)
        | tenacity.stop_after_delay(policy.deadline),
        # multiplier, not the deprecated initial= (a DeprecationWarning for any value but 1)
        wait=tenacity.wait_exponential_jitter(multiplier=policy.initial, max=policy.maximum),
        sleep=sleep,
        reraise=True,
        before_sleep=before_sleep,
    )
    return await retrying(fn)
