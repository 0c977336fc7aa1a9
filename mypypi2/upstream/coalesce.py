"""In-process single flight: concurrent callers for one key share one execution.

The first caller's coroutine becomes a task; later callers for the same key await that
same task. The task is shielded, so a client that disconnects (cancelling its own await)
never cancels the work the others wait for. Every waiter sees the result or the exception.
The key is dropped when the task ends: this is not a cache, the database is the memory.
Across processes the same job is done by lease rows in PostgreSQL (queries/leases.py).

The task is an `observe.Fill`: how it answered (`observe.answered_as` inside it) is taken
by every caller once its await returns, in the caller's own context, and the callers that
joined a task already running are counted as coalesced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from mypypi2 import observe

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Coalescer(Generic[K, T]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[tuple[T, observe.Fill]]] = {}

    async def run(self, key: K, make: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(_filled(make))
            self._running[key] = task
            task.add_done_callback(lambda _: self._forget(key, task))
        else:
            observe.joined()
        result, fill = await asyncio.shield(task)
        observe.answered_by(fill)
        return result

    def _forget(self, key: K, task: asyncio.Task[tuple[T, observe.Fill]]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: a failure with no waiter left is not "lost"


async def _filled(make: Callable[[], Awaitable[T]]) -> tuple[T, observe.Fill]:
    # Set in the task's own copy of the context: the requests awaiting it never see it.
    fill = observe.Fill()
    observe.filling.set(fill)
    return await make(), fill
