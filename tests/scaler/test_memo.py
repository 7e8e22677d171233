"""scaler.memo.Memo: remembers, forgets the least recently used, computes once per key."""

from __future__ import annotations

import threading

import pytest
from shoal.scaler.memo import Memo


def test_computes_once_per_key() -> None:
    calls: list[str] = []
    memo: Memo[int] = Memo(4)

    def compute(key: str) -> int:
        calls.append(key)
        return len(key)

    assert [memo.get(k, lambda k=k: compute(k)) for k in ["a", "bb", "a", "bb", "a"]] == [
        1,
        2,
        1,
        2,
        1,
    ]
    assert calls == ["a", "bb"]
    assert (memo.hits, memo.misses, len(memo)) == (3, 2, 2)


@pytest.mark.parametrize(
    ("keys", "kept", "forgotten"),
    [
        (["a", "b", "c", "d"], ["b", "c", "d"], ["a"]),
        (["a", "b", "a", "c", "d"], ["a", "c", "d"], ["b"]),  # using "a" kept it
        (["a", "a", "a"], ["a"], []),
    ],
    ids=["oldest-goes", "recently-used-stays", "one-key"],
)
def test_forgets_the_least_recently_used(
    keys: list[str], kept: list[str], forgotten: list[str]
) -> None:
    memo: Memo[str] = Memo(3)
    for k in keys:
        memo.get(k, lambda k=k: k.upper())
    assert len(memo) == len(kept)
    before = memo.misses
    for k in kept:
        assert memo.get(k, lambda: "recomputed") == k.upper()
    assert memo.misses == before
    for k in forgotten:
        assert memo.get(k, lambda: "recomputed") == "recomputed"


def test_falsy_values_are_remembered() -> None:
    memo: Memo[int] = Memo(2)
    calls = []
    for _ in range(3):
        memo.get("zero", lambda: calls.append(1) or 0)
    assert len(calls) == 1


def test_clear_and_size_check() -> None:
    memo: Memo[int] = Memo(2)
    memo.get("a", lambda: 1)
    memo.clear()
    assert (len(memo), memo.hits, memo.misses) == (0, 0, 0)
    with pytest.raises(ValueError, match="size"):
        Memo(0)


def test_threads_share_it_safely() -> None:
    memo: Memo[int] = Memo(50)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(2000):
                k = (i + offset) % 80
                assert memo.get(k, lambda k=k: k * k) == k * k
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(memo) == 50
    assert memo.hits + memo.misses == 8000


def test_a_budget_bounds_the_entries_weights_forgetting_the_least_recently_used() -> None:
    memo: Memo[str] = Memo(100, budget=10)
    for key, weight in [("a", 4), ("b", 4), ("a", 4), ("c", 4)]:  # using "a" kept it
        memo.get(key, lambda key=key: key.upper(), weight=weight)
    assert (len(memo), memo.weight) == (2, 8)
    calls: list[str] = []
    assert memo.get("a", lambda: calls.append("a") or "A") == "A"  # still remembered
    assert memo.get("b", lambda: calls.append("b") or "B", weight=4) == "B"  # forgotten
    assert calls == ["b"]
    assert memo.weight <= 10


def test_an_entry_heavier_than_the_budget_is_computed_but_not_remembered() -> None:
    memo: Memo[int] = Memo(100, budget=10)
    memo.get("small", lambda: 1, weight=3)
    assert memo.get("huge", lambda: 2, weight=11) == 2
    assert (len(memo), memo.weight) == (1, 3)  # the small one was not pushed out either
    calls: list[int] = []
    memo.get("huge", lambda: calls.append(1) or 2, weight=11)
    assert calls == [1]
    memo.clear()
    assert (len(memo), memo.weight) == (0, 0)


def test_a_budget_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="budget"):
        Memo(4, budget=0)
