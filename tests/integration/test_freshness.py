"""The freshness policy of pages.py and page_refresh.py through a real server, database and
upstream, on a clock the tests move: TTL and conditional revalidation, stale-while-revalidate,
the stale-if-error window, gone-after-404s, the negative cache, offline mode and purges
across instances.

Not repeated here (see test_coalescing.py, test_upstream_faults.py, test_restart.py):
concurrent cold misses, one conditional request after the TTL, a lower serial kept out,
bad answers for cold projects one by one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import tomli_w
from starlette.types import ASGIApp

from mypypi2 import cli
from mypypi2 import pages as pages_module
from mypypi2.config import RepositoryConfig
from mypypi2.pages import Pages
from mypypi2.queries.notifications import Purged, notify_purged
from mypypi2.storage import storage_key
from tests import dists
from tests.local_upstream import (
    Fault,
    LocalUpstream,
    UpstreamFile,
    UpstreamProject,
    _json_page,
)
from tests.support.apps import StateSpy
from tests.support.cache import Clock, RunningCache, StartCache, repository
from tests.support.http import JSON_V1, Answer, get
from tests.support.waiting import eventually

PATH = "/simple/demo/"
OLD = UpstreamFile("demo-1.0.tar.gz", b"the first sdist")
NEW = UpstreamFile("demo-2.0.tar.gz", b"a later sdist")
STALE = "X-Mypypi2-Stale"
TEN_YEARS = 10 * 365 * 86400.0


async def get_many(http: aiohttp.ClientSession, url: str, count: int) -> list[Answer]:
    return list(await asyncio.gather(*(get(http, url) for _ in range(count))))


async def project_row(dsn: str, name: str = "demo") -> Any:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchrow(
            "SELECT found, revision, checked_at, etag, missing_count FROM projects"
            " WHERE repository = 'pypi' AND name = $1",
            name,
        )
    finally:
        await connection.close()


Launch = Callable[..., Awaitable[RunningCache]]


@pytest.fixture
def launch_spied(start_cache: StartCache) -> Launch:
    """`start_cache`, optionally with a spy on the instance's worker snapshots."""

    async def start(
        *repositories: RepositoryConfig,
        clock: Clock | None = None,
        offline: bool = False,
        spy: list[Pages] | None = None,
    ) -> RunningCache:
        wrap = None
        if spy is not None:
            found = spy

            def wrap(app: ASGIApp) -> ASGIApp:
                return StateSpy(app, found, "pages")

        return await start_cache(*repositories, clock=clock, offline=offline, wrap=wrap)

    return start


# -- TTL and conditional revalidation ----------------------------------------------------------


async def test_revalidation_cycles_304_new_content_and_same_content(
    start_cache: StartCache, upstream: LocalUpstream, database: str, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    project = upstream.add(UpstreamProject("demo", [OLD]))
    cache = await start_cache(
        repository("pypi", upstream, ttl=60, stale_while_revalidate=0), clock=clock
    )
    url = f"{cache.url}/pypi/simple/demo/"
    first = await get(http, url)
    assert first.status == 200
    stored = await project_row(database)

    # Fresh: however often asked, nobody asks the upstream.
    clock.advance(59)
    for _ in range(5):
        assert (await get(http, url)).body == first.body
    assert upstream.hits[PATH] == 1

    # Expired, unchanged upstream: one conditional request, a 304, no rewrite.
    clock.advance(2)
    confirmed = await get(http, url)
    assert (confirmed.status, confirmed.body) == (200, first.body)
    assert confirmed.headers["ETag"] == first.headers["ETag"]
    assert upstream.hits[PATH] == 2
    revalidation = upstream.requests_for(PATH)[-1]
    assert revalidation.headers["If-None-Match"] == stored["etag"]
    assert revalidation.status == 304
    after_304 = await project_row(database)
    assert after_304["revision"] == stored["revision"]
    assert after_304["checked_at"].timestamp() == pytest.approx(clock.now, abs=1e-3)

    # The 304 restarted the TTL: fresh again until 60 s after it.
    clock.advance(59)
    assert (await get(http, url)).body == first.body
    assert upstream.hits[PATH] == 2

    # Expired, changed upstream: the conditional request gets a 200 and the new page.
    project.files = [OLD, NEW]
    project.serial = 2
    clock.advance(2)
    changed = await get(http, url)
    assert changed.status == 200
    assert changed.filenames() == [OLD.filename, NEW.filename]
    assert changed.headers["ETag"] != first.headers["ETag"]
    assert upstream.hits[PATH] == 3
    revalidation = upstream.requests_for(PATH)[-1]
    assert revalidation.headers["If-None-Match"] == stored["etag"]
    assert revalidation.status == 200
    after_200 = await project_row(database)
    assert after_200["revision"] == stored["revision"] + 1
    assert after_200["etag"] != stored["etag"]

    # Expired, and the upstream sends the same content again without a validator (a CDN
    # that drops ETags): a 200, but nothing changed, so nothing is rewritten.
    upstream.fail(PATH, Fault(body=json.dumps(_json_page(project)).encode(), content_type=JSON_V1))
    clock.advance(61)
    same = await get(http, url)
    assert (same.status, same.body) == (200, changed.body)
    assert same.headers["ETag"] == changed.headers["ETag"]
    assert upstream.hits[PATH] == 4
    assert upstream.requests_for(PATH)[-1].status == 200
    after_same = await project_row(database)
    assert after_same["revision"] == after_200["revision"]
    assert after_same["checked_at"].timestamp() == pytest.approx(clock.now, abs=1e-3)


# -- stale-while-revalidate --------------------------------------------------------------------


async def test_stale_while_revalidate_answers_at_once_and_revalidates_once(
    start_cache: StartCache, upstream: LocalUpstream, database: str, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    project = upstream.add(UpstreamProject("demo", [OLD]))
    cache = await start_cache(
        repository("pypi", upstream, ttl=60, stale_while_revalidate=30), clock=clock
    )
    url = f"{cache.url}/pypi/simple/demo/"
    first = await get(http, url)
    stored = await project_row(database)

    project.files = [OLD, NEW]
    project.serial = 2
    # The upstream holds every answer until the test opens the gate.
    gate = asyncio.Event()
    upstream.fail(PATH, Fault(gate=gate))
    clock.advance(61)  # past the TTL, within the window

    # All of them are answered while the upstream has not answered anything: they could
    # only come from the stored copy.
    answering = asyncio.ensure_future(get_many(http, url, 20))

    async def answered() -> bool:
        return answering.done()

    try:
        await eventually(answered, "every request answered while the upstream holds back")
    except BaseException:
        gate.set()  # let the requests end, to report the failure rather than hang
        raise
    for answer in answering.result():
        assert (answer.status, answer.body) == (200, first.body)
        assert answer.headers["ETag"] == first.headers["ETag"]
        assert not answer.stale

    # Behind them, exactly one background revalidation reaches the upstream, conditional.
    async def asked() -> bool:
        return upstream.hits[PATH] == 2

    await eventually(asked, "the background revalidation reaches the upstream")
    assert upstream.requests_for(PATH)[-1].headers["If-None-Match"] == stored["etag"]
    # More requests while it is pending join it instead of starting another.
    more = await get_many(http, url, 20)
    assert {a.body for a in more} == {first.body}
    assert upstream.hits[PATH] == 2

    gate.set()

    async def replaced() -> bool:
        return (await get(http, url)).filenames() == [OLD.filename, NEW.filename]

    await eventually(replaced, "the revalidated page is served")
    assert upstream.hits[PATH] == 2
    assert (await project_row(database))["revision"] == stored["revision"] + 1


async def test_past_the_stale_while_revalidate_window_the_answer_waits_for_the_upstream(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    project = upstream.add(UpstreamProject("demo", [OLD]))
    cache = await start_cache(
        repository("pypi", upstream, ttl=60, stale_while_revalidate=30), clock=clock
    )
    url = f"{cache.url}/pypi/simple/demo/"
    assert (await get(http, url)).filenames() == [OLD.filename]

    project.files = [OLD, NEW]
    project.serial = 2
    gate = asyncio.Event()
    upstream.fail(PATH, Fault(gate=gate))
    clock.advance(91)  # past TTL + window
    pending = asyncio.ensure_future(get(http, url))

    async def asked() -> bool:
        return upstream.hits[PATH] == 2

    try:
        await eventually(asked, "the revalidation reaches the upstream")
        # The upstream has not answered: neither may we.
        assert not pending.done()
    finally:
        gate.set()
    answer = await pending

    # What the upstream said then, not what was stored.
    assert answer.status == 200
    assert answer.filenames() == [OLD.filename, NEW.filename]
    assert not answer.stale
    assert upstream.hits[PATH] == 2


# -- stale-if-error window -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "reason"),
    [(Fault(status=500), 502, "HTTP 500"), (Fault(delay=30.0), 504, "timed out")],
    ids=["status-500", "timeout"],
)
async def test_stale_if_error_window(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    fault: Fault,
    status: int,
    reason: str,
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", [OLD]))
    options = {"ttl": 60, "stale_while_revalidate": 0, "stale_if_error": 600}
    cache = await start_cache(
        repository("pypi", upstream, read_timeout=0.3, **options), clock=clock
    )
    url = f"{cache.url}/pypi/simple/demo/"
    stored = await get(http, url)
    upstream.fail(PATH, fault)

    clock.advance(61)  # just past the TTL
    early = await get(http, url)
    clock.advance(598)  # 1 s before TTL + window
    late = await get(http, url)

    for answer in (early, late):
        assert (answer.status, answer.body) == (200, stored.body)
        assert answer.headers[STALE] == "upstream-unavailable"
        assert answer.headers["ETag"] == stored.headers["ETag"]
    assert upstream.hits[PATH] == 3

    clock.advance(41)  # well past TTL + window, and past the pause after the last failure
    beyond = await get(http, url)

    assert beyond.status == status, beyond.body
    assert reason in beyond.body.decode()
    assert beyond.headers["Cache-Control"] == "no-store"
    assert upstream.hits[PATH] == 4


async def test_stale_copy_is_not_served_past_the_window_end(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", [OLD]))
    options = {"ttl": 60, "stale_while_revalidate": 0, "stale_if_error": 600}
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    url = f"{cache.url}/pypi/simple/demo/"
    assert (await get(http, url)).status == 200
    upstream.fail(PATH, Fault(status=500))

    clock.advance(659)  # 1 s before the window ends: served stale
    assert (await get(http, url)).stale
    clock.advance(2)  # 1 s after it ends
    beyond = await get(http, url)

    assert beyond.status == 502, (beyond.status, dict(beyond.headers))


async def test_stale_if_error_forever(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", [OLD]))
    options = {"ttl": 60, "stale_while_revalidate": 0, "stale_if_error": "forever"}
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    url = f"{cache.url}/pypi/simple/demo/"
    stored = await get(http, url)
    upstream.fail(PATH, Fault(status=503))

    clock.advance(TEN_YEARS)
    answer = await get(http, url)

    assert (answer.status, answer.body) == (200, stored.body)
    assert answer.headers[STALE] == "upstream-unavailable"
    assert upstream.hits[PATH] == 2


# -- an outage: stored pages served stale, cold ones a clear error ---------------------------

_GARBAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
OUTAGES: dict[str, tuple[Fault | None, int, str]] = {
    "timeout": (Fault(delay=30.0), 504, "timed out"),
    "connection-refused": (None, 502, "Cannot connect to host"),
    "connection-reset": (Fault(reset=True), 502, "Disconnected"),
    "status-500": (Fault(status=500), 502, "HTTP 500"),
    "status-503": (Fault(status=503), 502, "HTTP 503"),
    "garbage-body": (Fault(body=_GARBAGE, content_type=JSON_V1), 502, "malformed page"),
}


@pytest.mark.parametrize(("fault", "status", "reason"), OUTAGES.values(), ids=OUTAGES.keys())
async def test_outage_serves_stored_pages_stale_and_fails_cold_ones(
    start_cache: StartCache,
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
    fault: Fault | None,
    status: int,
    reason: str,
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", [OLD]))
    upstream.add(UpstreamProject("cold", [UpstreamFile("cold-1.0.tar.gz")]))
    options = {"ttl": 60, "stale_while_revalidate": 0, "read_timeout": 0.3}
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    stored = await get(http, f"{cache.url}/pypi/simple/demo/")
    assert stored.status == 200

    if fault is None:
        await upstream.stop()  # nothing listens on its port any more
    else:
        upstream.fail(PATH, fault)
        upstream.fail("/simple/cold/", fault)
    clock.advance(61)
    served = await get(http, f"{cache.url}/pypi/simple/demo/")
    failed = await get(http, f"{cache.url}/pypi/simple/cold/")

    assert (served.status, served.body) == (200, stored.body)
    assert served.headers[STALE] == "upstream-unavailable"
    assert failed.status == status, failed.body
    assert reason in failed.body.decode()
    assert failed.headers["Cache-Control"] == "no-store"
    assert await project_row(database, "cold") is None
    if fault is not None:
        # Each was really asked (aiohttp resends once when the server hangs up on it).
        attempts = 2 if fault.reset else 1
        assert upstream.hits[PATH] == 1 + attempts
        assert upstream.hits["/simple/cold/"] == attempts


# -- gone after N consecutive 404s -------------------------------------------------------------


@pytest.mark.parametrize("gone_after", [1, 3])
async def test_stored_project_is_given_up_after_n_consecutive_404s(
    start_cache: StartCache,
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
    gone_after: int,
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", [OLD]))
    options = {"ttl": 60, "stale_while_revalidate": 0, "gone_after_404s": gone_after}
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    url = f"{cache.url}/pypi/simple/demo/"
    stored = await get(http, url)
    del upstream.projects["demo"]

    for count in range(1, gone_after):
        clock.advance(61)
        answer = await get(http, url)
        assert (answer.status, answer.body) == (200, stored.body), count
        assert answer.headers[STALE] == "upstream-unavailable"
        assert upstream.hits[PATH] == 1 + count
        row = await project_row(database)
        assert (row["found"], row["missing_count"]) == (True, count)

    clock.advance(61)
    gone = await get(http, url)

    assert gone.status == 404, gone.body
    assert upstream.hits[PATH] == 1 + gone_after
    assert not (await project_row(database))["found"]


async def test_a_200_between_404s_resets_the_count(
    start_cache: StartCache, upstream: LocalUpstream, database: str, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    project = upstream.add(UpstreamProject("demo", [OLD]))
    options = {"ttl": 60, "stale_while_revalidate": 0, "gone_after_404s": 3}
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    url = f"{cache.url}/pypi/simple/demo/"
    stored = await get(http, url)

    async def answer_after_ttl() -> Answer:
        clock.advance(61)
        return await get(http, url)

    del upstream.projects["demo"]
    assert (await answer_after_ttl()).stale  # 404 number 1
    assert (await answer_after_ttl()).stale  # 404 number 2
    upstream.add(project)
    back = await answer_after_ttl()
    assert (back.status, back.stale, back.body) == (200, False, stored.body)
    assert (await project_row(database))["missing_count"] == 0

    del upstream.projects["demo"]
    # Without the reset, the first of these would be the third 404 in a row.
    assert (await answer_after_ttl()).stale
    assert (await answer_after_ttl()).stale
    assert (await answer_after_ttl()).status == 404
    assert upstream.hits[PATH] == 7


# -- negative cache ----------------------------------------------------------------------------


async def test_missing_project_costs_one_upstream_request_per_negative_ttl(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    cache = await start_cache(repository("pypi", upstream, negative_ttl=60), clock=clock)
    url = f"{cache.url}/pypi/simple/demo/"

    concurrent = await get_many(http, url, 50)
    sequential = [await get(http, url) for _ in range(50)]
    clock.advance(59)
    late = await get(http, url)

    assert {a.status for a in [*concurrent, *sequential, late]} == {404}
    assert upstream.hits[PATH] == 1

    clock.advance(2)
    after = await get_many(http, url, 20)

    assert {a.status for a in after} == {404}
    assert upstream.hits[PATH] == 2


# -- offline ----------------------------------------------------------------------------------


async def test_offline_serves_what_is_stored_and_nothing_else(
    start_cache: StartCache,
    launch_spied: Launch,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    wheel = dists.wheel("demo", "1.0")
    other_wheel = dists.wheel("demo", "1.1")
    upstream.add(UpstreamProject("demo", [wheel, other_wheel, OLD]))
    upstream.add(UpstreamProject("never", [UpstreamFile("never-1.0.tar.gz")]))
    config = repository("pypi", upstream, ttl=60, list_ttl=60)
    online = await start_cache(config, clock=clock)
    files = f"{online.url}/pypi/files/demo"
    for path in (wheel.filename, f"{wheel.filename}.metadata"):
        assert (await get(http, f"{files}/{path}")).status == 200
    pages = {
        accept: await get(http, f"{online.url}/pypi/simple/demo/", accept)
        for accept in (JSON_V1, "text/html")
    }
    await online.stop()
    asked = len(upstream.requests)

    clock.advance(TEN_YEARS)  # far past every TTL and window
    offline = await launch_spied(config, clock=clock, offline=True)
    base = f"{offline.url}/pypi"

    for accept, before in pages.items():
        for headers in ({}, {"Cache-Control": "no-cache"}, {"Cache-Control": "max-age=0"}):
            answer = await get(http, f"{base}/simple/demo/", accept, headers)
            assert (answer.status, answer.body) == (200, before.body), (accept, headers)
            assert answer.headers["ETag"] == before.headers["ETag"]
            assert not answer.stale
    stored_file = await get(http, f"{base}/files/demo/{wheel.filename}")
    assert (stored_file.status, stored_file.body) == (200, wheel.content)
    stored_metadata = await get(http, f"{base}/files/demo/{wheel.filename}.metadata")
    assert (stored_metadata.status, stored_metadata.body) == (200, wheel.metadata)

    never_stored = [
        f"{base}/simple/never/",
        f"{base}/simple/",  # the project list was never asked for
        f"{base}/files/demo/{OLD.filename}",  # listed, never downloaded
        f"{base}/files/demo/{other_wheel.filename}.metadata",
        f"{base}/files/never/never-1.0.tar.gz",
    ]
    for url in never_stored:
        assert (await get(http, url)).status == 404, url
    assert len(upstream.requests) == asked


# -- purge across instances --------------------------------------------------------------------


def write_config(tmp_path: Path, database: str, upstream: LocalUpstream) -> Path:
    """The configuration `mypypi2 purge` is run with: the instances' database and store."""
    path = tmp_path / "purge.toml"
    config = {
        "data-dir": str(tmp_path / "data"),
        "database": {"url": database},
        "repositories": [{"name": "pypi", "upstream": upstream.url}],
    }
    path.write_text(tomli_w.dumps(config))
    return path


async def purge(config: Path, *args: str) -> None:
    # The real command, as an operator runs it, in a thread: it runs its own event loop.
    status = await asyncio.to_thread(cli.main, ["--config", str(config), "purge", *args])
    assert status == 0


async def purge_pages(dsn: str, names: list[str] | None) -> int:
    """The async pieces `mypypi2 purge pypi [NAMES]` runs, on a connection of our own."""
    connection = await asyncpg.connect(dsn)
    try:
        count = await pages_module.purge(connection, "pypi", names)
        await notify_purged(connection, Purged("pypi", names, files=False))
    finally:
        await connection.close()
    return count


async def until_forgotten(pages: Pages, name: str) -> None:
    async def forgotten() -> bool:
        return pages.cache.get(("pypi", name)) is None

    await eventually(forgotten, f"the instance drops its snapshot of {name}")


async def test_purge_reaches_every_instance_and_refetches_once(
    launch_spied: Launch,
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    upstream.add(UpstreamProject("demo", [OLD]))
    upstream.add(UpstreamProject("other", [UpstreamFile("other-1.0.tar.gz")]))
    config = repository("pypi", upstream)  # a TTL of 600 s: nothing expires on its own
    spies: tuple[list[Pages], list[Pages]] = ([], [])
    instances = [await launch_spied(config, spy=spy) for spy in spies]
    for instance in instances:
        for name in ("demo", "other"):
            assert (await get(http, f"{instance.url}/pypi/simple/{name}/")).status == 200
    assert (upstream.hits[PATH], upstream.hits["/simple/other/"]) == (1, 1)
    [first], [second] = spies
    assert first is not second
    for pages in (first, second):
        assert pages.cache.get(("pypi", "demo")) is not None

    await purge(write_config(tmp_path, database, upstream), "pypi", "Demo")

    assert "purged 1 page(s)" in capsys.readouterr().out
    for pages in (first, second):
        await until_forgotten(pages, "demo")
        assert pages.cache.get(("pypi", "other")) is not None
    # Both instances at once: one upstream request in all, and not a conditional one.
    answers = await asyncio.gather(
        *(get(http, f"{instance.url}/pypi/simple/demo/") for instance in instances * 10)
    )
    assert {(a.status, a.stale) for a in answers} == {(200, False)}
    assert {a.filenames()[0] for a in answers} == {OLD.filename}
    assert upstream.hits[PATH] == 2
    refetch = upstream.requests_for(PATH)[-1]
    assert "If-None-Match" not in refetch.headers
    assert "If-Modified-Since" not in refetch.headers
    assert refetch.status == 200
    # What was not purged stays where it was.
    for instance in instances:
        assert (await get(http, f"{instance.url}/pypi/simple/other/")).status == 200
    assert upstream.hits["/simple/other/"] == 1


async def test_purge_files_deletes_them_and_the_next_get_downloads_again(
    launch_spied: Launch,
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wheel = dists.wheel("demo", "1.0")
    upstream.add(UpstreamProject("demo", [wheel]))
    config = repository("pypi", upstream)
    spies: tuple[list[Pages], list[Pages]] = ([], [])
    first, second = [await launch_spied(config, spy=spy) for spy in spies]
    file_path = f"/pypi/files/demo/{wheel.filename}"
    upstream_file = f"/files/demo/{wheel.filename}"
    for instance in (first, second):
        answer = await get(http, f"{instance.url}{file_path}")
        assert (answer.status, answer.body) == (200, wheel.content)
        assert (await get(http, f"{instance.url}{file_path}.metadata")).status == 200
    assert (upstream.hits[upstream_file], upstream.hits[f"{upstream_file}.metadata"]) == (1, 1)
    stored = tmp_path / "data" / "files" / storage_key("pypi", wheel.sha256, wheel.filename)
    assert stored.read_bytes() == wheel.content

    await purge(write_config(tmp_path, database, upstream), "pypi", "demo", "--files")

    assert "purged 1 page(s) and 1 stored file(s)" in capsys.readouterr().out
    assert not stored.exists()
    connection = await asyncpg.connect(database)
    try:
        row = await connection.fetchrow(
            "SELECT stored_key, stored_size, metadata_body FROM files WHERE filename = $1",
            wheel.filename,
        )
    finally:
        await connection.close()
    assert row is not None
    assert tuple(row) == (None, None, None)
    for pages in spies:
        await until_forgotten(pages[0], "demo")

    # Neither instance answers from memory: the first GET downloads it again, once.
    again = await get(http, f"{second.url}{file_path}")
    assert (again.status, again.body) == (200, wheel.content)
    from_first = await get(http, f"{first.url}{file_path}")
    assert (from_first.status, from_first.body) == (200, wheel.content)
    assert upstream.hits[upstream_file] == 2
    assert stored.read_bytes() == wheel.content
    metadata = await get(http, f"{first.url}{file_path}.metadata")
    assert (metadata.status, metadata.body) == (200, wheel.metadata)
    assert upstream.hits[f"{upstream_file}.metadata"] == 2


async def test_purge_of_a_whole_repository_includes_its_project_list(
    launch_spied: Launch, upstream: LocalUpstream, database: str, http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", [OLD]))
    spy: list[Pages] = []
    cache = await launch_spied(repository("pypi", upstream), spy=spy)
    for path in ("/simple/", PATH):
        assert (await get(http, f"{cache.url}/pypi{path}")).status == 200
    [pages] = spy

    assert await purge_pages(database, None) == 1
    await until_forgotten(pages, "demo")
    await until_forgotten(pages, "")

    for path in ("/simple/", PATH):
        assert (await get(http, f"{cache.url}/pypi{path}")).status == 200
        assert upstream.hits[path] == 2
        assert "If-None-Match" not in upstream.requests_for(path)[-1].headers


async def test_purged_page_is_still_served_stale_when_the_upstream_is_down(
    launch_spied: Launch, upstream: LocalUpstream, database: str, http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", [OLD]))
    spy: list[Pages] = []
    cache = await launch_spied(repository("pypi", upstream), spy=spy)
    url = f"{cache.url}/pypi/simple/demo/"
    stored = await get(http, url)
    [pages] = spy
    await upstream.stop()

    await purge_pages(database, ["demo"])
    await until_forgotten(pages, "demo")
    answer = await get(http, url)

    assert (answer.status, answer.body) == (200, stored.body)
    assert answer.headers[STALE] == "upstream-unavailable"
