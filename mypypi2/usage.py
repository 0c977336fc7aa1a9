"""When this worker last served each stored object, batched for the eviction sweep.

Recording a use costs the request a dict lookup (and, once per object and flush, one
assignment): no database write per hit. What is kept is an object's first use since the
last flush; a task flushes the batch every `FLUSH_SECONDS` in one statement. So the time
PostgreSQL holds may be up to a flush interval older than the real last use, and reach it up
to a flush interval later (more while the database is away: a failed flush keeps its times
for the next one); the eviction's grace period is several flush intervals. Objects being
read right now (a stream through the service that may outlast any grace period) are
recorded as used at every flush until they are closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator

from mypypi2 import tasks
from mypypi2.clock import Clock
from mypypi2.queries import Executor, stored_uses

log = logging.getLogger(__name__)

FLUSH_SECONDS = 60.0


class LastUse:
    def __init__(self, db: Executor, *, clock: Clock = time.time) -> None:
        self._db = db
        self._clock = clock
        self._used: dict[str, float] = {}
        self._reading: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    def used(self, key: str) -> None:
        """The object `key` is being served now (the warm path calls this: keep it cheap).

        A hot object pays a lookup only: the clock is read for its first use per flush."""
        if key not in self._used:
            self._used[key] = self._clock()

    async def reading(self, key: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks` of object `key`, counted as used at every flush until they are closed."""
        self._reading[key] += 1
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            self._reading[key] -= 1
            if not self._reading[key]:
                del self._reading[key]
            self._used[key] = self._clock()

    async def flush(self) -> None:
        """Write the batch in one statement; on failure it is kept for the next flush."""
        now = self._clock()
        batch, self._used = self._used, {}
        batch.update(dict.fromkeys(self._reading, now))
        if not batch:
            return
        try:
            await stored_uses.record_uses(self._db, batch)
        except BaseException:
            for key, used_at in batch.items():  # newer uses recorded meanwhile win
                if self._used.get(key, 0.0) < used_at:
                    self._used[key] = used_at
            raise

    def start(self, every: float = FLUSH_SECONDS) -> None:
        self._task = asyncio.create_task(self._run(every))

    async def close(self) -> None:
        """Stop flushing, after one last flush of what is pending."""
        await tasks.stop(self._task)
        try:
            await self.flush()
        except Exception as exc:  # shutting down: the grace period covers what is lost
            log.warning("last uses of stored files not recorded at shutdown: %s", exc)

    async def _run(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.flush()
            except Exception as exc:  # the database is busy or away: next time
                log.warning("recording last uses of stored files: %s", exc)
