"""Replicas on several hosts: a download led on one streams to the clients of the others
through the leader's relay (relay.py), with one upstream GET.

- In this process: caches with advertise URLs and spools of their own, sharing a bucket,
  are hosts of their own to each other: the relay is used, authenticated, and a bad
  download cuts every replica's clients short.
- In network namespaces (root only): three `mypypi2 serve` replicas, each in a namespace
  of its own with a spool of its own, behind nginx, sharing one PostgreSQL and one moto
  server: 60 cold clients, one upstream GET, every first byte within a second of the
  upstream's; the leading replica killed mid-download, and a retry that succeeds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from mypypi2 import relay
from mypypi2.config import ClusterConfig, Config, StorageConfig
from tests.local_upstream import Fault, LocalUpstream, UpstreamProject
from tests.support.cache import RunningCache, free_port, repository
from tests.support.files import (
    SDIST,
    Store,
    assert_nothing_stored,
    attempt,
    fetch,
    file_row,
    our_path,
    s3_store,
    upstream_path,
    wait_stored,
)
from tests.support.waiting import eventually

SECRET = "a-secret-of-the-test-cluster"
SIZE = len(SDIST.content)


class RelayRequests:
    """Counts the relay requests a cache has received."""

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"].startswith(relay.RELAY_PATH):
                self.count += 1
            await app(scope, receive, send)

        return counted


StartHost = Callable[..., Awaitable[tuple[RunningCache, Store]]]


@pytest.fixture
async def start_host(
    database: str, upstream: LocalUpstream, s3_storage: StorageConfig, tmp_path: Path
) -> AsyncIterator[StartHost]:
    """Start a cache that looks like a host of its own: its own advertise URL and spool,
    the bucket shared (streamed through, never a redirect)."""
    running: list[RunningCache] = []
    storage = msgspec.structs.replace(s3_storage, redirect=False)

    async def start(
        secret: str | None = SECRET, wrap: Callable[[ASGIApp], ASGIApp] | None = None
    ) -> tuple[RunningCache, Store]:
        port = free_port()
        store = s3_store(storage, tmp_path / f"host-{port}", "s3-stream")
        config = Config(
            data_dir=str(store.spool_dir.parent),
            storage=storage,
            cluster=ClusterConfig(secret=secret, advertise_url=f"http://127.0.0.1:{port}"),
            repositories=(repository("pypi", upstream),),
        )
        cache = RunningCache(config, database, None, wrap, port=port)
        await cache.start()
        running.append(cache)
        return cache, store

    yield start
    for cache in running:
        await cache.stop()


async def no_spool_left(*stores: Store) -> None:
    # A follower lets go of its own spool at its next look after the commit.
    def empty() -> bool:
        return all(store.spooled() == [] for store in stores)

    await eventually(empty, "every spool removed")


async def test_a_follower_on_another_host_streams_through_the_leaders_relay(
    start_host: StartHost,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(upstream_path(SDIST), Fault(slow_chunk=16 * 1024, slow_delay=0.05))
    relays = RelayRequests()
    leader, leader_store = await start_host(wrap=relays.wrap)
    follower, follower_store = await start_host()
    assert (await fetch(http, leader.url + "/pypi/simple/demo/")).status == 200

    leading = asyncio.create_task(attempt(http, leader.url + our_path(SDIST)))
    await eventually(lambda: upstream.hits[upstream_path(SDIST)] == 1, "leader asks")
    first_chunk = asyncio.Event()
    following = asyncio.create_task(attempt(http, follower.url + our_path(SDIST), first_chunk))
    await asyncio.wait_for(first_chunk.wait(), timeout=30)

    # Bytes reached the other host's client while the upstream was still sending.
    assert upstream.completed[upstream_path(SDIST)] == 0
    led, followed = await leading, await following
    assert (led.status, led.error, led.body) == (200, None, SDIST.content)
    assert (followed.status, followed.error, followed.body) == (200, None, SDIST.content)
    assert followed.headers["Content-Length"] == str(SIZE)
    assert relays.count >= 1
    assert upstream.hits[upstream_path(SDIST)] == 1
    row = await wait_stored(db, SDIST)
    assert row["stored_sha256"] == SDIST.sha256
    assert leader_store.objects() == [leader_store.key(SDIST)]
    await no_spool_left(leader_store, follower_store)


async def test_without_a_secret_no_replica_relays(
    start_host: StartHost,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(upstream_path(SDIST), Fault(slow_chunk=64 * 1024, slow_delay=0.05))
    relays = RelayRequests()
    leader, _ = await start_host(secret=None, wrap=relays.wrap)
    follower, _ = await start_host(secret=None)
    assert (await fetch(http, leader.url + "/pypi/simple/demo/")).status == 200

    leading = asyncio.create_task(attempt(http, leader.url + our_path(SDIST)))
    await eventually(lambda: upstream.hits[upstream_path(SDIST)] == 1, "leader asks")
    # (Here the follower tails the leader's spool by its path: one machine, one disk.)
    followed = await attempt(http, follower.url + our_path(SDIST))

    assert (followed.status, followed.error, followed.body) == (200, None, SDIST.content)
    assert ((await leading).status, relays.count) == (200, 0)
    assert upstream.hits[upstream_path(SDIST)] == 1
    file_id = (await file_row(db, SDIST.filename))["id"]
    download: uuid.UUID = await db.fetchval("SELECT attempt FROM file_downloads")
    assert await db.fetchval("SELECT relay_url FROM file_downloads") is None
    token = relay.token(SECRET, file_id, download)
    refused = await fetch(
        http,
        f"{leader.url}{relay.RELAY_PATH}/{file_id}/{download.hex}",
        {"Authorization": f"Bearer {token}"},
    )
    assert refused.status == 404


async def test_the_relay_answers_only_with_the_downloads_token(
    start_host: StartHost,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    leader, _ = await start_host()
    assert (await attempt(http, leader.url + our_path(SDIST))).body == SDIST.content
    file_id = (await file_row(db, SDIST.filename))["id"]
    download: uuid.UUID = await db.fetchval("SELECT attempt FROM file_downloads")
    assert await db.fetchval("SELECT relay_url FROM file_downloads") == leader.url
    url = f"{leader.url}{relay.RELAY_PATH}/{file_id}/{download.hex}"
    right = relay.token(SECRET, file_id, download)

    for token in (None, "", relay.token("another-secret-entirely", file_id, download), right[:-1]):
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        refused = await fetch(http, url, headers)
        assert (refused.status, refused.body) == (404, b"not found\n")
    another = relay.token(SECRET, file_id, uuid.uuid4())
    assert (await fetch(http, url, {"Authorization": f"Bearer {another}"})).status == 404

    whole = await fetch(http, url, {"Authorization": f"Bearer {right}"})
    tail = await fetch(http, url + "?offset=1000", {"Authorization": f"Bearer {right}"})

    assert (whole.status, whole.body) == (200, SDIST.content)
    assert (tail.status, tail.body) == (200, SDIST.content[1000:])
    assert tail.headers["Content-Length"] == str(SIZE - 1000)


async def test_a_bad_download_cuts_every_hosts_clients_short_and_a_retry_succeeds(
    start_host: StartHost,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    # The right length, one byte changed: only the hash tells, once every byte is in.
    upstream.fail(
        upstream_path(SDIST),
        Fault(corrupt=True, slow_chunk=32 * 1024, slow_delay=0.05, times=1),
    )
    leader, leader_store = await start_host()
    follower, follower_store = await start_host()
    assert (await fetch(http, leader.url + "/pypi/simple/demo/")).status == 200

    leading = asyncio.create_task(attempt(http, leader.url + our_path(SDIST)))
    await eventually(lambda: upstream.hits[upstream_path(SDIST)] == 1, "leader asks")
    followed = await attempt(http, follower.url + our_path(SDIST))
    led = await leading

    for broken in (led, followed):
        assert broken.status == 200
        assert broken.error is not None
        assert len(broken.body) < SIZE
    await no_spool_left(leader_store, follower_store)
    await assert_nothing_stored(db, leader_store, SDIST)

    retried = await attempt(http, follower.url + our_path(SDIST))

    assert (retried.status, retried.error, retried.body) == (200, None, SDIST.content)
    assert upstream.hits[upstream_path(SDIST)] == 2
