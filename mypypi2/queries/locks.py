"""Session-level advisory locks: how workers and replicas agree on one upstream fetch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mypypi2.queries import Executor

# hashtextextended gives a 64-bit key from any text; a collision only serializes two
# unrelated refreshes, it never merges them.
LOCK = "SELECT pg_advisory_lock(hashtextextended($1, 0))"
UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"


@asynccontextmanager
async def held(connection: Executor, key: str) -> AsyncIterator[None]:
    """Hold the lock named `key` on this connection (session level, outside transactions)."""
    await connection.execute(LOCK, key)
    try:
        yield
    finally:
        await connection.execute(UNLOCK, key)


async def try_acquire(connection: Executor, key: str) -> bool:
    """Take the lock named `key` if nobody holds it; the caller must `release` it."""
    acquired: bool = await connection.fetchval(TRY_LOCK, key)
    return acquired


async def release(connection: Executor, key: str) -> None:
    await connection.execute(UNLOCK, key)
