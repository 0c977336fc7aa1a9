"""Bounded storage through a real server, database, upstream and store (disk and S3).

A store past its cap is swept down to the low-water mark, least recently used first (uses
driven by the cache's clock); `gc --dry-run` prints what the real run then removes and
changes nothing; a client reading a file while it is evicted gets every byte, and the next
request fetches it again; of two replicas sweeping at once, one does the work.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
import yarl

from mypypi2 import cli
from mypypi2.config import Config, StorageConfig
from mypypi2.eviction import low_water
from mypypi2.storage.configured import open_storage
from mypypi2.sweep import Report, Sweeper, grace_seconds
from mypypi2.usage import LastUse
from tests import dists
from tests.local_upstream import LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.apps import PathsendAsBody, RouteSpy, StateSpy
from tests.support.cache import Clock, RunningCache, StartCache
from tests.support.files import (
    Store,
    content,
    disk_store,
    fetch,
    file_row,
    our_path,
    s3_client,
    s3_store,
    sha256,
    upstream_path,
    wait_stored,
)
from tests.support.http import Answer
from tests.support.waiting import eventually

MIB = 1024 * 1024
DAY = 86400.0
# Five real wheels of one project, a few hundred bytes apart in size at most.
WHEELS = [dists.wheel("demo", f"1.{minor}") for minor in range(5)]


@pytest.fixture(params=["disk", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "disk":
        return disk_store(tmp_path)
    return s3_store(request.getfixturevalue("s3_storage"), tmp_path)


@dataclass
class Instance:
    """A running cache and the eviction machinery of its worker."""

    cache: RunningCache
    state: dict[str, Any]

    @property
    def sweeper(self) -> Sweeper:
        sweeper: Sweeper = self.state["sweeper"]
        return sweeper

    @property
    def usage(self) -> LastUse:
        usage: LastUse = self.state["usage"]
        return usage


async def start(
    start_cache: StartCache,
    http: aiohttp.ClientSession,
    storage: StorageConfig,
    clock: Clock,
) -> Instance:
    found: list[Any] = []
    cache = await start_cache(storage=storage, clock=clock, wrap=lambda app: StateSpy(app, found))
    await fetch(http, cache.url + "/-/health")  # hands the test the lifespan state
    return Instance(cache, found[0])


async def stored_unused_for_a_day(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
    file: UpstreamFile,
    clock: Clock,
) -> tuple[Instance, str]:
    """A cache evicting files unused for a day, holding `file` (stored through a request),
    and the file's URL."""
    upstream.add(UpstreamProject("demo", [file]))
    cache = await start(start_cache, http, limited(store, evict_unused_after=DAY), clock)
    url = cache.cache.url + our_path(file)
    await fetch(http, url)
    await wait_stored(db, file)
    return cache, url


def limited(store: Store, **limits: Any) -> StorageConfig:
    return msgspec.structs.replace(store.config, **limits)


async def get(http: aiohttp.ClientSession, store: Store, url: str) -> Answer:
    """A file as a client ends up with it (an S3 redirect followed)."""
    answer = await fetch(http, url)
    if store.redirects and answer.status == 308:
        return await fetch(http, yarl.URL(answer.headers["Location"], encoded=True))
    return answer


def key(store: Store, file: UpstreamFile) -> str:
    """The storage key (what the sweep reports), without the S3 prefix."""
    return f"pypi/{file.sha256[:2]}/{file.sha256}/{file.filename}"


async def stored_keys(db: asyncpg.Connection) -> set[str]:
    rows = await db.fetch("SELECT stored_key FROM files WHERE stored_key IS NOT NULL")
    return {row["stored_key"] for row in rows}


def sweep_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(record.getMessage())
        for record in caplog.records
        if record.name == "mypypi2.sweep" and "eviction-sweep" in record.getMessage()
    ]


# -- the cap, least recently used first -------------------------------------------------------


async def test_over_the_cap_the_least_recently_used_go_until_under_the_low_water_mark(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mypypi2.sweep")
    upstream.add(UpstreamProject("demo", list(WHEELS)))
    sizes = {wheel.filename: len(wheel.content) for wheel in WHEELS}
    total = sum(sizes.values())
    # With five files of about one size, a cap at 84% of them keeps three under its low
    # water mark (75.6%): two files go.
    cap = total * 84 // 100
    clock = Clock()
    cache = await start(start_cache, http, limited(store, max_bytes=cap), clock)
    for wheel in WHEELS:
        assert (await fetch(http, cache.cache.url + our_path(wheel))).body == wheel.content
        assert (await fetch(http, cache.cache.url + our_path(wheel) + ".metadata")).status == 200
        await wait_stored(db, wheel)
    # Used in this order, a minute apart, well after they were stored.
    clock.advance(DAY)
    used_in_order = [WHEELS[3], WHEELS[1], WHEELS[4], WHEELS[0], WHEELS[2]]
    for wheel in used_in_order:
        assert (await get(http, store, cache.cache.url + our_path(wheel))).body == wheel.content
        clock.advance(60)
    clock.advance(grace_seconds(store.config))  # on S3: as long as presigned URLs live

    report = await cache.sweeper.sweep()

    assert report is not None
    gone = used_in_order[:2]
    assert [e.object.key for e in report.evicted] == [key(store, w) for w in gone]
    assert {e.reason for e in report.evicted} == {"over-cap"}
    kept = used_in_order[2:]
    assert sum(sizes[w.filename] for w in kept) <= low_water(cap)
    assert await stored_keys(db) == {key(store, w) for w in kept}
    assert store.objects() == sorted(store.key(w) for w in kept)
    for wheel in gone:  # the metadata stays in the database
        assert (await file_row(db, wheel.filename))["metadata_body"] == wheel.metadata
    [line] = sweep_lines(caplog)
    assert line["evicted"] == 2
    assert line["bytes_freed"] == sum(sizes[w.filename] for w in gone)
    assert line["usage_bytes"] == sum(sizes[w.filename] for w in kept)
    assert line["max_bytes"] == cap
    # Under the cap now: the next sweep has nothing to do.
    again = await cache.sweeper.sweep()
    assert again is not None and again.evicted == []


async def test_files_unused_for_longer_than_the_limit_go(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    upstream.add(UpstreamProject("demo", WHEELS[:2]))
    clock = Clock()
    cache = await start(start_cache, http, limited(store, evict_unused_after=30 * DAY), clock)
    for wheel in WHEELS[:2]:
        await fetch(http, cache.cache.url + our_path(wheel))
        await wait_stored(db, wheel)
    clock.advance(20 * DAY)
    await get(http, store, cache.cache.url + our_path(WHEELS[1]))  # used: 10 more days
    clock.advance(11 * DAY)

    report = await cache.sweeper.sweep()

    assert report is not None
    assert [(e.object.key, e.reason) for e in report.evicted] == [(key(store, WHEELS[0]), "unused")]
    assert await stored_keys(db) == {key(store, WHEELS[1])}


async def test_an_evicted_file_is_fetched_again_with_the_same_bytes(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    wheel = WHEELS[0]
    clock = Clock()
    cache, url = await stored_unused_for_a_day(start_cache, upstream, http, db, store, wheel, clock)
    assert (await get(http, store, url)).body == wheel.content  # known to the worker now
    clock.advance(2 * DAY)

    report = await cache.sweeper.sweep()
    assert report is not None and len(report.evicted) == 1

    # The worker heard it let go: the next request is a download, not a lost object.
    again = await get(http, store, url)
    assert again.status == 200
    assert sha256(again.body) == wheel.sha256
    assert upstream.hits[upstream_path(wheel)] == 2
    row = await wait_stored(db, wheel)
    assert row["stored_sha256"] == wheel.sha256


# -- safety -----------------------------------------------------------------------------------

BIG = UpstreamFile("demo-2.0.tar.gz", content(20 * MIB, seed=2))


@pytest.mark.parametrize("kind", ["disk", "s3-stream"])
async def test_a_client_reading_a_file_while_gc_runs_gets_every_byte(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
    kind: str,
    request: pytest.FixtureRequest,
) -> None:
    if kind == "disk":
        store = disk_store(tmp_path)
    else:
        s3 = msgspec.structs.replace(request.getfixturevalue("s3_storage"), redirect=False)
        store = s3_store(s3, tmp_path, kind)
    clock = Clock()
    cache, url = await stored_unused_for_a_day(start_cache, upstream, http, db, store, BIG, clock)

    async with http.get(url) as response:
        digest = hashlib.sha256(await response.content.readany())
        clock.advance(2 * DAY)  # the read began long "ago": past the limit and the grace
        report = await cache.sweeper.sweep()
        async for chunk in response.content.iter_any():
            digest.update(chunk)
    assert response.status == 200
    assert digest.hexdigest() == BIG.sha256

    assert report is not None
    if kind == "disk":
        # Evicted under the reader: its open file kept every byte (POSIX).
        assert [e.object.key for e in report.evicted] == [key(store, BIG)]
    else:
        # A stream through the service counts as a use while it lasts: nothing went.
        assert report.evicted == []
        clock.advance(2 * DAY)
        later = await cache.sweeper.sweep()
        assert later is not None and len(later.evicted) == 1
    assert store.objects() == []

    again = await fetch(http, url)
    assert sha256(again.body) == BIG.sha256
    assert upstream.hits[upstream_path(BIG)] == 2


async def test_a_file_being_downloaded_or_just_used_is_not_evicted(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    old, fresh = WHEELS[0], WHEELS[1]
    upstream.add(UpstreamProject("demo", [old, fresh]))
    clock = Clock()
    cache = await start(start_cache, http, limited(store, max_bytes=1), clock)
    for wheel in (old, fresh):
        await fetch(http, cache.cache.url + our_path(wheel))
        await wait_stored(db, wheel)
    clock.advance(DAY)
    await get(http, store, cache.cache.url + our_path(fresh))
    clock.advance(grace_seconds(store.config) / 2)
    # A download of `old` under way again (as another worker would hold it).
    old_id = (await file_row(db, old.filename))["id"]
    await db.execute("UPDATE file_downloads SET state = 'running' WHERE file_id = $1", old_id)

    report = await cache.sweeper.sweep()

    assert report is not None and report.evicted == []  # still over the cap, all the same
    assert await stored_keys(db) == {key(store, old), key(store, fresh)}


# -- gc, the command --------------------------------------------------------------------------


async def test_gc_dry_run_changes_nothing_and_lists_what_the_real_run_removes(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = disk_store(tmp_path)
    upstream.add(UpstreamProject("demo", list(WHEELS)))
    total = sum(len(w.content) for w in WHEELS)
    cap = total * 84 // 100
    clock = Clock()
    clock.now = time.time() - 2 * DAY  # the command runs on the real clock, days later
    storage = limited(store, max_bytes=cap)
    cache = await start(start_cache, http, storage, clock)
    for wheel in WHEELS:
        await fetch(http, cache.cache.url + our_path(wheel))
        await wait_stored(db, wheel)
        clock.advance(60)
    await cache.usage.flush()
    config = gc_config(tmp_path, database, storage, upstream)
    before = (store.objects(), await stored_keys(db))

    dry = await gc(capsys, config, "--dry-run")

    assert (store.objects(), await stored_keys(db)) == before
    would = [line.split()[2] for line in dry if line.startswith("would remove ")]
    assert would == [key(store, WHEELS[0]), key(store, WHEELS[1])]  # the first stored

    assert "#" not in capsys.readouterr().err  # no terminal: plain lines only
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    real = await gc(capsys, config)
    monkeypatch.undo()

    removed = [line.split()[1] for line in real if line.startswith("removed ")]
    assert removed == would
    assert await stored_keys(db) == {key(store, w) for w in WHEELS[2:]}
    assert store.objects() == sorted(store.key(w) for w in WHEELS[2:])
    assert real[-1].startswith("2 file(s), freed ")
    assert f"[{'#' * 30}] 2/2 files" in terminal.getvalue()  # and a progress bar


async def test_gc_says_which_files_it_keeps_because_they_were_just_used(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A store over its cap that gc leaves alone would look broken without a word on why.
    store = disk_store(tmp_path)
    wheels = WHEELS[:2]
    upstream.add(UpstreamProject("demo", wheels))
    storage = limited(store, max_bytes=1)
    cache = await start(start_cache, http, storage, Clock())  # the real time: just used
    for wheel in wheels:
        await fetch(http, cache.cache.url + our_path(wheel))
        await wait_stored(db, wheel)
    config = gc_config(tmp_path, database, storage, upstream)

    lines = await gc(capsys, config, "--dry-run")

    assert lines[0].startswith("0 file(s), would free 0 B; store usage ")
    assert lines[1].startswith("kept whatever the limits say: 2 file(s) (")
    assert lines[1].endswith(" used in the last 5m or being downloaded")
    assert await stored_keys(db) == {key(store, w) for w in wheels}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_gc_refuses_an_unknown_repository(tmp_path: Path) -> None:
    config = tmp_path / "gc.toml"
    config.write_text('[[repositories]]\nname = "pypi"\nupstream = "http://up.example/simple/"\n')

    status = await asyncio.to_thread(
        cli.main, ["--config", str(config), "gc", "--repository", "nope"]
    )

    assert status == 2


def gc_config(
    tmp_path: Path, database: str, storage: StorageConfig, upstream: LocalUpstream
) -> Path:
    """A config file for `mypypi2 gc` naming the cache's database, store and its limits."""
    config = tmp_path / "gc.toml"
    config.write_text(
        f'data-dir = "{tmp_path / "data"}"\n'
        f'[database]\nurl = "{database}"\n'
        f'[storage]\npath = "{storage.path}"\nmax-bytes = {storage.max_bytes}\n'
        f'[[repositories]]\nname = "pypi"\nupstream = "{upstream.url}"\n'
    )
    return config


async def gc(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> list[str]:
    status = await asyncio.to_thread(cli.main, ["--config", str(config), "gc", *args])
    assert status == 0
    return capsys.readouterr().out.splitlines()


# -- replicas ---------------------------------------------------------------------------------


async def test_of_two_replicas_sweeping_at_once_one_does_the_work(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    database: str,
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mypypi2.sweep")
    upstream.add(UpstreamProject("demo", list(WHEELS)))
    clock = Clock()
    storage = limited(store, evict_unused_after=DAY)
    first = await start(start_cache, http, storage, clock)
    second = await start(start_cache, http, storage, clock)
    for wheel in WHEELS:
        await fetch(http, first.cache.url + our_path(wheel))
        await wait_stored(db, wheel)
    clock.advance(2 * DAY)
    # Hold the rows, so that the first sweeper stops, holding the sweep's lock, where it
    # lets go of them.
    holder = await asyncpg.connect(database)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT id FROM files FOR UPDATE")
        sweeping = asyncio.create_task(first.sweeper.sweep())

        async def lock_held() -> bool:
            count: int = await db.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            )
            return count == 1

        await eventually(lock_held, "the first sweeper holds the lock")
        skipped = await second.sweeper.sweep()
        await transaction.rollback()
    finally:
        await holder.close()
    done: Report | None = await sweeping

    assert skipped is None
    assert done is not None
    assert sorted(e.object.key for e in done.evicted) == sorted(key(store, w) for w in WHEELS)
    assert await stored_keys(db) == set()
    assert store.objects() == []
    assert [line["evicted"] for line in sweep_lines(caplog)] == [len(WHEELS)]

    # Both at once again, unhindered: nothing left, and the lock is free for each in turn.
    reports = await asyncio.gather(first.sweeper.sweep(), second.sweeper.sweep())
    assert all(report is None or report.evicted == [] for report in reports)


# -- last uses --------------------------------------------------------------------------------


async def test_last_uses_reach_the_database_in_one_flush_and_older_ones_never_win(
    database: str, db: asyncpg.Connection
) -> None:
    clock = Clock()
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    assert pool is not None
    try:
        usage = LastUse(pool, clock=clock)
        usage.used("pypi/a")
        clock.advance(10)
        usage.used("pypi/b")
        await usage.flush()
        recorded = {
            row["stored_key"]: row["used_at"].timestamp()
            for row in await db.fetch("SELECT stored_key, used_at FROM stored_uses")
        }
        assert recorded == pytest.approx({"pypi/a": clock.now - 10, "pypi/b": clock.now})

        late = LastUse(pool, clock=lambda: clock.now - 100)  # a worker flushing an older use
        late.used("pypi/b")
        await late.flush()
        used_at = await db.fetchval("SELECT used_at FROM stored_uses WHERE stored_key = 'pypi/b'")
        assert used_at.timestamp() == pytest.approx(clock.now)
    finally:
        await pool.close()


async def test_the_warm_path_records_a_use_and_the_background_sweeper_evicts(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    store = disk_store(tmp_path)
    wheel = WHEELS[0]
    upstream.add(UpstreamProject("demo", [wheel]))
    clock = Clock()
    found: list[Any] = []
    routes = RouteSpy()
    cache = await start_cache(
        storage=limited(store, evict_unused_after=DAY),
        clock=clock,
        # A server with zero-copy sends: stored files are answered by the warm path.
        wrap=lambda app: StateSpy(PathsendAsBody(routes.wrap(app)), found),
    )
    url = cache.url + our_path(wheel)
    await fetch(http, url)
    await wait_stored(db, wheel)
    await fetch(http, url)  # the worker knows the file now: the warm path answers
    instance = Instance(cache, found[0])
    await instance.usage.flush()
    clock.advance(DAY / 2)
    routed = len(routes.paths)
    assert (await fetch(http, url)).body == wheel.content
    assert len(routes.paths) == routed  # answered by the warm path
    await instance.usage.flush()
    used_at = await db.fetchval("SELECT used_at FROM stored_uses")
    assert used_at.timestamp() == pytest.approx(clock.now)

    clock.advance(DAY - 60)
    kept = await instance.sweeper.sweep()
    assert kept is not None and kept.evicted == []  # unused for less than a day since
    await instance.sweeper.close()
    instance.sweeper.start(every=0.01)
    clock.advance(120)  # now more than a day

    async def evicted() -> bool:
        return await stored_keys(db) == set()

    await eventually(evicted, "the background sweeper evicts the file")
    await eventually(lambda: store.objects() == [], "the bytes go after the row")


async def test_s3_deletes_many_objects_a_thousand_per_request(
    s3_storage: StorageConfig, tmp_path: Path
) -> None:
    client = s3_client(s3_storage)
    keys = [f"pypi/{n:04}" for n in range(1001)]
    for name in keys:
        client.put_object(Bucket=s3_storage.bucket, Key=f"{s3_storage.prefix}/{name}", Body=b"x")
    config = Config(data_dir=str(tmp_path / "data"), storage=s3_storage)
    async with AsyncExitStack() as stack:
        storage = await open_storage(config, stack)
        await storage.delete_many([*keys, "pypi/never-stored"])

    assert client.list_objects_v2(Bucket=s3_storage.bucket).get("KeyCount") == 0


async def test_a_hot_file_keeps_its_first_use_until_the_flush_then_counts_anew(
    database: str, db: asyncpg.Connection
) -> None:
    clock = Clock()
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    assert pool is not None
    try:
        usage = LastUse(pool, clock=clock)
        first = clock.now
        usage.used("pypi/a")
        clock.advance(30)
        usage.used("pypi/a")  # within the same flush: no clock read, no change
        await usage.flush()
        assert (await db.fetchval("SELECT used_at FROM stored_uses")).timestamp() == (
            pytest.approx(first)
        )
        usage.used("pypi/a")
        await usage.flush()
        assert (await db.fetchval("SELECT used_at FROM stored_uses")).timestamp() == (
            pytest.approx(clock.now)
        )
    finally:
        await pool.close()


async def test_a_request_while_the_bytes_are_deleted_waits_then_stores_the_file_anew(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    store: Store,
) -> None:
    wheel = WHEELS[0]
    clock = Clock()
    cache, url = await stored_unused_for_a_day(start_cache, upstream, http, db, store, wheel, clock)
    clock.advance(2 * DAY)
    sweeping = asyncio.create_task(cache.sweeper.sweep())

    async def let_go() -> bool:
        return (await file_row(db, wheel.filename))["stored_key"] is None

    await eventually(let_go, "the row lets go (the bytes go a moment later)")
    # Asked for between the row letting go and the bytes going: had it been stored again
    # now, the deletion would take the new object.
    answer = await get(http, store, url)
    report = await sweeping

    assert report is not None and len(report.evicted) == 1
    assert sha256(answer.body) == wheel.sha256
    await wait_stored(db, wheel)
    assert store.objects() == [store.key(wheel)]
    assert upstream.hits[upstream_path(wheel)] == 2
