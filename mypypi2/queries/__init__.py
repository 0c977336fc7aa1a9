"""SQL, one module per table; functions take any Executor (pool, connection, transaction)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

import msgspec


class Executor(Protocol):
    """What query functions need: an asyncpg pool, connection or transaction."""

    async def execute(self, query: str, *args: Any) -> str: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


# The columns of a page row (projects or project_lists) that PageState reads, but `found`.
STATE_COLUMNS = (
    "revision, changed_at, checked_at, etag, last_modified, last_serial, content_hash, purged"
)


class PageState(msgspec.Struct, frozen=True):
    """What the freshness decision needs of a stored page, without its content."""

    found: bool
    revision: int
    changed_at: dt.datetime
    checked_at: dt.datetime
    etag: str | None
    last_modified: str | None
    last_serial: int | None
    content_hash: bytes | None
    purged: bool  # `mypypi2 purge` asked for a refetch
