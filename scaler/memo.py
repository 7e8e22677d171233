"""A bounded, thread-safe memo for pure functions whose arguments are costly to hash twice.

``Memo.get(key, compute)`` returns what ``compute()`` returned for an equal ``key`` before,
or calls it and remembers the value, forgetting the least recently used past ``size``
entries. The caller builds the key from everything the value depends on; the memo only
saves work: the value must be a function of the key alone.

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
    __slots__ = ("_items", "_lock", "hits", "misses", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        value = compute()  # outside the lock: another thread may compute the same meanwhile
        with self._lock:
            self.misses += 1
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0
