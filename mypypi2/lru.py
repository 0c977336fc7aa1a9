"""A bounded least-recently-used map: what a worker remembers, never the truth."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        """Forget one entry, if held."""
        self._entries.pop(key, None)

    def drop(self, doomed: Callable[[K], bool]) -> None:
        """Forget every entry whose key `doomed` accepts."""
        for key in [key for key in self._entries if doomed(key)]:
            del self._entries[key]

    def values(self) -> list[V]:
        """Every entry, least recently used first (without touching their recency)."""
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
