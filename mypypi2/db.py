"""PostgreSQL: schema migrations (yoyo, on psycopg), the asyncpg pool, and what its failures
mean.

Every way of not reaching the database (refused or dropped connections, a server shutting
down or starting up, no pooled connection free in time, a statement over its timeout)
becomes `DatabaseUnavailable` where it happens, in `Database.connection`: callers serve what
they hold or answer 503, never a traceback. Anything else PostgreSQL refuses is about the
values sent (`is_refusal`), which for upstream data means the page cannot be stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from yoyo import get_backend, read_migrations

from mypypi2.config import DatabaseConfig
from mypypi2.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
# asyncpg's classes are generic only to the type checker.
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
# What asyncpg raises when the server is down, going down, starting up, out of connection
# slots, or did not answer in time.
_OUTAGES: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, statement timeout
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    # How asyncpg reports a connection the server dropped under it (a statement sent
    # just after the server's farewell, a closed connection used).
    asyncpg.exceptions.InternalClientError,
    # Refused and reset sockets, and (as TimeoutError) pool acquire timeouts.
    OSError,
    # A connection asyncpg already knows to be closed.
    asyncpg.InterfaceError,
)
# Grace added to the statement timeout before the client gives up on its own: a server that
# stopped answering altogether never sends the timeout error.
_CLIENT_TIMEOUT_GRACE = 5.0


def migrations_dir() -> Path:
    """Top-level sql/: packaged into the wheel as mypypi2/migrations (see pyproject.toml),
    read in place from a checkout or an editable install."""
    packaged = _HERE / "migrations"
    return packaged if packaged.is_dir() else _HERE.parent / "sql"


def migrate(dsn: str) -> int:
    """Apply pending migrations under yoyo's lock; returns how many were applied."""
    backend = get_backend(_yoyo_uri(dsn))
    try:
        migrations = read_migrations(str(migrations_dir()))
        if not migrations:  # a broken install must not look like an up-to-date schema
            raise RuntimeError(f"no migrations found in {migrations_dir()}")
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    finally:
        backend.connection.close()
    return len(pending)


def _yoyo_uri(dsn: str) -> str:
    # yoyo picks its DB-API driver from the scheme; psycopg 3 is the one we ship.
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or did not answer in time."""
    return isinstance(exc, _OUTAGES)


def is_refusal(exc: BaseException) -> bool:
    """Whether `exc` says PostgreSQL (or the encoding on the way to it) refused the values
    sent: out of range, NUL in text, over an index's size limit, duplicates in one batch."""
    if isinstance(exc, asyncpg.PostgresError):
        return not is_outage(exc)
    return isinstance(exc, (ValueError, OverflowError, msgspec.MsgspecError))


class _OutagesInOneLine(logging.Filter):
    """asyncpg's pool logs every failed attempt to reopen its `min_size` connections with a
    traceback. In a database outage those failures are expected (and each request says its
    own): the line keeps the cause and drops the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_outage(exc):
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = ()
            record.exc_info = None
        return True


_ONE_LINE = _OutagesInOneLine()


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def create_pool(
    dsn: str, min_size: int, max_size: int, *, statement_timeout: float = 0.0
) -> asyncpg.Pool:
    """The pool; `statement_timeout` seconds (0: none) bound every statement, lock waits
    included, on the server and (with some grace) on the client."""
    logging.getLogger("asyncpg.pool").addFilter(_ONE_LINE)  # a second add is a no-op
    settings = {
        "application_name": "mypypi2",
        # A cache can lose its last few commits in a database crash: what they recorded
        # is fetched again. Not waiting for the WAL flush takes a disk sync off every
        # cold page and file a client waits for. (A stored file's bytes are synced
        # before its row says so, so a row never points at lost bytes.)
        "synchronous_commit": "off",
    }
    if statement_timeout > 0:
        settings["statement_timeout"] = str(int(statement_timeout * 1000))
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=statement_timeout + _CLIENT_TIMEOUT_GRACE if statement_timeout else None,
        server_settings=settings,
    )
    assert pool is not None
    return pool


class Database:
    """The pool, with a bound on the wait for a connection and failures translated."""

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self.pool = pool
        self._acquire_timeout = acquire_timeout

    @classmethod
    async def open(cls, dsn: str, settings: DatabaseConfig) -> Database:
        pool = await create_pool(
            dsn,
            settings.pool_min_size,
            settings.pool_max_size,
            statement_timeout=settings.statement_timeout,
        )
        return cls(pool, settings.pool_acquire_timeout)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection for a few statements; give it back before any slow work."""
        acquired = False
        try:
            async with self.pool.acquire(timeout=self._acquire_timeout) as connection:
                acquired = True
                yield connection
        except TimeoutError as exc:
            # A full pool, or a server that stopped answering (the client-side timeout).
            reason = (
                "a statement got no answer in time"
                if acquired
                else f"no free connection within {self._acquire_timeout:g} s"
            )
            raise DatabaseUnavailable(reason) from exc
        except _OUTAGES as exc:
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as connection, connection.transaction():
            yield connection

    async def ping(self) -> None:
        await self.fetchval("SELECT 1")

    # One statement on a connection of its own: a queries.Executor whose outages are
    # DatabaseUnavailable, like every other use of the pool.

    async def execute(self, query: str, *args: Any) -> str:
        async with self.connection() as connection:
            status: str = await connection.execute(query, *args)
            return status

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as connection:
            return await connection.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as connection:
            return await connection.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.connection() as connection:
            return await connection.fetchval(query, *args)


Setup = Callable[[asyncpg.Connection], Awaitable[None]]


class KeptConnection:
    """One dedicated connection (for LISTEN), re-established whenever it is lost.

    What was sent on a channel while it was down is lost: `on_reconnect` runs after every
    re-established connection so the caller can stop trusting what it holds. The loss and
    the recovery are logged once each, however long the outage.
    """

    def __init__(
        self,
        dsn: str,
        setup: Setup,
        on_reconnect: Callable[[], None],
        *,
        application_name: str = "mypypi2",
        first_retry: float = 0.05,
        max_retry: float = 2.0,
        probe_every: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._setup = setup
        self._on_reconnect = on_reconnect
        self._first_retry = first_retry
        self._max_retry = max_retry
        # A connection can die without a word (a dropped network path): ask it now and then.
        self._probe_every = probe_every
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reconnections = 0

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._lost.is_set()

    async def start(self) -> None:
        """Connect (failing like start-up does when the database is unreachable), then
        keep the connection up in the background."""
        await self._connect()
        self._task = asyncio.create_task(self._keep())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            self._connection.terminate()

    async def _connect(self) -> None:
        connection = await asyncpg.connect(
            self._dsn,
            timeout=self._probe_every,
            server_settings={"application_name": self._application_name},
        )
        try:
            await self._setup(connection)
        except BaseException:
            connection.terminate()
            raise
        self._lost = asyncio.Event()
        lost = self._lost
        connection.add_termination_listener(lambda _connection: lost.set())
        self._connection = connection

    async def _keep(self) -> None:
        while True:
            await self._until_lost()
            if self._connection is not None:
                self._connection.terminate()
                self._connection = None
            delay = self._first_retry
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._connect()
                    break
                except Exception as exc:  # whatever the reason, the answer is to try later
                    log.debug("database connection not back yet: %s", exc)
                    delay = min(delay * 2, self._max_retry)
            self.reconnections += 1
            log.warning("listening to the database again; purges sent meanwhile may be missed")
            self._on_reconnect()

    async def _until_lost(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), self._probe_every)
            except TimeoutError:
                if await self._answers():
                    continue
            log.warning("lost the database connection that listens for purges; reconnecting")
            return

    async def _answers(self) -> bool:
        assert self._connection is not None
        try:
            await self._connection.fetchval("SELECT 1", timeout=self._probe_every)
        except Exception:  # any failure of a one-line query means the connection is gone
            return False
        return True
