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
import contextlib
import functools
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import msgspec
import pytest
from aiohttp import web
from starlette.types import ASGIApp, Receive, Scope, Send

from mypypi2 import relay
from mypypi2.config import ClusterConfig, Config, StorageConfig
from mypypi2.db import migrate
from tests.local_upstream import Fault, LocalUpstream, UpstreamProject
from tests.support import downloads, netns
from tests.support.cache import RunningCache, free_port, repository
from tests.support.database import admin, with_database
from tests.support.downloads import Received
from tests.support.files import (
    SDIST,
    Store,
    assert_nothing_stored,
    attempt,
    content,
    fetch,
    file_row,
    our_path,
    s3_client,
    s3_store,
    upstream_path,
    wait_stored,
)
from tests.support.netns import Forward, Namespaces
from tests.support.process import Server, clean_environ, open_logs, write_config
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


# -- in network namespaces: three replicas behind nginx ----------------------------------------

NGINX = Path("/usr/sbin/nginx")
REPLICAS = 3
CLIENTS = 60
BIG = 20 * 1024 * 1024
CHUNK = 256 * 1024
# The upstream is slow so that delays are measurable: headers at once, then silence (every
# client has asked by then), then about 5 MB/s.
HEAD_DELAY = 2.0
CHUNK_DELAY = 0.05
# The bound: every client's first byte within a second of the upstream's.
FIRST_BYTE_BOUND = 1.0
# Bounds on waiting, so that a hang fails the test instead of blocking CI.
CLIENT_SECONDS = 60.0


@dataclass
class SlowUpstream:
    """An index with one project on the host side of the bridge, sending files slowly; it
    notes when it sent each download's first byte (this process's monotonic clock)."""

    address: str
    files: dict[str, bytes]
    gets: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    first_bytes: dict[str, list[float]] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/simple/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/simple/demo/", self._page)
        app.router.add_get("/files/demo/{filename}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.address, 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _page(self, request: web.Request) -> web.Response:
        entries = [
            {
                "filename": name,
                "url": f"../../files/demo/{name}",
                "hashes": {"sha256": hashlib.sha256(content).hexdigest()},
                "size": len(content),
            }
            for name, content in self.files.items()
        ]
        page = {"meta": {"api-version": "1.1"}, "name": "demo", "files": entries}
        return web.Response(
            body=msgspec.json.encode(page), content_type="application/vnd.pypi.simple.v1+json"
        )

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["filename"]
        content = self.files[name]
        self.gets[name] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(content)
        await response.prepare(request)
        if name != WARM_UP:
            await asyncio.sleep(HEAD_DELAY)
        try:
            for offset in range(0, len(content), CHUNK):
                if offset == 0:
                    self.first_bytes.setdefault(name, []).append(time.monotonic())
                await response.write(content[offset : offset + CHUNK])
                self.sent[name] += len(content[offset : offset + CHUNK])
                await asyncio.sleep(CHUNK_DELAY)
            await response.write_eof()
        except ConnectionError:  # the leader was killed
            pass
        return response


@pytest.fixture(scope="module")
def network() -> Iterator[Namespaces]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"multi-host tests: {reason}")
    if not NGINX.exists():
        pytest.skip(f"multi-host tests: no nginx at {NGINX}")
    namespaces = Namespaces(REPLICAS)
    namespaces.create()
    try:
        yield namespaces
    finally:
        namespaces.remove()


@pytest.fixture(scope="module")
async def postgres_forward(network: Namespaces, postgres_dsn: str) -> AsyncIterator[str]:
    """The test PostgreSQL (on loopback only) as the replicas reach it: its maintenance DSN
    on the host side of the bridge."""
    parts = urlsplit(postgres_dsn)
    if parts.hostname is None or parts.port is None:
        pytest.skip(f"multi-host tests: PostgreSQL at {postgres_dsn!r} is not on TCP")
    forward = Forward(parts.hostname, parts.port)
    port = await forward.start(network.host_address)
    try:
        netloc = f"{parts.username or 'postgres'}@{network.host_address}:{port}"
        yield urlunsplit(parts._replace(netloc=netloc))
    finally:
        await forward.stop()


@pytest.fixture(scope="module")
def shared_s3(network: Namespaces) -> Iterator[str]:
    """The replicas' bucket server (moto), on the host side of the bridge."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=network.host_address, port=0, verbose=False)
    server.start()
    assert server._server is not None
    try:
        yield f"http://{network.host_address}:{server._server.server_port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def balancer(network: Namespaces, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """nginx on the host's loopback, round robin over the replicas; yields its directory
    (the URL is in `url`, the upstream each request went to in `access.log`)."""
    directory = tmp_path_factory.mktemp("nginx")
    port = free_port()
    servers = "\n".join(f"server {address}:8000;" for address in network.addresses)
    temp = " ".join(
        f"{kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (directory / "nginx.conf").write_text(
        f"""
        worker_processes 1;
        daemon off;
        pid {directory / "nginx.pid"};
        error_log {directory / "error.log"} warn;
        events {{ worker_connections 1024; }}
        http {{
            log_format upstreams '$upstream_addr $status $request_uri';
            access_log {directory / "access.log"} upstreams;
            {temp}
            upstream replicas {{ {servers} }}
            server {{
                listen 127.0.0.1:{port};
                location / {{
                    proxy_pass http://replicas;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_buffering off;
                    proxy_buffer_size 256k;
                    proxy_buffers 4 256k;
                    proxy_busy_buffers_size 256k;
                    proxy_connect_timeout 2s;
                    proxy_read_timeout 30s;
                }}
            }}
        }}
        """
    )
    (directory / "url").write_text(f"http://127.0.0.1:{port}")
    process = subprocess.Popen(
        [str(NGINX), "-p", str(directory), "-c", str(directory / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, process)
        yield directory
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert process.poll() is None, "nginx exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nginx never listened")


@dataclass
class Cluster:
    replicas: list[Server]
    addresses: list[str]
    url: str  # the balancer's
    dsn: str
    storage: StorageConfig
    upstream: SlowUpstream
    access_log: Path

    def objects(self, filename: str) -> list[str]:
        """The keys of stored copies of `filename` (the tests share the bucket)."""
        listing = s3_client(self.storage).list_objects_v2(Bucket=self.storage.bucket)
        keys = [item["Key"] for item in listing.get("Contents", [])]
        return [key for key in keys if key.endswith("/" + filename)]

    def served_by(self, path: str) -> Counter[str]:
        """How many requests for `path` the balancer sent to each replica address."""
        lines = self.access_log.read_text().splitlines()
        return Counter(
            line.split()[0].rsplit(":", 1)[0] for line in lines if line.endswith(" " + path)
        )


LEADER_OF = """
SELECT d.relay_url FROM file_downloads d JOIN files f ON f.id = d.file_id WHERE f.filename = $1
"""
COLD = "demo-1.0.tar.gz"
KILLED = "demo-2.0.tar.gz"
WARM_UP = "demo-0.1.tar.gz"  # small and sent at once


@functools.cache
def big_files() -> dict[str, bytes]:
    """Made when a test needs them, not whenever the module is collected."""
    return {
        COLD: content(BIG, seed=11),
        KILLED: content(BIG, seed=12),
        WARM_UP: content(CHUNK, seed=13),
    }


@pytest.fixture(scope="module")
async def cluster(
    network: Namespaces,
    postgres_dsn: str,
    postgres_forward: str,
    shared_s3: str,
    balancer: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    """Three `mypypi2 serve` replicas, one per namespace, on a database and a bucket of
    their own; shared by the module's tests (they start slowly on a busy machine), each
    test with a file of its own. The kill test comes last: it leaves a replica dead."""
    name = f"multi_host_{uuid.uuid4().hex[:12]}"
    await admin(postgres_dsn, f'CREATE DATABASE "{name}"')
    dsn = with_database(postgres_dsn, name)
    await asyncio.to_thread(migrate, dsn)  # once, before three replicas start at once
    tmp_path = tmp_path_factory.mktemp("replicas")
    storage = StorageConfig(
        backend="s3",
        bucket=f"multi-host-{uuid.uuid4().hex[:12]}",
        endpoint_url=shared_s3,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        addressing_style="path",
        redirect=False,  # clients through the balancer, whatever the state of the file
    )
    s3_client(storage).create_bucket(Bucket=storage.bucket)
    upstream = SlowUpstream(network.host_address, big_files())
    await upstream.start()
    replicas: list[Server] = []
    try:
        replicas = list(
            await asyncio.gather(
                *(
                    _start_replica(
                        network,
                        index,
                        with_database(postgres_forward, name),
                        storage,
                        upstream,
                        tmp_path,
                    )
                    for index in range(REPLICAS)
                )
            )
        )
        cluster = Cluster(
            replicas,
            network.addresses,
            (balancer / "url").read_text(),
            dsn,
            storage,
            upstream,
            balancer / "access.log",
        )
        await _warm_up(cluster)
        yield cluster
    finally:
        # Killed: how they stop is not what these tests are about, and it is quick.
        for replica in replicas:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(replica.process.pid, signal.SIGKILL)
            await replica.process.wait()
        await upstream.stop()
        await admin(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _start_replica(
    network: Namespaces,
    index: int,
    dsn: str,
    storage: StorageConfig,
    upstream: SlowUpstream,
    tmp_path: Path,
) -> Server:
    directory = tmp_path / f"replica-{index}"
    data = directory / "data"  # a disk of the replica's own (the spool)
    data.mkdir(parents=True)
    write_config(
        directory,
        {
            "data-dir": str(data),
            "database": {"url": dsn, "pool-max-size": 5},
            "storage": {
                key: value
                for key, value in msgspec.to_builtins(storage).items()
                if value is not None
            },
            # No advertise-url: derived from the address the replica listens on.
            "cluster": {"secret": SECRET},
            "repositories": [{"name": "pypi", "upstream": upstream.url}],
        },
    )
    address = network.addresses[index]
    argv = network.command(
        index,
        str(data),
        sys.executable,
        "-m",
        "mypypi2",
        "serve",
        "--host",
        address,
        "--port",
        "8000",
        "--workers",
        "1",
    )
    logs = tmp_path / f"logs-{index}"
    stdout, stderr = open_logs(logs)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=directory,
            env=clean_environ(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    finally:
        os.close(stdout)
        os.close(stderr)
    server = Server(process, 8000, logs, None)
    server.url = f"http://{address}:8000"
    await server.wait_until_healthy()
    return server


async def many_downloads(cluster: Cluster, filename: str) -> list[Received]:
    return await downloads.many(
        f"{cluster.url}/pypi/files/demo/{filename}", CLIENTS, CLIENT_SECONDS
    )


def assert_all_correct(received: list[Received], filename: str) -> None:
    expected = hashlib.sha256(big_files()[filename]).hexdigest()
    assert [(r.status, r.error, r.sha256) for r in received] == [(200, None, expected)] * CLIENTS


def assert_first_bytes_prompt(received: list[Received], upstream_first_byte: float) -> None:
    first_bytes = [r.first_byte for r in received if r.first_byte is not None]
    assert len(first_bytes) == CLIENTS
    slowest = max(first_bytes) - upstream_first_byte
    assert slowest <= FIRST_BYTE_BOUND, f"slowest first byte {slowest:.3f} s after the upstream's"


async def _warm_up(cluster: Cluster) -> None:
    """Replicas that have served a file, led and followed, as in any deployment that has
    been up for a moment: what a first download of all costs a process (connections,
    sessions, code paths run once) is no part of the first bytes measured."""
    await warm_page(cluster)
    small = await downloads.many(f"{cluster.url}/pypi/files/demo/{WARM_UP}", REPLICAS, 30)
    expected = hashlib.sha256(big_files()[WARM_UP]).hexdigest()
    assert [(r.status, r.sha256) for r in small] == [(200, expected)] * REPLICAS


async def warm_page(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        page = await fetch(http, f"{cluster.url}/pypi/simple/demo/")
        assert page.status == 200


@pytest.mark.timeout(90)
async def test_sixty_cold_clients_over_three_hosts_cost_one_upstream_get(
    cluster: Cluster,
) -> None:
    await warm_page(cluster)

    received = await many_downloads(cluster, COLD)

    assert cluster.upstream.gets[COLD] == 1
    assert_all_correct(received, COLD)
    assert_first_bytes_prompt(received, cluster.upstream.first_bytes[COLD][0])
    # The clients were spread over every replica: two of them followed from another host.
    assert set(cluster.served_by(f"/pypi/files/demo/{COLD}")) == set(cluster.addresses)
    await eventually(lambda: len(cluster.objects(COLD)) == 1, "the file committed", polls=1000)


@pytest.mark.timeout(90)
async def test_the_leading_replica_killed_mid_download_is_taken_over_by_a_retry(
    cluster: Cluster,
) -> None:
    await warm_page(cluster)
    clients = asyncio.ensure_future(many_downloads(cluster, KILLED))
    await eventually(
        lambda: cluster.upstream.sent[KILLED] >= BIG // 4, "a quarter sent", polls=3000
    )
    monitor = await asyncpg.connect(cluster.dsn)
    try:
        leader_url = await monitor.fetchval(LEADER_OF, KILLED)
        leader = cluster.addresses.index(leader_url.removeprefix("http://").split(":")[0])
        os.killpg(cluster.replicas[leader].process.pid, signal.SIGKILL)

        cut = await clients

        # Cut short on every host, never a complete-looking body; nothing partial stored.
        assert_first_bytes_prompt(cut, cluster.upstream.first_bytes[KILLED][0])
        expected = hashlib.sha256(big_files()[KILLED]).hexdigest()
        for broken in cut:
            assert broken.error is not None or broken.status != 200
            assert broken.size < BIG and broken.sha256 != expected
        assert cluster.objects(KILLED) == []
        assert (
            await monitor.fetchval("SELECT stored_key FROM files WHERE filename = $1", KILLED)
            is None
        )

        retried = await many_downloads(cluster, KILLED)

        # A follower took the download over: one more upstream GET, the same guarantees.
        assert cluster.upstream.gets[KILLED] == 2
        assert_all_correct(retried, KILLED)
        assert_first_bytes_prompt(retried, cluster.upstream.first_bytes[KILLED][1])
        new_leader = await monitor.fetchval(LEADER_OF, KILLED)
        assert new_leader != leader_url
        await eventually(
            lambda: len(cluster.objects(KILLED)) == 1, "the file committed", polls=1000
        )
    finally:
        await monitor.close()
