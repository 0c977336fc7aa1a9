"""A bounded least-recently-used map: what a worker remembers, never the truth.

Bounded twice: by entries, and by the bytes `weigh` says its values hold (each value's
weight as of its last `put` or `reweigh`). The least recently used entries go first; the
one just put or reweighed stays, even alone over the budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(
        self,
        capacity: int,
        *,
        budget: int | None = None,
        weigh: Callable[[V], int] = lambda value: 0,
    ) -> None:
        self._capacity = capacity
        self._budget = budget
        self._weigh = weigh
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._weights: dict[K, int] = {}
        self.weight = 0  # of every entry, in bytes

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        self._set_weight(key, self._weigh(value))
        self._shrink()

    def reweigh(self, key: K) -> None:
        """The value of `key` holds more (or less) than when it was put."""
        value = self._entries.get(key)
        if value is not None:
            self._set_weight(key, self._weigh(value))
            self._shrink()

    def pop(self, key: K) -> None:
        """Forget one entry, if held."""
        if self._entries.pop(key, None) is not None:
            self.weight -= self._weights.pop(key)

    def drop(self, doomed: Callable[[K], bool]) -> None:
        """Forget every entry whose key `doomed` accepts."""
        for key in [key for key in self._entries if doomed(key)]:
            self.pop(key)

    def values(self) -> list[V]:
        """Every entry, least recently used first (without touching their recency)."""
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def _set_weight(self, key: K, weight: int) -> None:
        self.weight += weight - self._weights.get(key, 0)
        self._weights[key] = weight

    def _shrink(self) -> None:
        entries = self._entries
        while len(entries) > self._capacity or (
            self._budget is not None and self.weight > self._budget and len(entries) > 1
        ):
            oldest = next(iter(entries))
            self.pop(oldest)
