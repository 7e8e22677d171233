"""A bounded, thread-safe memo for pure functions whose arguments are costly to hash twice.

``Memo.get(key, compute, weight=1)`` returns what ``compute()`` returned for an equal
``key`` before, or calls it and remembers the value, forgetting the least recently used
past ``size`` entries, or past ``budget`` in all of the entries' weights (a caller whose
keys and values grow with their input, a queue's job groups, weighs each by that size, so
the memo's memory is bounded, not only its count of entries). The caller builds the key
from everything the value depends on; the memo only saves work: the value must be a
function of the key alone.

The planner keeps one for the node counts it asks ``binpack`` for: a pass whose demand did
not change since an earlier pass (a timer pass, or a node type whose jobs did not change)
packs nothing again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Memo"]

V = TypeVar("V")


class Memo(Generic[V]):
    __slots__ = ("_items", "_lock", "_weights", "budget", "hits", "misses", "size", "weight")

    def __init__(self, size: int, budget: int | None = None) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self.size = size
        self.budget = budget
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._weights: dict[Hashable, int] = {}
        self.weight = 0  # the remembered entries' weights, in all
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, compute: Callable[[], V], weight: int = 1) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        value = compute()  # outside the lock: another thread may compute the same meanwhile
        with self._lock:
            self.misses += 1
            if self.budget is not None and weight > self.budget:
                return value  # would push out everything else: not remembered
            self.weight += weight - self._weights.get(key, 0)
            self._weights[key] = weight
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size or (
                self.budget is not None and self.weight > self.budget
            ):
                old, _ = self._items.popitem(last=False)
                self.weight -= self._weights.pop(old)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._weights.clear()
            self.weight = self.hits = self.misses = 0
