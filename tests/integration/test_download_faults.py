"""What goes wrong around file downloads, through a real server, database, upstream and store.

- An upstream sending more bytes than the page's size never gets a complete-looking body
  out of us: it is cut off, cut short, and nothing is stored.
- A filename the upstream re-publishes with other bytes: our page and our file URL keep
  agreeing (the stored bytes and their hashes stay; an unstored file follows the upstream).
- An object the store lost is fetched again, not a 404 forever; a filename too long for a
  path component is stored all the same.
- Downloads hold no database connection while the bytes travel: slow ones do not starve
  the pool, and a leader that went away is taken over.
- A failure before the first byte is a clean 502 with the reason; a follower in another
  worker waits for the attempt it joined, never answering from an older attempt's failure.
- Client input on the file routes: control characters and overlong names are 404s; ranges
  and If-Modified-Since get the same RFC 9110 answers on disk and S3 and on the warm path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
import yarl

from mypypi2 import download as download_module
from mypypi2.config import SERVERS, Config, DatabaseConfig, StorageConfig
from mypypi2.queries import files as files_queries
from mypypi2.storage import MAX_KEY_NAME_BYTES
from tests import dists
from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.apps import PathsendAsBody
from tests.support.cache import Clock, RunningCache, StartCache, repository
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
from tests.support.http import JSON_V1
from tests.support.process import Launch, clean_environ, write_config
from tests.support.waiting import eventually

SIZE = len(SDIST.content)


async def page_files(http: aiohttp.ClientSession, cache: RunningCache) -> dict[str, Any]:
    answer = await fetch(http, cache.url + "/pypi/simple/demo/", {"Accept": JSON_V1})
    assert answer.status == 200
    return {entry["filename"]: entry for entry in json.loads(answer.body)["files"]}


# -- 1. a body longer than the page's size ----------------------------------------------------


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
async def test_an_overlong_body_is_cut_short_and_stores_nothing(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
    chunked: bool,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    # Wrong from the first byte and longer than the page says. The first piece is one byte
    # past the page's size: a cache holding back only the last byte received would send the
    # announced length and stop there, a complete-looking body.
    upstream.fail(
        upstream_path(SDIST),
        Fault(overlong=1000, chunked=chunked, slow_chunk=SIZE + 1, slow_delay=0.3, times=1),
    )
    store = disk_store(tmp_path)
    cache = await start_cache(storage=store.config)
    url = cache.url + our_path(SDIST)

    broken = await attempt(http, url)

    if broken.status == 200:
        assert broken.headers["Content-Length"] == str(SIZE)
        assert broken.headers["ETag"] == f'"{SDIST.sha256}"'
        assert broken.error is not None
        assert len(broken.body) < SIZE  # never the announced length: cut short
    else:
        assert broken.status == 502
    await assert_nothing_stored(db, store, SDIST)

    retried = await attempt(http, url)

    assert (retried.status, retried.error, retried.body) == (200, None, SDIST.content)
    await assert_stored(db, store, SDIST)


@pytest.mark.parametrize("server_name", SERVERS)
async def test_an_overlong_body_is_cut_short_by_every_server(
    launch: Launch,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    database: str,
    tmp_path: Path,
    server_name: str,
) -> None:
    """Under `mypypi2 serve`: granian, unlike hypercorn, sends a body past its announced
    length, so a client there got all of it, complete-looking, most of the time."""
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(upstream_path(SDIST), Fault(overlong=1000, slow_chunk=SIZE + 1, slow_delay=0.3))
    write_config(
        tmp_path,
        {
            "data-dir": str(tmp_path / "data"),
            "database": {"url": database},
            "repositories": [{"name": "pypi", "upstream": upstream.url}],
        },
    )
    server = await launch(tmp_path, clean_environ(), "--workers", "1", "--server", server_name)

    for _ in range(4):  # a fresh download each time: the upstream never mends
        broken = await attempt(http, server.url + our_path(SDIST))

        assert broken.status in (200, 502)
        assert broken.error is not None or broken.status == 502
        assert len(broken.body) < SIZE
    db = await asyncpg.connect(database)
    try:
        assert (await file_row(db, SDIST.filename))["stored_key"] is None
    finally:
        await db.close()


# -- 2. a filename re-published with other bytes ----------------------------------------------


async def test_a_republished_file_keeps_the_stored_bytes_and_the_page_keeps_their_hash(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    stored_first = UpstreamFile("demo-1.0.tar.gz", content(4096, seed=10))
    never_stored = UpstreamFile("demo-1.1.tar.gz", content(4096, seed=11))
    with_metadata = dists.wheel("demo", "2.0")  # stored, and its .metadata too
    without_metadata = dists.wheel("demo", "3.0")  # stored, its .metadata never asked for
    project = upstream.add(
        UpstreamProject("demo", [stored_first, never_stored, with_metadata, without_metadata])
    )
    clock = Clock()
    store = disk_store(tmp_path)
    cache = await start_cache(
        repository("pypi", upstream, ttl=60, stale_while_revalidate=0),
        clock=clock,
        storage=store.config,
    )
    for file in (stored_first, with_metadata, without_metadata):
        assert (await fetch(http, cache.url + our_path(file))).body == file.content
        await wait_stored(db, file)
    kept_metadata = await fetch(http, cache.url + our_path(with_metadata) + ".metadata")
    assert kept_metadata.body == with_metadata.metadata

    replaced = UpstreamFile(stored_first.filename, content(5000, seed=20))
    replaced_unstored = UpstreamFile(never_stored.filename, content(5000, seed=21))
    project.files = [
        replaced,
        replaced_unstored,
        dists.wheel("demo", "2.0", requires=["other"]),
        dists.wheel("demo", "3.0", requires=["other"]),
    ]
    project.serial += 1
    clock.advance(61)
    listed = await page_files(http, cache)  # revalidated: the upstream's new page is saved
    html = await fetch(http, cache.url + "/pypi/simple/demo/", {"Accept": "text/html"})
    served = await fetch(http, cache.url + our_path(stored_first))
    other = await fetch(http, cache.url + our_path(never_stored))

    assert upstream.hits["/simple/demo/"] == 2
    # The stored file: the bytes we verified and serve, and the page says so.
    assert served.body == stored_first.content
    assert served.headers["ETag"] == f'"{stored_first.sha256}"'
    assert listed[stored_first.filename]["hashes"] == {"sha256": stored_first.sha256}
    assert listed[stored_first.filename]["size"] == len(stored_first.content)
    assert f"#sha256={stored_first.sha256}".encode() in html.body
    assert replaced.sha256.encode() not in html.body
    # A file we never stored follows the upstream.
    assert listed[never_stored.filename]["hashes"] == {"sha256": replaced_unstored.sha256}
    assert other.body == replaced_unstored.content
    # Metadata: the body we hold stays with its file; one we never fetched would now be the
    # upstream's, for other bytes, so the page stops advertising it.
    assert with_metadata.metadata is not None
    assert listed[with_metadata.filename]["core-metadata"] == {
        "sha256": sha256(with_metadata.metadata)
    }
    again = await fetch(http, cache.url + our_path(with_metadata) + ".metadata")
    assert again.body == with_metadata.metadata
    assert listed[without_metadata.filename]["core-metadata"] is False
    missing = await fetch(http, cache.url + our_path(without_metadata) + ".metadata")
    assert missing.status == 404
    for file in (stored_first, with_metadata, without_metadata):
        assert upstream.hits[upstream_path(file)] == 1
        assert (await fetch(http, cache.url + our_path(file))).body == file.content


async def test_republished_metadata_replaces_the_kept_body_in_every_worker(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
) -> None:
    first = dists.wheel("demo", "1.0")
    project = upstream.add(UpstreamProject("demo", [first]))
    clock = Clock()
    settings = repository("pypi", upstream, ttl=60, stale_while_revalidate=0)
    cache = await start_cache(settings, clock=clock)
    other_worker = await start_cache(settings, clock=clock)
    metadata_url = our_path(first) + ".metadata"
    for worker in (cache, other_worker):  # both keep the body in memory
        assert (await fetch(http, worker.url + metadata_url)).body == first.metadata

    second = dists.wheel("demo", "1.0", requires=["other"])
    assert second.filename == first.filename and second.metadata != first.metadata
    project.files = [second]
    project.serial += 1
    clock.advance(61)
    listed = await page_files(http, cache)
    advertised = listed[first.filename]["core-metadata"]["sha256"]

    assert second.metadata is not None
    assert advertised == sha256(second.metadata)
    for worker in (cache, other_worker):

        async def agrees(url: str = worker.url + metadata_url) -> bool:
            return bool(sha256((await fetch(http, url)).body) == advertised)

        await eventually(agrees, "the worker serves the metadata its page advertises")


# -- 3. objects the store lost; filenames too long for a path component ------------------------


@pytest.fixture(params=["disk", "disk-warm-path", "s3", "s3-stream"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, bool]:
    """A store, and whether the cache runs behind a server that offers pathsend."""
    if request.param.startswith("disk"):
        return disk_store(tmp_path), request.param == "disk-warm-path"
    config: StorageConfig = request.getfixturevalue("s3_storage")
    if request.param == "s3-stream":
        config = msgspec.structs.replace(config, redirect=False)
    return s3_store(config, tmp_path, request.param), False


def delete_object(store: Store, key: str) -> None:
    if store.kind == "disk":
        (Path(store.config.path) / key).unlink()
    else:
        s3_client(store.config).delete_object(Bucket=store.config.bucket, Key=key)


async def test_an_object_the_store_lost_is_fetched_again(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    any_store: tuple[Store, bool],
) -> None:
    store, pathsend = any_store
    upstream.add(UpstreamProject("demo", [SDIST]))
    wrap = PathsendAsBody if pathsend else None
    cache = await start_cache(storage=store.config, wrap=wrap)
    url = cache.url + our_path(SDIST)
    assert (await fetch(http, url)).body == SDIST.content
    await wait_stored(db, SDIST)
    assert (await fetch(http, url, {"Range": "bytes=0-0"})).status in (206, 308)  # remembered

    hits = 1
    if store.kind != "s3":
        # A worker that holds the file in memory notices when the object fails to open.
        delete_object(store, store.key(SDIST))
        again = await attempt(http, url)
        hits += 1

        assert (again.status, again.error, again.body) == (200, None, SDIST.content)
        await assert_stored(db, store, SDIST)
    # A worker that never saw the file checks the store once (the only check a redirect
    # gets: the bucket is not asked on every request).
    delete_object(store, store.key(SDIST))
    fresh = await start_cache(storage=store.config, wrap=wrap)
    elsewhere = await attempt(http, fresh.url + our_path(SDIST))
    hits += 1

    assert (elsewhere.status, elsewhere.error, elsewhere.body) == (200, None, SDIST.content)
    await assert_stored(db, store, SDIST)
    assert upstream.hits[upstream_path(SDIST)] == hits


async def test_a_filename_too_long_for_the_filesystem_is_stored(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    # Over the store's limit for a name part, and in two-byte characters: the cut must not
    # split one. (The page parser refuses names over 255 bytes, one path component.)
    long = UpstreamFile(f"demo-1.0-py3-none-{'é' * 110}.whl", content(2048, seed=3))
    assert MAX_KEY_NAME_BYTES < len(long.filename.encode()) <= 255
    upstream.add(UpstreamProject("demo", [long]))
    store = disk_store(tmp_path)
    cache = await start_cache(storage=store.config)
    url = cache.url + our_path(long)

    first = await fetch(http, url)
    row = await wait_stored(db, long)
    second = await fetch(http, url)

    assert first.body == second.body == long.content
    assert upstream.hits[upstream_path(long)] == 1
    name = row["stored_key"].rsplit("/", 1)[1]
    assert len(name.encode()) <= MAX_KEY_NAME_BYTES
    assert long.filename.endswith(name)
    assert store.objects() == [row["stored_key"]]


@pytest.mark.parametrize("server_name", SERVERS)
async def test_an_object_lost_behind_a_warm_worker_is_fetched_again_by_every_server(
    launch: Launch,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    database: str,
    tmp_path: Path,
    server_name: str,
) -> None:
    """Under `mypypi2 serve`: granian answers a zero-copy (pathsend) file it cannot open with
    a 404 the app never hears of, so the warm path must notice the loss before sending."""
    upstream.add(UpstreamProject("demo", [SDIST]))
    store = disk_store(tmp_path)
    write_config(
        tmp_path,
        {
            "data-dir": str(tmp_path / "data"),
            "database": {"url": database},
            "storage": {"path": store.config.path},
            "repositories": [{"name": "pypi", "upstream": upstream.url}],
        },
    )
    server = await launch(tmp_path, clean_environ(), "--workers", "1", "--server", server_name)
    url = server.url + our_path(SDIST)
    db = await asyncpg.connect(database)
    try:
        assert (await fetch(http, url)).body == SDIST.content  # cold
        await wait_stored(db, SDIST)
        for _ in range(2):  # the worker learns it is stored, then answers from memory
            assert (await fetch(http, url)).body == SDIST.content
        delete_object(store, store.key(SDIST))

        again = await attempt(http, url)

        assert (again.status, again.error, again.body) == (200, None, SDIST.content)
        await assert_stored(db, store, SDIST)
    finally:
        await db.close()
    assert upstream.hits[upstream_path(SDIST)] == 2


# -- 4. no connection held while bytes travel ---------------------------------------------------


async def test_slow_downloads_do_not_starve_the_database_pool(
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    database: str,
    tmp_path: Path,
) -> None:
    slow = [UpstreamFile(f"demo-1.{n}.tar.gz", content(1024, seed=n)) for n in range(3)]
    upstream.add(UpstreamProject("demo", slow))
    upstream.add(UpstreamProject("other", [UpstreamFile("other-1.0.tar.gz", b"other")]))
    gate = asyncio.Event()
    for file in slow:
        upstream.fail(upstream_path(file), Fault(gate=gate))
    config = Config(
        data_dir=str(tmp_path / "data"),
        database=DatabaseConfig(pool_min_size=0, pool_max_size=2),
        storage=StorageConfig(path=str(tmp_path / "store")),
        repositories=(repository("pypi", upstream),),
    )
    cache = RunningCache(config, database, None)
    await cache.start()
    try:
        assert (await fetch(http, cache.url + "/pypi/simple/demo/")).status == 200
        downloads = [asyncio.create_task(fetch(http, cache.url + our_path(f))) for f in slow]

        async def all_asked() -> bool:
            return all(upstream.hits[upstream_path(f)] == 1 for f in slow)

        await eventually(all_asked, "every download waits for the upstream")
        # More downloads in flight than pooled connections: the rest of the service answers.
        health, page = await asyncio.wait_for(
            asyncio.gather(
                fetch(http, cache.url + "/-/health"),
                fetch(http, cache.url + "/pypi/simple/other/", {"Accept": JSON_V1}),
            ),
            timeout=30,  # only so that a starved pool fails the test instead of hanging it
        )
        assert (health.status, page.status) == (200, 200)
        gate.set()
        answers = await asyncio.gather(*downloads)
    finally:
        gate.set()
        await cache.stop()

    assert [answer.body for answer in answers] == [f.content for f in slow]


async def test_a_stopping_worker_finishes_its_downloads_in_flight(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    # A client may hold every byte before the file is committed: a worker stopped then
    # (a deploy, a scale-down) must not drop the commit with the database pool.
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(upstream_path(SDIST), Fault(slow_chunk=32 * 1024, slow_delay=0.05))
    store = disk_store(tmp_path)
    cache = await start_cache(storage=store.config)
    assert (await fetch(http, cache.url + "/pypi/simple/demo/")).status == 200
    first_chunk = asyncio.Event()
    client = asyncio.create_task(attempt(http, cache.url + our_path(SDIST), first_chunk))
    await asyncio.wait_for(first_chunk.wait(), timeout=30)
    client.cancel()  # the client goes away too: nobody is reading when the worker stops

    await cache.stop()

    await assert_stored(db, store, SDIST)
    assert upstream.hits[upstream_path(SDIST)] == 1


async def test_a_claim_whose_leader_went_away_is_taken_over(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    monkeypatch.setattr(download_module, "LEASE_SECONDS", 0.5)
    cache = await start_cache()
    assert (await fetch(http, cache.url + "/pypi/simple/demo/")).status == 200
    file_id = (await file_row(db, SDIST.filename))["id"]
    # A leader that claimed the download, began it, and died without a word.
    await db.execute(
        "INSERT INTO file_downloads (file_id, attempt, spool_path, expected_size, state,"
        " started_at, heartbeat_at) VALUES ($1, $2, '/nonexistent/dead.part', $3, 'running',"
        " clock_timestamp(), clock_timestamp())",
        file_id,
        uuid.uuid4(),
        SIZE,
    )

    answer = await attempt(http, cache.url + our_path(SDIST))

    assert (answer.status, answer.error, answer.body) == (200, None, SDIST.content)
    assert upstream.hits[upstream_path(SDIST)] == 1
    await wait_stored(db, SDIST)
    assert await db.fetchval("SELECT state FROM file_downloads") == "done"


# -- 5. failures before the first byte; followers of another worker ----------------------------


async def test_a_failure_before_the_first_byte_is_a_clean_502(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(upstream_path(SDIST), Fault(truncate=0))  # headers, then the line drops
    store = disk_store(tmp_path)
    cache = await start_cache(storage=store.config)

    answer = await attempt(http, cache.url + our_path(SDIST))

    assert (answer.status, answer.error) == (502, None)
    assert upstream_path(SDIST).encode() in answer.body  # the reason, for the operator
    await assert_nothing_stored(db, store, SDIST)


async def test_a_follower_waits_for_its_attempt_not_an_older_failure(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    store = disk_store(tmp_path)
    first = await start_cache(storage=store.config)
    second = await start_cache(storage=store.config)
    # Failed once the upstream had answered: a row saying failed stays behind.
    upstream.fail(upstream_path(SDIST), Fault(truncate=0, times=1))
    failed = await attempt(http, first.url + our_path(SDIST))
    assert failed.status == 502 or failed.error is not None
    assert await db.fetchval("SELECT state FROM file_downloads") == "failed"
    gate = asyncio.Event()
    upstream.fail(upstream_path(SDIST), Fault(gate=gate))

    leading = asyncio.create_task(attempt(http, first.url + our_path(SDIST)))

    async def leader_asked() -> bool:
        return upstream.hits[upstream_path(SDIST)] == 2

    await eventually(leader_asked, "the new leader waits for the upstream")
    # Only followers read the download's row (a leader knows its own state).
    looks = 0
    get_download = files_queries.get_download

    async def counted(*args: Any) -> files_queries.DownloadRow | None:
        nonlocal looks
        looks += 1
        return await get_download(*args)

    monkeypatch.setattr(files_queries, "get_download", counted)
    following = asyncio.create_task(attempt(http, second.url + our_path(SDIST)))

    # A follower misled by the old row fails at its first look; ours looks again and again.
    async def follower_keeps_waiting() -> bool:
        return looks >= 3 and not following.done()

    try:
        await eventually(follower_keeps_waiting, "the follower waits for the new attempt")
    finally:
        gate.set()
    led, followed = await leading, await following

    assert (led.status, led.error, led.body) == (200, None, SDIST.content)
    assert (followed.status, followed.error, followed.body) == (200, None, SDIST.content)
    assert upstream.hits[upstream_path(SDIST)] == 2
    await assert_stored(db, store, SDIST)


# -- 6. client input on the file routes ---------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/pypi%00/files/demo/demo-1.0.tar.gz",
        "/py%01pi/files/demo/demo-1.0.tar.gz",
        "/nowhere/files/demo/demo-1.0.tar.gz",
        "/pypi/files/demo/demo-1.0%0A.tar.gz",
        "/pypi/files/demo/demo-1.0%7F.tar.gz",
        "/pypi%00/files/demo/demo-1.0.tar.gz.metadata",
        f"/{'r' * 300}/files/demo/demo-1.0.tar.gz",
        f"/pypi/files/{'d' * 300}/demo-1.0.tar.gz",
        f"/pypi/files/demo/demo-1.0-{'x' * 2000}.tar.gz",
    ],
)
async def test_bad_names_on_the_file_routes_are_404(
    start_cache: StartCache, upstream: LocalUpstream, target: str
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    cache = await start_cache()
    port = int(yarl.URL(cache.url).port or 0)

    status, _answer = await raw_get(port, target)

    assert status == 404
    assert sum(hits for path, hits in upstream.hits.items() if path.startswith("/files/")) == 0


@pytest.fixture(params=["disk", "disk-warm-path", "s3-stream"])
def serving_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, bool]:
    """A store the cache serves bytes from itself, and whether it runs behind pathsend."""
    if request.param.startswith("disk"):
        return disk_store(tmp_path), request.param == "disk-warm-path"
    config = msgspec.structs.replace(request.getfixturevalue("s3_storage"), redirect=False)
    return s3_store(config, tmp_path, "s3-stream"), False


async def test_ranges_and_last_modified_are_answered_alike_by_every_store(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    serving_store: tuple[Store, bool],
) -> None:
    store, pathsend = serving_store
    upstream.add(UpstreamProject("demo", [SDIST]))
    cache = await start_cache(storage=store.config, wrap=PathsendAsBody if pathsend else None)
    url = cache.url + our_path(SDIST)
    assert (await fetch(http, url)).body == SDIST.content  # cold
    await wait_stored(db, SDIST)

    warm = await fetch(http, url)
    last_modified = warm.headers["Last-Modified"]
    stored_time = (await db.fetchval("SELECT stored_at FROM files")).replace(microsecond=0)
    assert last_modified == stored_time.strftime("%a, %d %b %Y %H:%M:%S GMT")
    for header in ["items=0-5", "bytes=5-2", "bytes=0-1,5-9", "bytes=abc"]:
        ignored = await fetch(http, url, {"Range": header})
        assert (ignored.status, ignored.body) == (200, SDIST.content), header
        assert ignored.headers["Last-Modified"] == last_modified, header
    piece = await fetch(http, url, {"Range": "BYTES=5-9"})
    assert (piece.status, piece.body) == (206, SDIST.content[5:10])
    assert piece.headers["Last-Modified"] == last_modified
    past_the_end = await fetch(http, url, {"Range": f"bytes={SIZE}-"})
    assert past_the_end.status == 416
    other_bytes = await fetch(http, url, {"Range": "bytes=5-9", "If-Range": '"other"'})
    assert (other_bytes.status, other_bytes.body) == (200, SDIST.content)
    same_bytes = await fetch(http, url, {"Range": "bytes=5-9", "If-Range": last_modified})
    assert (same_bytes.status, same_bytes.body) == (206, SDIST.content[5:10])

    later = (stored_time + dt.timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    earlier = (stored_time - dt.timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    for since in (last_modified, later):
        not_modified = await fetch(http, url, {"If-Modified-Since": since})
        assert (not_modified.status, not_modified.body) == (304, b""), since
        assert not_modified.headers["ETag"] == f'"{SDIST.sha256}"'
        assert not_modified.headers["Last-Modified"] == last_modified
    modified = await fetch(http, url, {"If-Modified-Since": earlier})
    assert (modified.status, modified.body) == (200, SDIST.content)
    # If-None-Match decides when both are sent (RFC 9110 13.2.2).
    both = await fetch(http, url, {"If-None-Match": '"other"', "If-Modified-Since": last_modified})
    assert (both.status, both.body) == (200, SDIST.content)
    head = await fetch(http, url, method="HEAD")
    assert head.headers["Last-Modified"] == last_modified
    assert upstream.hits[upstream_path(SDIST)] == 1


async def test_a_redirect_to_the_bucket_carries_last_modified(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    s3_storage: StorageConfig,
    tmp_path: Path,
) -> None:
    store = s3_store(s3_storage, tmp_path)
    upstream.add(UpstreamProject("demo", [SDIST]))
    cache = await start_cache(storage=store.config)
    url = cache.url + our_path(SDIST)
    assert (await fetch(http, url)).body == SDIST.content
    await wait_stored(db, SDIST)

    redirect = await fetch(http, url)
    not_modified = await fetch(http, url, {"If-Modified-Since": redirect.headers["Last-Modified"]})

    assert redirect.status == 308
    assert not_modified.status == 304
