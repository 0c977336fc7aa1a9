"""Cross-worker signals over PostgreSQL LISTEN/NOTIFY: every worker of every replica hears."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from mypypi2.queries import Executor

PURGE_CHANNEL = "mypypi2_purge"
NOTIFY = "SELECT pg_notify($1, $2)"


class Purged(msgspec.Struct, frozen=True):
    """Pages (and maybe files) of a repository were purged; `projects` None means all."""

    repository: str
    projects: list[str] | None
    files: bool

    def covers(self, repository: str, project: str) -> bool:
        """Whether a page ("" for the project list) or its files fall under this purge."""
        if repository != self.repository:
            return False
        return self.projects is None or project in self.projects


async def notify_purged(db: Executor, purged: Purged) -> None:
    await db.execute(NOTIFY, PURGE_CHANNEL, msgspec.json.encode(purged).decode())


async def listen_purged(connection: asyncpg.Connection, on_purge: Callable[[Purged], None]) -> None:
    """Call `on_purge` for every purge, on this dedicated connection, until it closes."""

    def deliver(
        _connection: asyncpg.Connection | PoolConnectionProxy[asyncpg.Record],
        _pid: int,
        _channel: str,
        payload: object,
    ) -> None:
        assert isinstance(payload, str)
        on_purge(msgspec.json.decode(payload, type=Purged))

    await connection.add_listener(PURGE_CHANNEL, deliver)
