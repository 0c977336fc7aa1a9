"""In-process single flight: concurrent callers for one key share one execution.

The first caller's coroutine becomes a task; later callers for the same key await that
same task. The task is shielded, so a client that disconnects (cancelling its own await)
never cancels the work the others wait for. Every waiter sees the result or the exception.
The key is dropped when the task ends: this is not a cache, the database is the memory.
Across processes the same job is done by lease rows in PostgreSQL (queries/leases.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Coalescer(Generic[K, T]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[T]] = {}

    async def run(self, key: K, make: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._running[key] = task
            task.add_done_callback(lambda _: self._forget(key, task))
        return await asyncio.shield(task)

    def _forget(self, key: K, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: a failure with no waiter left is not "lost"
