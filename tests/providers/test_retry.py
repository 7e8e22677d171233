"""call_with_retry: backoff driven by a retry predicate, on an injected sleep (no waiting)."""

from __future__ import annotations

import pytest
from shoal.providers.errors import CapacityError, RetryableError
from shoal.providers.retry import RetryPolicy, call_with_retry


class Flaky:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.waits: list[float] = []

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def retryable(e: BaseException) -> bool:
    return isinstance(e, RetryableError)


async def test_retries_what_the_predicate_accepts_with_growing_waits() -> None:
    flaky = Flaky([RetryableError("slow down", code="Throttling")] * 3)
    policy = RetryPolicy(attempts=5, initial=0.5, maximum=20.0)  # the defaults' shape
    assert await call_with_retry(flaky, retryable, policy, sleep=flaky.sleep) == "done"
    assert flaky.calls == 4
    # multiplier * 2**n plus up to 1 s of jitter: 0.5-1.5, 1-2, 2-3
    for n, wait in enumerate(flaky.waits):
        assert 0.5 * 2**n <= wait <= 0.5 * 2**n + 1.0


async def test_gives_up_after_the_attempts_and_raises_the_last_error() -> None:
    flaky = Flaky([RetryableError(f"no {i}") for i in range(10)])
    with pytest.raises(RetryableError, match="no 2"):
        await call_with_retry(flaky, retryable, RetryPolicy(attempts=3), sleep=flaky.sleep)
    assert flaky.calls == 3


async def test_an_error_the_predicate_rejects_is_raised_at_once() -> None:
    flaky = Flaky([CapacityError("none left", offerings=())])
    with pytest.raises(CapacityError):
        await call_with_retry(flaky, retryable, sleep=flaky.sleep)
    assert flaky.calls == 1
    assert flaky.waits == []


async def test_waits_are_capped() -> None:
    flaky = Flaky([RetryableError("x")] * 8)
    policy = RetryPolicy(attempts=9, initial=1.0, maximum=4.0)
    await call_with_retry(flaky, retryable, policy, sleep=flaky.sleep)
    assert max(flaky.waits) <= 4.0


async def test_the_deadline_counts_the_first_try(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first try runs before tenacity starts; a first try that outlasted the deadline is
    not retried, as when tenacity timed it."""
    now = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: now[0])

    class Slow(Flaky):
        async def __call__(self) -> str:
            now[0] += 200.0  # longer than the deadline
            return await super().__call__()

    slow = Slow([RetryableError("late")] * 3)
    with pytest.raises(RetryableError, match="late"):
        await call_with_retry(slow, retryable, RetryPolicy(deadline=120.0), sleep=slow.sleep)
    assert slow.calls == 1
    assert slow.waits == []
