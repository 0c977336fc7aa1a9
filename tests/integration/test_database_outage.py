"""PostgreSQL going away under running instances, on a server of the test's own (restarted
for real, also under load against `mypypi2 serve` with two workers) or on the shared one (a
full pool, a lost listener connection).

While the database is down, pages a worker holds are served (marked stale once past their
TTL) and every other request is a fast 503, readiness included (liveness stays 200: a
restart would not help); the pool and the purge listener come back by themselves, and
purges reach the workers again. A slow upstream or a
blocked statement never leaves a request hanging on the pool.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from mypypi2 import db
from mypypi2 import pages as pages_module
from mypypi2.config import Config, DatabaseConfig, RepositoryConfig
from mypypi2.db import KeptConnection
from mypypi2.freshness import DATABASE_RETRY_SECONDS
from mypypi2.pages import Pages
from mypypi2.queries.notifications import Purged, notify_purged
from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.postgres_server import PostgresServer
from tests.support.apps import StateSpy
from tests.support.cache import Clock, RunningCache, repository
from tests.support.database import scratch_database
from tests.support.http import Answer
from tests.support.http import get as http_get
from tests.support.process import Launch, clean_environ, write_config
from tests.support.waiting import eventually

log = logging.getLogger(__name__)
STALE = "X-Mypypi2-Stale"
# A request that hangs fails the test instead of the whole run (never reached when it passes).
HANG = aiohttp.ClientTimeout(total=60)


async def get(http: aiohttp.ClientSession, url: str) -> Answer:
    """Bounded by HANG: a request that hangs while PostgreSQL is away fails the test."""
    return await http_get(http, url, client_timeout=HANG)


class Instance(RunningCache):
    """A running cache whose Pages and purge listener the test can look at."""

    def __init__(self, config: Config, dsn: str, clock: Clock | None) -> None:
        self._state: list[dict[str, object]] = []
        super().__init__(config, dsn, clock, lambda app: StateSpy(app, self._state))

    async def start(self) -> None:
        await super().start()
        async with aiohttp.ClientSession() as http:
            await get(http, f"{self.url}/-/health")  # any request: the spy sees the state

    @property
    def pages(self) -> Pages:
        pages = self._state[0]["pages"]
        assert isinstance(pages, Pages)
        return pages

    @property
    def listener(self) -> KeptConnection:
        listener = self._state[0]["listener"]
        assert isinstance(listener, KeptConnection)
        return listener


@pytest.fixture
async def launch_instance(
    upstream: LocalUpstream, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Instance]]]:
    running: list[Instance] = []

    async def start(
        dsn: str,
        *repositories: RepositoryConfig,
        clock: Clock | None = None,
        database: DatabaseConfig | None = None,
    ) -> Instance:
        config = Config(
            data_dir=str(tmp_path / "data"),
            database=database or DatabaseConfig(),
            repositories=repositories or (repository("pypi", upstream),),
        )
        instance = Instance(config, dsn, clock)
        await instance.start()
        running.append(instance)
        return instance

    yield start
    for instance in running:
        await instance.stop()


async def is_ready(http: aiohttp.ClientSession, base: str) -> bool:
    return (await get(http, f"{base}/-/ready"))[0] == 200


async def send_purge(dsn: str, name: str) -> None:
    """What `mypypi2 purge pypi NAME` does, on a connection of our own."""
    connection = await asyncpg.connect(dsn)
    try:
        await pages_module.purge(connection, "pypi", [name])
        await notify_purged(connection, Purged("pypi", [name], files=False))
    finally:
        await connection.close()


# -- a real restart, on a server of our own ----------------------------------------------------


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.initialize()
    server.start()
    yield server
    server.remove()


@pytest.fixture
async def restartable(own_postgres: PostgresServer) -> AsyncIterator[str]:
    """A migrated database on the server this test may stop and start."""
    async with scratch_database(own_postgres.dsn, None) as dsn:
        await asyncio.to_thread(db.migrate, dsn)
        yield dsn
        if not own_postgres.running:  # a failed test must not leave it down for the next
            await asyncio.to_thread(own_postgres.start)


async def test_a_restart_serves_held_pages_and_fails_the_others_fast(
    launch_instance: Callable[..., Awaitable[Instance]],
    upstream: LocalUpstream,
    own_postgres: PostgresServer,
    restartable: str,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in ("held", "expired", "cold"):
        upstream.add(UpstreamProject(name, [UpstreamFile(f"{name}-1.0.tar.gz")]))
    clock = Clock()
    config = repository("pypi", upstream, ttl=60, stale_while_revalidate=0)
    cache = await launch_instance(restartable, config, clock=clock)
    base = f"{cache.url}/pypi/simple"
    caplog.set_level(logging.WARNING, logger="mypypi2.pages")
    _, _, expired = await get(http, f"{base}/expired/")
    clock.advance(50)
    _, _, held = await get(http, f"{base}/held/")
    clock.advance(20)  # "held" is within its TTL, "expired" past it

    await asyncio.to_thread(own_postgres.stop)
    try:
        during = {name: await get(http, f"{base}/{name}/") for name in ("held", "expired", "cold")}
        health = await get(http, f"{cache.url}/-/health")
        ready = await get(http, f"{cache.url}/-/ready")
    finally:
        await asyncio.to_thread(own_postgres.start)

    assert (during["held"][0], during["held"][2]) == (200, held)
    assert STALE not in during["held"][1]
    assert (during["expired"][0], during["expired"][2]) == (200, expired)
    assert during["expired"][1][STALE] == "database-unavailable"
    assert during["expired"][1]["Cache-Control"] == "max-age=0, public"
    status, headers, body = during["cold"]
    assert status == 503, body
    assert headers["Retry-After"] == "1"
    assert b"database unavailable" in body
    assert upstream.hits["/simple/cold/"] == 0  # failed before asking anyone
    assert health[0] == 200
    assert ready[0] == 503
    assert ready[2].startswith(b"not ready\ndatabase: "), ready[2]

    # The pool reconnects by itself: the first request after the restart is answered.
    status, headers, body = await get(http, f"{base}/cold/")
    assert status == 200, body
    clock.advance(DATABASE_RETRY_SECONDS + 1)
    status, headers, _ = await get(http, f"{base}/expired/")
    assert (status, headers.get(STALE)) == (200, None)
    assert upstream.hits["/simple/expired/"] == 2
    await eventually(lambda: is_ready(http, cache.url), "ready again")
    outage_logs = [r for r in caplog.records if "serving held pages stale" in r.getMessage()]
    assert len(outage_logs) == 1


async def test_purges_reach_the_workers_after_a_restart(
    launch_instance: Callable[..., Awaitable[Instance]],
    upstream: LocalUpstream,
    own_postgres: PostgresServer,
    restartable: str,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream.add(UpstreamProject("demo", [UpstreamFile("demo-1.0.tar.gz")]))
    cache = await launch_instance(restartable)  # a TTL of 600 s: nothing expires on its own
    url = f"{cache.url}/pypi/simple/demo/"
    assert (await get(http, url))[0] == 200

    caplog.set_level(logging.WARNING, logger="mypypi2.db")
    await asyncio.to_thread(own_postgres.stop)
    await asyncio.sleep(0.5)  # the outage lasts a while: several reconnection attempts fail
    await asyncio.to_thread(own_postgres.start)

    async def listening() -> bool:
        return cache.listener.connected and cache.listener.reconnections == 1

    await eventually(listening, "the listener reconnects")
    await send_purge(restartable, "demo")

    async def forgotten() -> bool:
        return cache.pages.cache.get(("pypi", "demo")) is None

    await eventually(forgotten, "the purge reaches the worker")
    assert (await get(http, url))[0] == 200
    assert upstream.hits["/simple/demo/"] == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "mypypi2.db"]
    assert sum("lost the database connection" in m for m in messages) == 1
    assert sum("listening to the database again" in m for m in messages) == 1


# -- a restart under load, against `mypypi2 serve` with two workers ---------------------------


@dataclass
class Outcome:
    kind: str  # "warm" or "cold"
    started: float  # time.monotonic()
    seconds: float
    status: int | str  # the status, or the exception's name


class Load:
    """Clients on keep-alive connections of their own (so each stays with one worker, which
    it warmed itself), alternating a warm request with a page never asked for before."""

    def __init__(self, base: str, warm: list[str], cold: Iterator[str]) -> None:
        self._base = base
        self._warm = warm
        self._cold = cold
        self.outcomes: list[Outcome] = []
        self._stop = asyncio.Event()

    async def client(self) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=HANG) as http:
            for path in self._warm * 2:  # the second time this worker knows it stored
                assert (await get(http, self._base + path))[0] == 200
            for turn in itertools.count():
                if self._stop.is_set():
                    return
                if turn % 2:
                    await self._ask(http, "cold", f"/pypi/simple/{next(self._cold)}/")
                else:
                    await self._ask(http, "warm", self._warm[turn // 2 % len(self._warm)])
                await asyncio.sleep(0.01)

    async def _ask(self, http: aiohttp.ClientSession, kind: str, path: str) -> None:
        started = time.monotonic()
        try:
            status: int | str = (await get(http, self._base + path))[0]
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        self.outcomes.append(Outcome(kind, started, time.monotonic() - started, status))

    def stop(self) -> None:
        self._stop.set()


async def test_a_restart_under_load_keeps_warm_requests_served_by_two_workers(
    launch: Launch,
    upstream: LocalUpstream,
    own_postgres: PostgresServer,
    restartable: str,
    tmp_path: Path,
) -> None:
    warm_projects = [f"warm-{number}" for number in range(4)]
    cold_projects = [f"cold-{number}" for number in range(5000)]
    for name in warm_projects + cold_projects:
        upstream.add(UpstreamProject(name, [UpstreamFile(f"{name}-1.0.tar.gz")]))
    warm = [f"/pypi/simple/{name}/" for name in warm_projects]
    warm += [f"/pypi/files/{name}/{name}-1.0.tar.gz" for name in warm_projects]
    write_config(
        tmp_path,
        {
            "data-dir": str(tmp_path / "data"),
            "database": {"url": restartable},
            "repositories": [{"name": "pypi", "upstream": upstream.url}],
        },
    )
    server = await launch(tmp_path, clean_environ(), "--workers", "2")
    load = Load(server.url, warm, iter(cold_projects))
    clients = [asyncio.create_task(load.client()) for _ in range(4)]
    try:
        await eventually(lambda: len(load.outcomes) >= 40, "the load is under way")
        await asyncio.to_thread(own_postgres.stop)
        down = time.monotonic()
        await asyncio.sleep(2)
        starting = time.monotonic()
        await asyncio.to_thread(own_postgres.start)
        up = time.monotonic()

        def cold_after_up() -> list[Outcome]:
            return [o for o in load.outcomes if o.kind == "cold" and o.started >= up]

        def served_again() -> bool:
            return sum(o.status == 200 for o in cold_after_up()) >= 20

        await eventually(served_again, "cold requests succeed again", polls=3000)
    finally:
        load.stop()
        await asyncio.gather(*clients)

    warm_statuses = Counter(o.status for o in load.outcomes if o.kind == "warm")
    cold = [o for o in load.outcomes if o.kind == "cold"]
    during = [o for o in cold if o.started >= down and o.started + o.seconds <= starting]
    first_success = next(o for o in cold_after_up() if o.status == 200)
    after = [o for o in cold if o.started >= first_success.started + first_success.seconds]
    assert set(warm_statuses) == {200}, warm_statuses
    assert {o.status for o in cold} <= {200, 503}, Counter(o.status for o in cold)
    assert during and {o.status for o in during} == {503}
    # Fast: nowhere near a client's timeout (the issue asks for it; a generous bound).
    assert max(o.seconds for o in during) < 5.0
    assert {o.status for o in after} == {200}, Counter(o.status for o in after)
    latencies = sorted(o.seconds for o in during)
    log.info(
        "PostgreSQL restart under load: %d warm requests, all 200; %d cold ones failed "
        "during the outage with 503 in %.1f ms median, %.1f ms max; the first cold "
        "success came %.2f s after PostgreSQL was back up",
        sum(warm_statuses.values()),
        len(during),
        latencies[len(latencies) // 2] * 1000,
        latencies[-1] * 1000,
        first_success.started + first_success.seconds - up,
    )
    assert await server.stop() == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()


# -- the shared server: a lost listener, a full pool, a slow upstream --------------------------


async def test_a_purge_sent_while_the_listener_was_away_is_not_missed(
    launch_instance: Callable[..., Awaitable[Instance]],
    upstream: LocalUpstream,
    postgres_dsn: str,
    database: str,
    http: aiohttp.ClientSession,
) -> None:
    upstream.add(UpstreamProject("demo", [UpstreamFile("demo-1.0.tar.gz")]))
    cache = await launch_instance(database)
    url = f"{cache.url}/pypi/simple/demo/"
    assert (await get(http, url))[0] == 200
    name = urlsplit(database).path.lstrip("/")
    maintenance = await asyncpg.connect(postgres_dsn)
    admin = await asyncpg.connect(database)
    try:
        # No new connection gets in (existing ones stay): the listener, cut off, cannot
        # come back before the purge is sent.
        await maintenance.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'mypypi2-listener'"
        )

        async def cut_off() -> bool:
            return not cache.listener.connected

        await eventually(cut_off, "the listener notices")
        await pages_module.purge(admin, "pypi", ["demo"])
        await notify_purged(admin, Purged("pypi", ["demo"], files=False))
        await maintenance.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()
        await maintenance.close()

    async def back() -> bool:
        return cache.listener.connected

    await eventually(back, "the listener reconnects")
    assert (await get(http, url))[0] == 200
    assert upstream.hits["/simple/demo/"] == 2  # the purge was honoured all the same


async def test_a_full_pool_is_a_fast_503_not_a_hang(
    launch_instance: Callable[..., Awaitable[Instance]],
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
) -> None:
    for name in ("first", "second"):
        upstream.add(UpstreamProject(name, [UpstreamFile(f"{name}-1.0.tar.gz")]))
    settings = DatabaseConfig(
        pool_min_size=1, pool_max_size=1, pool_acquire_timeout=0.5, statement_timeout=2.0
    )
    cache = await launch_instance(database, database=settings)
    base = f"{cache.url}/pypi/simple"
    blocker = await asyncpg.connect(database)
    try:
        # The one pooled connection waits on this lock inside the first request.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE projects IN ACCESS EXCLUSIVE MODE")
        first = asyncio.create_task(get(http, f"{base}/first/"))

        async def blocked() -> bool:
            return bool(
                await blocker.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            )

        await eventually(blocked, "the first request waits on the lock")
        second = await get(http, f"{base}/second/")
        health = await get(http, f"{cache.url}/-/health")
        ready = await get(http, f"{cache.url}/-/ready")
        first_answer = await first
        await transaction.rollback()
    finally:
        await blocker.close()

    assert second[0] == 503, second[2]
    assert b"no free connection" in second[2]
    assert health[0] == 200
    assert ready[0] == 503
    assert b"database: " in ready[2] and b"no free connection" in ready[2], ready[2]
    assert first_answer[0] == 503, first_answer[2]  # the statement timeout ended its wait
    assert upstream.hits["/simple/second/"] == 0
    # Once the lock is gone, everything works again.
    assert (await get(http, f"{base}/first/"))[0] == 200
    await eventually(lambda: is_ready(http, cache.url), "ready again")


async def test_a_slow_upstream_leaves_the_pool_to_everyone_else(
    launch_instance: Callable[..., Awaitable[Instance]],
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
) -> None:
    slow = [f"slow-{number}" for number in range(4)]
    gate = asyncio.Event()
    for name in [*slow, "quick"]:
        upstream.add(UpstreamProject(name, [UpstreamFile(f"{name}-1.0.tar.gz")]))
    for name in slow:
        upstream.fail(f"/simple/{name}/", Fault(gate=gate))
    settings = DatabaseConfig(pool_min_size=1, pool_max_size=2)
    cache = await launch_instance(database, database=settings)
    base = f"{cache.url}/pypi/simple"
    waiting = [asyncio.create_task(get(http, f"{base}/{name}/")) for name in slow]
    try:

        async def all_upstream() -> bool:
            return all(upstream.hits[f"/simple/{name}/"] == 1 for name in slow)

        await eventually(all_upstream, "every slow page is being asked")
        ready = await get(http, f"{cache.url}/-/ready")
        quick = await get(http, f"{base}/quick/")
    finally:
        gate.set()
        answers = await asyncio.gather(*waiting)

    assert ready[0] == 200, ready[2]
    assert quick[0] == 200, quick[2]
    assert [status for status, _, _ in answers] == [200] * len(slow)
