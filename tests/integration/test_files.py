"""Files and their PEP 658 metadata, through a real server, database, upstream and store.

A cold file costs one upstream GET however many clients (and workers) ask for it at once,
reaches the clients while it arrives, and is stored only once verified: a bad, short or
refused download leaves neither an object nor a stored row, and the next good one is
stored. A stored file is served from the store (disk, or S3 by redirect or streamed
through) with ranges, HEAD, a strong ETag and immutable caching, even with the upstream
down. The storage-dependent tests run against both stores.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
import yarl

from mypypi2.config import StorageConfig
from mypypi2.queries import projects as projects_queries
from tests import dists
from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.cache import StartCache, repository
from tests.support.files import (
    SDIST,
    Store,
    assert_nothing_stored,
    assert_stored,
    attempt,
    content,
    disk_store,
    fetch,
    file_row,
    our_path,
    raw_get,
    s3_client,
    s3_store,
    sha256,
    upstream_path,
    wait_stored,
)
from tests.support.http import JSON_V1, Answer
from tests.support.waiting import eventually

MIB = 1024 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
PAGE = "/simple/demo/"
WHEEL = dists.wheel("demo", "1.0")


# -- the store under test -------------------------------------------------------------------


@pytest.fixture(params=["disk", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "disk":
        return disk_store(tmp_path)
    return s3_store(request.getfixturevalue("s3_storage"), tmp_path)


# -- HTTP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    ours: Answer  # what the cache answered: a 308 for S3 with redirects
    final: Answer  # what the client ends with, the redirect followed


async def download(
    http: aiohttp.ClientSession,
    store: Store,
    url: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Served:
    """Ask the cache for a stored file; with S3 redirects, check the 308 and follow it."""
    ours = await fetch(http, url, headers, method)
    if not store.redirects or ours.status == 304:
        return Served(ours, ours)
    assert ours.status == 308, ours
    assert ours.body == b""
    location = ours.headers["Location"]
    # Clients take the filename from the URL path, so the redirect must end with it too.
    assert yarl.URL(location, encoded=True).path.endswith("/" + url.rsplit("/", 1)[1])
    return Served(ours, await fetch(http, yarl.URL(location, encoded=True), headers, method))


# -- the database ---------------------------------------------------------------------------


def assert_file_headers(answer: Answer, file: UpstreamFile) -> None:
    assert answer.headers["ETag"] == f'"{file.sha256}"'
    assert answer.headers["Cache-Control"] == IMMUTABLE


# -- cold, then warm ------------------------------------------------------------------------


async def test_cold_then_warm(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    cache = await start_cache(storage=store.config)
    url = cache.url + our_path(SDIST)

    cold = await fetch(http, url)

    assert cold.status == 200
    assert cold.body == SDIST.content
    assert cold.headers["Content-Length"] == str(len(SDIST.content))
    assert_file_headers(cold, SDIST)
    await assert_stored(db, store, SDIST)
    assert upstream.hits[upstream_path(SDIST)] == 1

    warm = await download(http, store, url)

    assert warm.final.status == 200
    assert warm.final.body == SDIST.content
    assert_file_headers(warm.ours, SDIST)
    if not store.redirects:
        assert warm.ours.headers["Accept-Ranges"] == "bytes"
        assert warm.ours.headers["Content-Length"] == str(len(SDIST.content))
    assert upstream.hits[upstream_path(SDIST)] == 1


async def test_stored_file_is_served_by_a_fresh_worker(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    first = await start_cache(storage=store.config)
    assert (await fetch(http, first.url + our_path(SDIST))).body == SDIST.content
    await wait_stored(db, SDIST)

    second = await start_cache(storage=store.config)  # knows the file from the database only
    warm = await download(http, store, second.url + our_path(SDIST))

    assert warm.final.body == SDIST.content
    assert_file_headers(warm.ours, SDIST)
    assert upstream.hits[upstream_path(SDIST)] == 1


async def test_slow_body_completes_and_is_stored(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(upstream_path(SDIST), Fault(slow_chunk=32 * 1024, slow_delay=0.01))
    cache = await start_cache(storage=store.config)

    answer = await fetch(http, cache.url + our_path(SDIST))

    assert answer.status == 200
    assert answer.body == SDIST.content
    await assert_stored(db, store, SDIST)


# -- one download for every client ----------------------------------------------------------

BIG = UpstreamFile("demo-2.0.tar.gz", content(20 * MIB, seed=2))
# About a second upstream: every client asks while the one download is running.
SLOW_BIG = Fault(slow_chunk=MIB, slow_delay=0.05)


@dataclass(frozen=True)
class Received:
    status: int
    size: int
    sha256: str
    content_length: str | None
    # How many complete upstream sends of the file there had been when the first chunk
    # reached this client.
    completed_at_first_chunk: int


async def receive(
    http: aiohttp.ClientSession,
    url: str,
    upstream: LocalUpstream,
    file: UpstreamFile,
    first_chunk: asyncio.Event | None = None,
) -> Received:
    """Download `url` without keeping it in memory (many clients, big files)."""
    async with http.get(url) as response:
        digest, size, completed = hashlib.sha256(), 0, -1
        async for chunk in response.content.iter_any():
            if size == 0:
                completed = upstream.completed[upstream_path(file)]
                if first_chunk is not None:
                    first_chunk.set()
            digest.update(chunk)
            size += len(chunk)
        return Received(
            response.status,
            size,
            digest.hexdigest(),
            response.headers.get("Content-Length"),
            completed,
        )


def assert_received_whole(received: Received, file: UpstreamFile) -> None:
    assert received.status == 200
    assert received.size == len(file.content)
    assert received.sha256 == file.sha256


async def test_concurrent_clients_share_one_download(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    upstream.add(UpstreamProject("demo", [BIG]))
    upstream.fail(upstream_path(BIG), SLOW_BIG)
    cache = await start_cache(storage=store.config)
    url = cache.url + our_path(BIG)

    received = await asyncio.gather(*(receive(http, url, upstream, BIG) for _ in range(32)))

    assert upstream.hits[upstream_path(BIG)] == 1
    for one in received:
        assert_received_whole(one, BIG)
        assert one.content_length == str(len(BIG.content))
    # Teed, not store-and-forward: bytes reached a client while the upstream was sending.
    assert min(one.completed_at_first_chunk for one in received) == 0
    await assert_stored(db, store, BIG)


async def test_two_workers_share_one_download(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    upstream.add(UpstreamProject("demo", [BIG]))
    upstream.fail(upstream_path(BIG), SLOW_BIG)
    # Two app instances on one database and one data directory: two workers of one host.
    first = await start_cache(storage=store.config)
    second = await start_cache(storage=store.config)
    started = asyncio.Event()

    leader = asyncio.create_task(receive(http, first.url + our_path(BIG), upstream, BIG, started))
    await started.wait()  # the first worker's download is under way
    follower = await receive(http, second.url + our_path(BIG), upstream, BIG)
    led = await leader

    assert_received_whole(led, BIG)
    assert_received_whole(follower, BIG)
    assert upstream.hits[upstream_path(BIG)] == 1
    # The second worker tailed the first one's spool instead of waiting for the commit.
    assert follower.completed_at_first_chunk == 0
    await assert_stored(db, store, BIG)


async def test_a_client_leaving_does_not_cancel_the_download(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    upstream.add(UpstreamProject("demo", [BIG]))
    upstream.fail(upstream_path(BIG), SLOW_BIG)
    cache = await start_cache(storage=store.config)
    url = cache.url + our_path(BIG)
    started = asyncio.Event()

    async def leave_after_first_chunk() -> int:
        async with http.get(url) as response:
            await response.content.readany()
            started.set()
            response.close()  # drops the connection mid-body
            return upstream.completed[upstream_path(BIG)]

    leaving = asyncio.create_task(leave_after_first_chunk())
    await started.wait()
    staying = await receive(http, url, upstream, BIG)

    assert await leaving == 0  # it left while the upstream was still sending
    assert_received_whole(staying, BIG)
    assert upstream.hits[upstream_path(BIG)] == 1
    await assert_stored(db, store, BIG)


# -- faults ---------------------------------------------------------------------------------


def slowly(**fault: Any) -> Fault:
    return Fault(slow_chunk=32 * 1024, slow_delay=0.01, **fault)


@pytest.mark.parametrize(
    ("fault", "statuses"),
    [
        pytest.param(Fault(corrupt=True), {502}, id="wrong-hash"),
        pytest.param(Fault(truncate=100 * 1024), {502}, id="truncated"),
        pytest.param(Fault(truncate=0), {502}, id="reset-after-headers"),
        # Slowly, so that the client has its headers and most of the body when it breaks.
        pytest.param(slowly(corrupt=True), {502}, id="wrong-hash-mid-body"),
        pytest.param(slowly(truncate=200 * 1024), {502}, id="truncated-mid-body"),
        pytest.param(Fault(reset=True), {502}, id="reset-before-answer"),
        pytest.param(Fault(status=500), {502}, id="upstream-500"),
        pytest.param(Fault(status=404), {404}, id="upstream-404"),
    ],
)
async def test_a_failed_download_stores_nothing_and_the_next_one_stores(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
    fault: Fault,
    statuses: set[int],
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(upstream_path(SDIST), fault)
    cache = await start_cache(storage=store.config)
    url = cache.url + our_path(SDIST)

    failed = await attempt(http, url)

    if failed.status == 200:
        # The headers were out before the failure: the body must end short, and broken.
        assert failed.error is not None
        assert len(failed.body) < len(SDIST.content)
    else:
        assert failed.status in statuses, failed
        assert failed.body != SDIST.content
    await assert_nothing_stored(db, store, SDIST)

    upstream.faults.pop(upstream_path(SDIST), None)
    hits = upstream.hits[upstream_path(SDIST)]
    retried = await attempt(http, url)

    assert (retried.status, retried.error) == (200, None)
    assert retried.body == SDIST.content
    await assert_stored(db, store, SDIST)
    assert upstream.hits[upstream_path(SDIST)] == hits + 1


async def test_a_failure_reaches_the_client_only_once_a_retry_would_start_afresh(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    database: str,
) -> None:
    """A client that retries the moment its download breaks must get a new download, not
    the failure of the old one, still being cleaned up (its row, its spool, its lock)."""
    upstream.add(UpstreamProject("demo", [BIG]))
    upstream.fail(upstream_path(BIG), Fault(corrupt=True, slow_chunk=MIB, slow_delay=0.05, times=1))
    cache = await start_cache()
    url = cache.url + our_path(BIG)
    monitor = await asyncpg.connect(database)

    async def download_running() -> bool:
        state = await monitor.fetchval("SELECT state FROM file_downloads")
        return bool(state == "running")

    async def cleanup_blocked() -> bool:
        blocked = await monitor.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            db.get_server_pid(),
        )
        return bool(blocked) or failing.done()

    try:
        failing = asyncio.create_task(attempt(http, url))
        await eventually(download_running, "the download started")
        async with db.transaction():
            # Holding the download's row stops the failed download's cleanup half-way.
            await db.execute("SELECT 1 FROM file_downloads FOR UPDATE")
            await eventually(cleanup_blocked, "the cleanup waits for the row")
            assert not failing.done()
        failed = await failing
        retried = await attempt(http, url)  # at once
    finally:
        await monitor.close()

    assert failed.error is not None or failed.status == 502
    assert (retried.status, retried.error) == (200, None)
    assert (len(retried.body), sha256(retried.body)) == (len(BIG.content), BIG.sha256)
    assert upstream.hits[upstream_path(BIG)] == 2


async def test_a_retry_on_another_worker_right_after_a_failure_starts_a_new_download(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(upstream_path(SDIST), slowly(corrupt=True, times=1))
    first = await start_cache(storage=store.config)
    second = await start_cache(storage=store.config)
    started = asyncio.Event()

    leading = asyncio.create_task(attempt(http, first.url + our_path(SDIST), started))
    await started.wait()  # the first worker leads the download, the second follows it
    followed = await attempt(http, second.url + our_path(SDIST))
    retried = await attempt(http, second.url + our_path(SDIST))
    led = await leading

    assert led.error is not None
    assert followed.error is not None or followed.status == 502
    assert (retried.status, retried.error) == (200, None)
    assert retried.body == SDIST.content
    await assert_stored(db, store, SDIST)


async def test_an_upstream_timeout_is_a_504_and_stores_nothing(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(upstream_path(SDIST), Fault(stall=True))
    cache = await start_cache(repository("pypi", upstream, read_timeout=0.3), storage=store.config)
    url = cache.url + our_path(SDIST)

    failed = await attempt(http, url)

    assert failed.status == 504
    await assert_nothing_stored(db, store, SDIST)

    del upstream.faults[upstream_path(SDIST)]
    retried = await attempt(http, url)

    assert (retried.status, retried.body) == (200, SDIST.content)
    await assert_stored(db, store, SDIST)


# -- stored files: ranges, HEAD, conditional requests ---------------------------------------


async def stored_file(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
    file: UpstreamFile = SDIST,
) -> str:
    """Start a cache, have it store `file`; its URL."""
    upstream.add(UpstreamProject("demo", [file]))
    cache = await start_cache(storage=store.config)
    url = cache.url + our_path(file)
    assert (await fetch(http, url)).body == file.content
    await wait_stored(db, file)
    return url


async def assert_ranges(
    http: aiohttp.ClientSession, store: Store, url: str, file: UpstreamFile
) -> None:
    data, size = file.content, len(file.content)
    for header, start, end in [
        ("bytes=0-99", 0, 100),
        ("bytes=-100", size - 100, size),
        ("bytes=1000-1999", 1000, 2000),
        (f"bytes={size - 10}-", size - 10, size),
    ]:
        served = await download(http, store, url, {"Range": header})
        assert served.final.status == 206, header
        assert served.final.body == data[start:end], header
        assert served.final.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert served.final.headers["Content-Length"] == str(end - start)


async def test_ranges_on_a_stored_file(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    url = await stored_file(start_cache, upstream, http, db, store)

    await assert_ranges(http, store, url, SDIST)

    unsatisfiable = await download(http, store, url, {"Range": f"bytes={len(SDIST.content)}-"})
    assert unsatisfiable.final.status == 416
    if not store.redirects:  # with redirects, the 416 is the bucket's own answer
        assert unsatisfiable.final.headers["Content-Range"] == f"bytes */{len(SDIST.content)}"
    assert upstream.hits[upstream_path(SDIST)] == 1


async def test_head_on_a_stored_file(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    url = await stored_file(start_cache, upstream, http, db, store)

    # Answered by the cache itself, even for S3: a presigned URL is signed for GET only.
    head = await fetch(http, url, method="HEAD")

    assert head.status == 200
    assert head.body == b""
    assert "Location" not in head.headers
    assert head.headers["Content-Length"] == str(len(SDIST.content))
    assert head.headers["Accept-Ranges"] == "bytes"
    assert_file_headers(head, SDIST)
    assert upstream.hits[upstream_path(SDIST)] == 1


async def test_if_none_match_on_a_stored_file(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    url = await stored_file(start_cache, upstream, http, db, store)

    answer = await fetch(http, url, {"If-None-Match": f'"{SDIST.sha256}"'})
    other = await download(http, store, url, {"If-None-Match": f'"{"0" * 64}"'})

    assert answer.status == 304
    assert answer.body == b""
    assert_file_headers(answer, SDIST)
    assert other.final.status == 200
    assert other.final.body == SDIST.content


async def test_head_on_a_cold_file_does_not_download_it(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    cache = await start_cache()

    head = await fetch(http, cache.url + our_path(SDIST), method="HEAD")

    assert head.status == 200
    assert head.body == b""
    assert head.headers["Content-Length"] == str(len(SDIST.content))
    assert head.headers["ETag"] == f'"{SDIST.sha256}"'
    assert upstream.hits[upstream_path(SDIST)] == 0
    assert (await file_row(db, SDIST.filename))["stored_key"] is None


# -- S3 without redirects, and behind a public URL -------------------------------------------


async def test_s3_stream_through(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    s3_storage: StorageConfig,
    tmp_path: Path,
) -> None:
    store = s3_store(msgspec.structs.replace(s3_storage, redirect=False), tmp_path, "s3-stream")
    url = await stored_file(start_cache, upstream, http, db, store)
    assert store.objects() == [store.key(SDIST)]

    warm = await fetch(http, url)
    head = await fetch(http, url, method="HEAD")

    assert warm.status == 200
    assert warm.body == SDIST.content
    assert warm.headers["Accept-Ranges"] == "bytes"
    assert warm.headers["Content-Length"] == str(len(SDIST.content))
    assert_file_headers(warm, SDIST)
    assert (head.status, head.body) == (200, b"")
    assert head.headers["Content-Length"] == str(len(SDIST.content))
    await assert_ranges(http, store, url, SDIST)
    unsatisfiable = await fetch(http, url, {"Range": f"bytes={len(SDIST.content)}-"})
    assert unsatisfiable.status == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{len(SDIST.content)}"
    assert upstream.hits[upstream_path(SDIST)] == 1


async def test_s3_public_url(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    s3_storage: StorageConfig,
    tmp_path: Path,
) -> None:
    # The bucket, made public, stands for the CDN or public bucket a deployment would name.
    public = f"{s3_storage.endpoint_url}/{s3_storage.bucket}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{s3_storage.bucket}/*",
            }
        ],
    }
    s3_client(s3_storage).put_bucket_policy(Bucket=s3_storage.bucket, Policy=json.dumps(policy))
    store = s3_store(msgspec.structs.replace(s3_storage, public_url=public + "/"), tmp_path)
    url = await stored_file(start_cache, upstream, http, db, store)

    warm = await download(http, store, url)

    assert warm.ours.status == 308
    assert warm.ours.headers["Location"] == f"{public}/{store.key(SDIST)}"
    assert warm.final.status == 200
    assert warm.final.body == SDIST.content


# -- upstream down --------------------------------------------------------------------------


async def test_stored_file_is_served_with_the_upstream_down(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    url = await stored_file(start_cache, upstream, http, db, store)
    await upstream.stop()

    again = await download(http, store, url)
    fresh_worker = await start_cache(storage=store.config)
    elsewhere = await download(http, store, fresh_worker.url + our_path(SDIST))

    assert again.final.body == SDIST.content
    assert elsewhere.final.body == SDIST.content


# -- .metadata (PEP 658) --------------------------------------------------------------------


def metadata_path(file: UpstreamFile) -> str:
    return upstream_path(file) + ".metadata"


async def test_metadata_is_fetched_once_then_served_from_the_database(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
) -> None:
    upstream.add(UpstreamProject("demo", [WHEEL]))
    cache = await start_cache()
    url = cache.url + our_path(WHEEL) + ".metadata"
    page = await fetch(http, cache.url + "/pypi/simple/demo/", {"Accept": JSON_V1})
    advertised = json.loads(page.body)["files"][0]["core-metadata"]

    first = await fetch(http, url)
    second = await fetch(http, url)

    assert WHEEL.metadata is not None
    assert first.status == second.status == 200
    assert first.body == second.body == WHEEL.metadata
    assert advertised == {"sha256": sha256(first.body)}
    assert (await file_row(db, WHEEL.filename))["metadata_body"] == WHEEL.metadata
    assert upstream.hits[metadata_path(WHEEL)] == 1
    assert upstream.hits[upstream_path(WHEEL)] == 0  # the wheel itself is never needed


async def test_metadata_of_a_file_without_it_is_404(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    cache = await start_cache()

    answer = await fetch(http, cache.url + our_path(SDIST) + ".metadata")

    assert answer.status == 404
    assert upstream.hits[metadata_path(SDIST)] == 0


async def test_metadata_not_matching_its_hash_is_502_and_not_saved(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
) -> None:
    upstream.add(UpstreamProject("demo", [WHEEL]))
    upstream.fail(metadata_path(WHEEL), Fault(body=b"Metadata-Version: 2.1\nName: evil\n"))
    cache = await start_cache()

    answer = await fetch(http, cache.url + our_path(WHEEL) + ".metadata")

    assert answer.status == 502
    assert b"evil" not in answer.body
    assert (await file_row(db, WHEEL.filename))["metadata_body"] is None


# -- names and paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/pypi/files/demo/..",
        "/pypi/files/demo/%2e%2e",
        "/pypi/files/demo/%2E%2E/%2E%2E/secret.txt",
        "/pypi/files/demo/../../../secret.txt",
        "/pypi/files/demo/..%2F..%2F..%2Fsecret.txt",
        "/pypi/files/demo/..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/pypi/files/demo/..%5C..%5C..%5Csecret.txt",
        "/pypi/files/demo/demo-1.0.tar.gz%00",
        "/pypi/files/demo/demo-1.0.tar.gz%00.whl",
        "/pypi/files/%2e%2e/secret.txt",
        "/pypi/files/Demo/demo-1.0.tar.gz",
        "/pypi/files/demo_/demo-1.0.tar.gz",
        "/pypi/files/-demo-/demo-1.0.tar.gz",
        "/%2e%2e/files/demo/demo-1.0.tar.gz",
        # .metadata takes the same checks: an unchecked project would become an upstream path.
        "/pypi/files/%2e%2e/demo-1.0.tar.gz.metadata",
        "/pypi/files/Demo/demo-1.0.tar.gz.metadata",
        "/pypi/files/demo/..%2Fsecret.txt.metadata",
    ],
)
async def test_unsafe_paths_are_404(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
    target: str,
) -> None:
    secret = b"outside the store"
    (tmp_path / "secret.txt").write_bytes(secret)
    store = disk_store(tmp_path)
    url = await stored_file(start_cache, upstream, http, db, store)
    port = int(yarl.URL(url).port or 0)
    hits = sum(upstream.hits.values())

    status, answer = await raw_get(port, target)

    assert status == 404
    assert secret not in answer
    assert b"root:" not in answer
    assert sum(upstream.hits.values()) == hits  # never passed on upstream either


async def test_unknown_file_of_a_known_project_is_404(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    cache = await start_cache()

    answer = await fetch(http, cache.url + "/pypi/files/demo/demo-9.9.tar.gz")
    head = await fetch(http, cache.url + "/pypi/files/demo/demo-9.9.tar.gz", method="HEAD")

    assert (answer.status, head.status) == (404, 404)
    assert upstream.hits[PAGE] >= 1
    assert upstream.hits["/files/demo/demo-9.9.tar.gz"] == 0


async def test_file_of_an_unknown_project_is_404(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    cache = await start_cache()

    answer = await fetch(http, cache.url + "/pypi/files/nothing/nothing-1.0.tar.gz")

    assert answer.status == 404
    assert upstream.hits["/simple/nothing/"] == 1
    assert upstream.hits["/files/nothing/nothing-1.0.tar.gz"] == 0


async def test_file_requested_before_its_page(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    cache = await start_cache()

    answer = await fetch(http, cache.url + our_path(SDIST))

    assert answer.status == 200
    assert answer.body == SDIST.content
    assert upstream.hits[PAGE] == 1
    assert upstream.hits[upstream_path(SDIST)] == 1
    await wait_stored(db, SDIST)


# -- files over 4 GiB -----------------------------------------------------------------------

HUGE = 5 * 2**30


async def test_sizes_over_4_gib(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
) -> None:
    """Not downloaded: the database and the renderings must carry 64-bit sizes."""
    other = UpstreamFile("demo-1.1.tar.gz", b"another sdist")
    upstream.add(UpstreamProject("demo", [SDIST, other]))
    first = await start_cache()
    assert (await fetch(http, first.url + "/pypi/simple/demo/", {"Accept": JSON_V1})).status == 200
    # One size as the page announced it, one learnt only by storing the file.
    await db.execute("UPDATE files SET size = $1 WHERE filename = $2", HUGE, SDIST.filename)
    await db.execute(
        "UPDATE files SET size = NULL, stored_key = 'k', stored_size = $1, stored_sha256 = $2"
        " WHERE filename = $3",
        HUGE + 1,
        other.sha256,
        other.filename,
    )

    model = await projects_queries.get_page(db, "pypi", "demo")
    second = await start_cache()  # renders from the database, not from a cached rendering
    page = await fetch(http, second.url + "/pypi/simple/demo/", {"Accept": JSON_V1})
    head = await fetch(http, second.url + our_path(SDIST), method="HEAD")

    assert model is not None
    assert [f.size for f in model.files] == [HUGE, HUGE + 1]
    sizes = [f["size"] for f in json.loads(page.body)["files"]]
    assert sizes == [HUGE, HUGE + 1]
    assert all(type(size) is int for size in sizes)
    assert b'"size":5368709120' in page.body.replace(b" ", b"")
    assert head.headers["Content-Length"] == str(HUGE)
    assert upstream.hits[upstream_path(SDIST)] == 0
