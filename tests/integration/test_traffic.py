"""The traffic sink's flushes into PostgreSQL and the status report read back from them:
tallies of several workers add up, a flush while the database is away is written once
later, and old rows are pruned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from mypypi2 import db
from mypypi2.config import Config, DatabaseConfig, RepositoryConfig, StorageConfig
from mypypi2.db import Database
from mypypi2.errors import DatabaseUnavailable
from mypypi2.observe import Outcome, RequestKind, RequestRecord, UpstreamRecord, UpstreamResult
from mypypi2.status import StatusReport
from mypypi2.traffic import FAILURES_KEPT, FAILURES_STORED, RETENTION_SECONDS, Traffic
from tests.postgres_server import PostgresServer
from tests.support.cache import Clock
from tests.support.database import scratch_database

CONFIG = Config(
    repositories=(
        RepositoryConfig(name="pypi", upstream="http://127.0.0.1:1/simple/", max_bytes=10**9),
        RepositoryConfig(name="private", upstream="http://reader:secret@127.0.0.1:2/simple/?t=x"),
    ),
    storage=StorageConfig(max_bytes=5 * 10**9),
)
# A fast pool: a test that sees the database away must not wait for it.
_POOL = DatabaseConfig(pool_min_size=0, pool_acquire_timeout=2.0)


def served(
    repository: str | None,
    project: str | None,
    outcome: Outcome,
    sent: int,
    kind: RequestKind = "file",
) -> RequestRecord:
    record = RequestRecord("id", "GET", "/", "", None, repository, project, kind, "pip", 0.0)
    record.outcome = outcome
    record.bytes_sent = sent
    record.status = 200
    return record


def fetched(
    repository: str, result: UpstreamResult, received: int, error: str | None = None
) -> UpstreamRecord:
    return UpstreamRecord(repository, "page", result, 0.25, received, error)


@pytest.fixture
async def database_handle(database: str) -> AsyncIterator[Database]:
    handle = await Database.open(database, _POOL)
    yield handle
    await handle.close()


async def test_the_tallies_of_two_workers_add_up_to_the_report(
    database_handle: Database, db: asyncpg.Connection
) -> None:
    clock = Clock()
    clock.now = (clock.now // 3600) * 3600 + 1800  # mid-hour: an hour ago is in today's window
    first = Traffic(database_handle, ["pypi", "private"], clock=clock)
    second = Traffic(database_handle, ["pypi", "private"], clock=clock)
    for _ in range(3):
        first.request(served("pypi", "Demo_Pkg", "hit", 100))
    first.request(served("pypi", "demo-pkg", "miss", 1000))
    first.upstream(fetched("pypi", "200", 5000))
    second.request(served("pypi", "demo-pkg", "revalidated", 10, kind="page"))
    second.request(served("pypi", "nope", "not-found", 0, kind="page"))  # no project row
    second.request(served("pypi", "other", "stale", 40, kind="page"))
    second.request(served("typo", "demo-pkg", "hit", 9))  # no such repository: not tallied
    second.request(served(None, None, "hit", 3, kind="other"))  # /-/health: not tallied
    second.upstream(fetched("private", "timeout", 0, "no answer in 30 s\0<b>"))
    await first.flush()
    await second.flush()
    # The same minute again: added to the row the two workers made.
    first.request(served("pypi", "demo-pkg", "error", 7))
    await first.flush()

    rows = await db.fetch("SELECT repository, requests, hits FROM traffic_minutes ORDER BY 1")
    assert [tuple(row) for row in rows] == [("private", 0, 0), ("pypi", 8, 3)]

    report = await StatusReport(database_handle, CONFIG, clock=clock).gather()
    pypi, private = report.repositories
    hour = pypi.last_hour.totals
    assert (hour.requests, hour.hits, hour.misses, hour.revalidated, hour.stale) == (8, 3, 1, 1, 1)
    assert (hour.not_found, hour.errors) == (1, 1)
    assert hour.bytes_served == 3 * 100 + 1000 + 10 + 40 + 7
    assert (hour.bytes_fetched, hour.upstream_requests, hour.upstream_failures) == (5000, 1, 0)
    assert pypi.last_hour.hit_ratio == 5 / 6  # hits, revalidated and stale of 6 with content
    assert pypi.last_hour.buckets[-1].requests == 8 and pypi.last_day.totals.requests == 8
    assert [(p.project, p.requests, p.bytes_served) for p in pypi.top_projects] == [
        ("demo-pkg", 5, 1310),
        ("other", 1, 40),
    ]
    assert pypi.upstream.state == "ok" and pypi.upstream.last_success == report.generated_at
    assert pypi.storage.max_bytes == 10**9 and report.storage.max_bytes == 5 * 10**9

    assert private.last_hour.hit_ratio is None
    assert private.last_hour.totals.upstream_failures == 1
    assert private.upstream.state == "failing"
    assert private.upstream.url == "http://127.0.0.1:2/simple/"  # no credentials, no query
    [failure] = private.upstream.failures
    assert (failure.kind, failure.result, failure.error) == (
        "page",
        "timeout",
        "no answer in 30 s<b>",
    )

    # An hour later, the last hour is empty and the day still holds it all; an older success
    # flushed late (another worker's) does not replace the newer one.
    succeeded = pypi.upstream.last_success
    clock.advance(3600)
    late = Traffic(database_handle, ["pypi"], clock=lambda: clock.now - 7200)
    late.upstream(fetched("pypi", "304", 0))
    await late.flush()
    later = await StatusReport(database_handle, CONFIG, clock=clock).gather()
    assert later.repositories[0].last_hour.totals.requests == 0
    assert later.repositories[0].last_day.totals.requests == 8
    assert later.repositories[0].upstream.last_success == succeeded


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.initialize()
    server.start()
    yield server
    server.remove()


async def test_a_flush_while_the_database_is_down_is_written_once_when_it_is_back(
    own_postgres: PostgresServer,
) -> None:
    async with scratch_database(own_postgres.dsn, None) as dsn:
        await asyncio.to_thread(db.migrate, dsn)
        database = await Database.open(dsn, _POOL)
        try:
            traffic = Traffic(database, ["pypi"])
            traffic.request(served("pypi", "demo", "hit", 100))
            traffic.upstream(fetched("pypi", "5xx", 0, "upstream answered 503"))
            await asyncio.to_thread(own_postgres.stop)
            try:
                with pytest.raises(DatabaseUnavailable):
                    await traffic.flush()
                traffic.request(served("pypi", "demo", "miss", 1000))
                with pytest.raises(DatabaseUnavailable):
                    await traffic.flush()
            finally:
                await asyncio.to_thread(own_postgres.start)
            await traffic.flush()
            await traffic.flush()  # nothing left over to write twice
            report = await StatusReport(database, CONFIG).gather()
        finally:
            await database.close()
    pypi = report.repositories[0]
    totals = pypi.last_hour.totals
    assert (totals.requests, totals.hits, totals.misses, totals.bytes_served) == (2, 1, 1, 1100)
    assert [(p.project, p.requests) for p in pypi.top_projects] == [("demo", 2)]
    assert [f.error for f in pypi.upstream.failures] == ["upstream answered 503"]


async def test_pruning_forgets_old_traffic_and_all_but_the_latest_failures(
    database_handle: Database, db: asyncpg.Connection
) -> None:
    clock = Clock()
    traffic = Traffic(database_handle, ["pypi"], clock=clock)
    traffic.request(served("pypi", "old", "hit", 1))
    traffic.upstream(fetched("pypi", "timeout", 0, "old"))
    await traffic.flush()
    clock.advance(RETENTION_SECONDS + 3600)
    traffic.request(served("pypi", "new", "hit", 1))
    flushes = FAILURES_STORED // FAILURES_KEPT + 1
    for flush in range(flushes):
        for number in range(FAILURES_KEPT + 1):  # one more than a flush keeps
            traffic.upstream(fetched("pypi", "timeout", 0, f"{flush}.{number}"))
            clock.advance(1)
        await traffic.flush()
    assert await db.fetchval("SELECT count(*) FROM upstream_errors") == 1 + flushes * FAILURES_KEPT

    await traffic.prune()
    assert await db.fetchval("SELECT sum(requests) FROM traffic_minutes") == 1  # the new one
    assert await db.fetchval("SELECT array_agg(project) FROM traffic_projects") == ["new"]
    errors = await db.fetch("SELECT error FROM upstream_errors ORDER BY at DESC")
    newest = [f"{flush}.{n}" for flush in range(flushes) for n in range(1, FAILURES_KEPT + 1)]
    assert [row["error"] for row in errors] == newest[::-1][:FAILURES_STORED]
