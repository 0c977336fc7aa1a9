"""Fixtures shared by the integration tests: PostgreSQL, a local upstream, a running cache.

PostgreSQL comes from MYPYPI2_TEST_DATABASE_URL when set, otherwise from the embedded
server started once per run. A template database is migrated once; every test gets its own
clone, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from starlette.types import ASGIApp

from mypypi2 import embedded
from mypypi2.clock import Clock as ClockFunction
from mypypi2.config import Config, RepositoryConfig, ServerConfig, StorageConfig
from mypypi2.db import migrate
from tests.clients import APP_WHEEL, LIB_OLD_SDIST, LIB_SDIST, LIB_WHEEL, TOOL_SDIST, ProxyTrap
from tests.local_upstream import LocalUpstream, UpstreamProject
from tests.support.cache import RunningCache, StartCache, repository
from tests.support.database import scratch_database, with_database
from tests.support.process import Launch, Launcher

_TEMPLATE = f"mypypi2_template_{os.getpid()}"


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A maintenance DSN of a running server, with a migrated template database on it."""
    # Not under pytest's basetemp: a concurrent pytest run prunes old basetemps, and the
    # embedded server's socket lives in its directory.
    base = os.environ.get("MYPYPI2_TEST_DATABASE_URL") or embedded.start(
        Path(tempfile.mkdtemp(prefix="mypypi2-test-postgres-"))
    )

    async def create_template() -> None:
        connection = await asyncpg.connect(base)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{_TEMPLATE}"')
            await connection.execute(f'CREATE DATABASE "{_TEMPLATE}"')
        finally:
            await connection.close()

    asyncio.run(create_template())
    migrate(with_database(base, _TEMPLATE))
    yield base

    async def drop_template() -> None:
        connection = await asyncpg.connect(base)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop_template())


@pytest.fixture
async def database(postgres_dsn: str) -> AsyncIterator[str]:
    """The DSN of a fresh, migrated database for this test alone."""
    async with scratch_database(postgres_dsn, _TEMPLATE) as dsn:
        yield dsn


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's database, for looking at the rows the cache wrote."""
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


@pytest.fixture
async def upstream() -> AsyncIterator[LocalUpstream]:
    server = LocalUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the tests; its default pool (100) keeps 50 requests in flight."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def start_cache(
    database: str, upstream: LocalUpstream, tmp_path: Path
) -> AsyncIterator[StartCache]:
    """Start caches on this test's database; by default one repository "pypi" on `upstream`."""
    running: list[RunningCache] = []

    async def start(
        *repositories: RepositoryConfig,
        clock: ClockFunction | None = None,
        base_url: str = "",
        storage: StorageConfig | None = None,
        offline: bool = False,
        wrap: Callable[[ASGIApp], ASGIApp] | None = None,
        store_pages_above: int | None = None,
    ) -> RunningCache:
        threshold = {} if store_pages_above is None else {"store_pages_above": store_pages_above}
        server = ServerConfig(base_url=base_url, **threshold)  # type: ignore[arg-type]
        config = Config(
            data_dir=str(tmp_path / "data"),
            offline=offline,
            server=server,
            storage=storage or StorageConfig(),
            repositories=repositories or (repository("pypi", upstream),),
        )
        cache = RunningCache(config, database, clock, wrap)
        await cache.start()
        running.append(cache)
        return cache

    yield start
    for cache in running:
        await cache.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A local S3-compatible server (moto in server mode), spoken to over HTTP."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    assert server._server is not None
    yield f"http://127.0.0.1:{server._server.server_port}"
    server.stop()


@pytest.fixture
def s3_storage(s3_endpoint: str) -> StorageConfig:
    """S3 settings for a fresh bucket of this test's own (redirects on, as by default)."""
    import boto3

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket=bucket)
    return StorageConfig(
        backend="s3",
        bucket=bucket,
        prefix="mirror",
        endpoint_url=s3_endpoint,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        addressing_style="path",
    )


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start `mypypi2 serve` in a directory; every server is stopped when the test ends."""
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        await launcher.stop_all()


@pytest.fixture
async def proxy_trap() -> AsyncIterator[ProxyTrap]:
    """Where any client request that tries to leave loopback ends up (and is refused)."""
    trap = ProxyTrap()
    await trap.start()
    yield trap
    await trap.stop()


@pytest.fixture
def tree(upstream: LocalUpstream) -> None:
    """The small dependency tree of tests/clients.py, on the local upstream."""
    upstream.add(UpstreamProject("app", [APP_WHEEL]))
    # One project from an HTML upstream: clients see the cache's rendering either way.
    upstream.add(UpstreamProject("lib", [LIB_OLD_SDIST, LIB_WHEEL, LIB_SDIST], format="html"))
    upstream.add(UpstreamProject("tool", [TOOL_SDIST]))
