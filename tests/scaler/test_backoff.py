"""The offering backoff table: exponential per offering, capped, cleared by success, pure."""

from __future__ import annotations

import pytest
from shoal.scaler.backoff import BackoffPolicy, BackoffTable, FailureKind
from shoal.scaler.model import CapacityType, Offering

SPOT_A = Offering("c5.xlarge", "us-east-1a", CapacityType.SPOT)
SPOT_B = Offering("c5.xlarge", "us-east-1b", CapacityType.SPOT)
T0 = 1_000_000.0


def fail_times(table: BackoffTable, offering: Offering, n: int, kind=FailureKind.CAPACITY):
    """Fail ``n`` times, each retry right when the previous block ends; return the blocks."""
    now, blocks = T0, []
    for _ in range(n):
        table = table.record_failure(offering, now, kind)
        until = table.unavailable(now)[offering]
        blocks.append(until - now)
        now = until
    return table, blocks


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (FailureKind.CAPACITY, [180, 360, 720, 1440, 1800, 1800]),
        (FailureKind.QUOTA, [900, 1800, 1800]),
    ],
    ids=["capacity-3m-doubling-to-30m", "quota-starts-at-15m"],
)
def test_exponential_per_offering_capped(kind, expected):
    _, blocks = fail_times(BackoffTable(), SPOT_A, len(expected), kind)
    assert blocks == expected


def test_configurable():
    table = BackoffTable(BackoffPolicy(initial=10, maximum=35, multiplier=3))
    _, blocks = fail_times(table, SPOT_A, 3)
    assert blocks == [10, 30, 35]


def test_offerings_back_off_independently():
    table = BackoffTable().record_failure(SPOT_A, T0).record_failure(SPOT_A, T0 + 1)
    table = table.record_failure(SPOT_B, T0 + 1)
    assert dict(table.unavailable(T0 + 2)) == {SPOT_A: T0 + 1 + 360, SPOT_B: T0 + 1 + 180}


def test_unavailable_only_while_blocked():
    table = BackoffTable().record_failure(SPOT_A, T0)
    assert SPOT_A in table.unavailable(T0 + 179.9)
    assert SPOT_A not in table.unavailable(T0 + 180)


def test_success_clears_and_restarts_from_initial():
    table, _ = fail_times(BackoffTable(), SPOT_A, 3)
    table = table.record_success(SPOT_A)
    assert table.unavailable(T0) == {}
    assert table.record_failure(SPOT_A, T0).unavailable(T0)[SPOT_A] == T0 + 180


def test_quiet_offering_is_forgotten_and_starts_again():
    table = BackoffTable().record_failure(SPOT_A, T0)
    later = T0 + 180 + 1800  # block ended 30 min ago
    assert table.record_failure(SPOT_A, later).unavailable(later)[SPOT_A] == later + 180
    assert table.prune(later).entries == {}
    assert table.prune(T0 + 200).entries.keys() == {SPOT_A}


def test_never_shortens_a_running_block():
    table = BackoffTable().record_failure(SPOT_A, T0, FailureKind.QUOTA)  # until T0+900
    table = table.record_failure(SPOT_A, T0 + 1, FailureKind.CAPACITY)  # 2nd: 360 s
    assert table.unavailable(T0 + 1)[SPOT_A] == T0 + 900


def test_pure_and_frozen():
    table = BackoffTable()
    after = table.record_failure(SPOT_A, T0, reason="InsufficientInstanceCapacity")
    assert table.entries == {} and after.entries[SPOT_A].reason == "InsufficientInstanceCapacity"
    assert table.record_success(SPOT_A) is table
    with pytest.raises(TypeError):
        after.entries[SPOT_B] = after.entries[SPOT_A]  # type: ignore[index]
    with pytest.raises(AttributeError):
        after.policy = BackoffPolicy()  # type: ignore[misc]


@pytest.mark.parametrize(
    "knobs",
    [{"initial": 0}, {"initial": 100, "maximum": 50}, {"multiplier": 0.5}, {"quota_initial": 0}],
    ids=["zero-initial", "initial-above-max", "shrinking", "zero-quota"],
)
def test_bad_policy_rejected(knobs):
    with pytest.raises(ValueError, match="backoff"):
        BackoffPolicy(**knobs)
