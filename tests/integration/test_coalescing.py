"""N concurrent misses for one page cost one upstream request: within one app instance (the
coalescer) and across instances sharing one database (the page's lease). A revalidation
after the TTL is one conditional request, and a 304 leaves the stored revision alone."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.cache import Clock, StartCache, repository
from tests.support.http import get as http_get
from tests.support.waiting import eventually

PATH = "/simple/demo/"
FILES = [UpstreamFile("demo-1.0.tar.gz", b"one"), UpstreamFile("demo-1.1.tar.gz", b"two")]


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str | None, bytes]:
    answer = await http_get(http, url)
    return answer.status, answer.headers.get("ETag"), answer.body


async def get_many(
    http: aiohttp.ClientSession, urls: list[str]
) -> list[tuple[int, str | None, bytes]]:
    return list(await asyncio.gather(*(get(http, url) for url in urls)))


def assert_identical_200s(answers: list[tuple[int, str | None, bytes]], count: int) -> bytes:
    assert len(answers) == count
    assert {status for status, _, _ in answers} == {200}
    assert len({etag for _, etag, _ in answers}) == 1
    bodies = {body for _, _, body in answers}
    assert len(bodies) == 1
    return bodies.pop()


class InFlight:
    """Counts the requests an app instance has received and not yet answered."""

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            self.count += 1
            try:
                await app(scope, receive, send)
            finally:
                self.count -= 1

        return counted


async def get_many_held(
    http: aiohttp.ClientSession,
    urls: list[str],
    in_flight: InFlight,
    gate: asyncio.Event,
    upstream: LocalUpstream,
    path: str,
    hits: int,
) -> list[tuple[int, str | None, bytes]]:
    """`get_many`, with the upstream's answer held (`gate`) until every request has reached
    the cache and the upstream has been asked `hits` times in all: a condition, where a
    delay would have to guess how long 50 requests take to arrive on a busy machine."""
    requests = asyncio.ensure_future(get_many(http, urls))

    async def every_request_waits() -> bool:
        return in_flight.count == len(urls) and upstream.hits[path] == hits

    try:
        await eventually(every_request_waits, f"all {len(urls)} requests wait on the upstream")
    finally:
        gate.set()
        answers = await requests
    return answers


@pytest.mark.parametrize(("path", "url_path"), [(PATH, "demo/"), ("/simple/", "")])
async def test_concurrent_cold_misses_cost_one_upstream_request(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    path: str,
    url_path: str,
) -> None:
    upstream.add(UpstreamProject("demo", FILES))
    gate = asyncio.Event()
    upstream.fail(path, Fault(gate=gate))
    in_flight = InFlight()
    cache = await start_cache(wrap=in_flight.wrap)
    urls = [f"{cache.url}/pypi/simple/{url_path}"] * 50

    answers = await get_many_held(http, urls, in_flight, gate, upstream, path, hits=1)

    body = assert_identical_200s(answers, 50)
    assert b"demo" in body
    assert upstream.hits[path] == 1


@pytest.mark.parametrize(("path", "url_path"), [(PATH, "demo/"), ("/simple/", "")])
async def test_concurrent_misses_on_two_instances_cost_one_upstream_request(
    start_cache: StartCache,
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
    path: str,
    url_path: str,
) -> None:
    upstream.add(UpstreamProject("demo", FILES))
    # The upstream holds its answer until every request reached its instance: the second
    # instance's requests can then only be waiting for the first one's lease.
    gate = asyncio.Event()
    upstream.fail(path, Fault(gate=gate))
    first_counter, second_counter = InFlight(), InFlight()
    first = await start_cache(wrap=first_counter.wrap)
    second = await start_cache(wrap=second_counter.wrap)
    monitor = await asyncpg.connect(database)
    try:

        async def every_request_waits_on_one_lease() -> bool:
            held: int = await monitor.fetchval(
                "SELECT count(*) FROM page_refreshes WHERE holder IS NOT NULL"
            )
            arrived = first_counter.count == 25 and second_counter.count == 25
            return arrived and held == 1 and upstream.hits[path] == 1

        requests = asyncio.gather(
            get_many(http, [f"{first.url}/pypi/simple/{url_path}"] * 25),
            get_many(http, [f"{second.url}/pypi/simple/{url_path}"] * 25),
        )
        try:
            await eventually(every_request_waits_on_one_lease, "all 50 wait on one lease")
        finally:
            gate.set()
            from_first, from_second = await requests
    finally:
        await monitor.close()

    assert_identical_200s(from_first + from_second, 50)
    assert upstream.hits[path] == 1


async def _revision(database: str, path: str) -> tuple[int, float]:
    """The stored revision and checked_at (as a timestamp) of the page at upstream `path`."""
    connection = await asyncpg.connect(database)
    try:
        if path == "/simple/":
            row = await connection.fetchrow(
                "SELECT revision, checked_at FROM project_lists WHERE repository = 'pypi'"
            )
        else:
            row = await connection.fetchrow(
                "SELECT revision, checked_at FROM projects"
                " WHERE repository = 'pypi' AND name = 'demo'"
            )
    finally:
        await connection.close()
    assert row is not None
    return row["revision"], row["checked_at"].timestamp()


@pytest.mark.parametrize(("path", "url_path"), [(PATH, "demo/"), ("/simple/", "")])
async def test_concurrent_revalidation_after_ttl_is_one_conditional_request(
    start_cache: StartCache,
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
    path: str,
    url_path: str,
) -> None:
    upstream.add(UpstreamProject("demo", FILES))
    clock = Clock()
    in_flight = InFlight()
    cache = await start_cache(
        repository("pypi", upstream, ttl=60, list_ttl=60, stale_while_revalidate=0),
        clock=clock,
        wrap=in_flight.wrap,
    )
    url = f"{cache.url}/pypi/simple/{url_path}"
    status, etag, body = await get(http, url)
    assert status == 200
    revision, checked_at = await _revision(database, path)

    # Within the TTL nobody asks the upstream.
    clock.advance(59)
    assert_identical_200s(await get_many(http, [url] * 10), 10)
    assert upstream.hits[path] == 1

    clock.advance(2)
    gate = asyncio.Event()
    upstream.fail(path, Fault(gate=gate))
    answers = await get_many_held(http, [url] * 50, in_flight, gate, upstream, path, hits=2)

    assert assert_identical_200s(answers, 50) == body
    assert {answer_etag for _, answer_etag, _ in answers} == {etag}
    assert upstream.hits[path] == 2
    cold, revalidation = upstream.requests_for(path)
    assert "If-None-Match" not in cold.headers
    assert cold.status == 200
    assert cold.response_headers is not None
    assert revalidation.headers["If-None-Match"] == cold.response_headers["ETag"]
    assert revalidation.status == 304
    new_revision, new_checked_at = await _revision(database, path)
    assert new_revision == revision
    # The 304 counts as a confirmation: the page is fresh for another TTL from now.
    assert new_checked_at == pytest.approx(checked_at + 61, abs=1e-3)
