"""What HTTP caches in front of us (pip's, uv's, a proxy's) get: validators per
representation and encoding, 304s, caching headers, compressed bodies, and revalidation
when a client asks for it (SPEC-CHECKLIST "Caching headers").

The real-client tests record every exchange between the client and the cache with a small
ASGI middleware, so they assert on what the cache answered (304, the stale marker) and on
what the client sent (If-None-Match, Cache-Control), not only on the install's outcome.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import pytest
import zstandard
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mypypi2.config import RepositoryConfig
from tests.clients import (
    Env,
    ProxyTrap,
    assert_installed,
    isolated_env,
    new_venv,
    run,
)
from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.cache import Clock, RunningCache, StartCache, repository
from tests.support.http import JSON_V1, Answer
from tests.support.http import get as http_get

HTML_V1 = "application/vnd.pypi.simple.v1+html"
MEDIA_TYPES = [JSON_V1, HTML_V1, "text/html"]
PATH = "/simple/demo/"
# What uv (reqwest) and pip (urllib3) send.
UV_ACCEPT_ENCODING = "gzip, deflate, zstd"
PIP_ACCEPT_ENCODING = "gzip, deflate"
# Enough files for every rendering of the page to be worth compressing.
MANY_FILES = [
    UpstreamFile(f"demo-1.{i}.tar.gz", f"sdist {i}".encode(), requires_python=">=3.9")
    for i in range(30)
]
ENCODINGS: dict[str | None, str | None] = {None: None, "gzip": "gzip", "zstd": "zstd"}


@pytest.fixture
async def raw_http() -> AsyncIterator[aiohttp.ClientSession]:
    # Raw bytes: what the cache sent, not what aiohttp would make of it.
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def get(
    raw_http: aiohttp.ClientSession,
    url: str,
    accept: str = JSON_V1,
    encoding: str | None = None,
    **headers: str,
) -> Answer:
    """GET with exactly this Accept-Encoding (None: no such header at all)."""
    if encoding is None:
        return await http_get(
            raw_http, url, accept, headers, skip_auto_headers=("Accept-Encoding",)
        )
    headers["Accept-Encoding"] = encoding
    return await http_get(raw_http, url, accept, headers)


def decoded(answer: Answer) -> bytes:
    coding = answer.headers.get("Content-Encoding")
    if coding is None:
        return answer.body
    if coding == "gzip":
        return gzip.decompress(answer.body)
    assert coding == "zstd", coding
    return zstandard.ZstdDecompressor().decompressobj().decompress(answer.body)


async def page_revision(dsn: str) -> tuple[int, float]:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT revision, checked_at FROM projects WHERE repository = 'pypi' AND name = 'demo'"
        )
    finally:
        await connection.close()
    assert row is not None
    return row["revision"], row["checked_at"].timestamp()


# -- validators ------------------------------------------------------------------------------


async def test_etag_differs_per_representation_and_encoding(
    start_cache: StartCache, upstream: LocalUpstream, raw_http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", MANY_FILES))
    cache = await start_cache()
    url = f"{cache.url}/pypi/simple/demo/"

    etags = {}
    for media_type in MEDIA_TYPES:
        for encoding in ENCODINGS:
            answer = await get(raw_http, url, media_type, encoding)
            assert answer.status == 200
            assert answer.headers.get("Content-Encoding") == encoding
            etags[media_type, encoding] = answer.headers["ETag"]

    assert len(set(etags.values())) == len(etags) == 9
    for etag in etags.values():
        assert etag.startswith('"') and etag.endswith('"')  # strong validators


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
async def test_if_none_match_is_304_for_any_encoding_of_the_same_representation(
    start_cache: StartCache,
    upstream: LocalUpstream,
    raw_http: aiohttp.ClientSession,
    media_type: str,
) -> None:
    upstream.add(UpstreamProject("demo", MANY_FILES))
    cache = await start_cache()
    url = f"{cache.url}/pypi/simple/demo/"
    etags = {
        (asked, encoding): (await get(raw_http, url, asked, encoding)).headers["ETag"]
        for asked in MEDIA_TYPES
        for encoding in ENCODINGS
    }

    for encoding in ENCODINGS:
        # A cache holding the gzip body revalidates with its ETag, whatever it asks now.
        for held in ENCODINGS:
            answer = await get(
                raw_http, url, media_type, encoding, **{"If-None-Match": etags[media_type, held]}
            )
            assert (answer.status, answer.body) == (304, b""), (encoding, held)
            assert answer.headers["ETag"] == etags[media_type, encoding]
            assert {"accept", "accept-encoding"} <= answer.vary()
        # Another representation's validator, in any encoding, does not validate this one.
        for (other, held), etag in etags.items():
            if other != media_type:
                answer = await get(raw_http, url, media_type, encoding, **{"If-None-Match": etag})
                assert answer.status == 200, (other, held)
                assert answer.headers["ETag"] == etags[media_type, encoding]
    assert upstream.hits[PATH] == 1


async def test_json_etag_with_accept_html_is_200(
    start_cache: StartCache, upstream: LocalUpstream, raw_http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", MANY_FILES))
    cache = await start_cache()
    url = f"{cache.url}/pypi/simple/demo/"
    json_etag = (await get(raw_http, url, JSON_V1, "gzip")).headers["ETag"]

    answer = await get(raw_http, url, "text/html", "gzip", **{"If-None-Match": json_etag})

    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert b"<a " in decoded(answer)


# -- caching headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "path", "max_age"),
    [
        ({}, "demo/", 600),
        ({"ttl": 120}, "demo/", 120),
        ({"ttl": 120, "client_max_age": 30}, "demo/", 30),
        ({"client_max_age": 0}, "demo/", 0),
        ({"list_ttl": 90}, "", 90),
        ({"list_ttl": 90, "client_max_age": 45}, "", 45),
    ],
    ids=["default", "ttl", "client-max-age", "client-max-age-0", "list-ttl", "list-client"],
)
async def test_caching_headers_on_200_and_304(
    start_cache: StartCache,
    upstream: LocalUpstream,
    raw_http: aiohttp.ClientSession,
    options: dict[str, float],
    path: str,
    max_age: int,
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", MANY_FILES))
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    url = f"{cache.url}/pypi/simple/{path}"
    fetched_at = clock.now
    assert (await get(raw_http, url)).status == 200
    clock.advance(5)  # Last-Modified is when the page was stored, not when it is served

    for encoding in (None, "gzip"):
        ok = await get(raw_http, url, JSON_V1, encoding)
        not_modified = await get(
            raw_http, url, JSON_V1, encoding, **{"If-None-Match": ok.headers["ETag"]}
        )
        assert (ok.status, not_modified.status) == (200, 304)
        for answer in (ok, not_modified):
            assert answer.headers["Cache-Control"] == f"max-age={max_age}, public"
            assert {"accept", "accept-encoding"} <= answer.vary()
            assert answer.headers["ETag"] == ok.headers["ETag"]
            assert parsedate_to_datetime(answer.headers["Date"])
            last_modified = parsedate_to_datetime(answer.headers["Last-Modified"])
            assert last_modified.timestamp() == pytest.approx(fetched_at, abs=1)


async def test_small_uncompressed_page_still_varies_on_accept_encoding(
    start_cache: StartCache, upstream: LocalUpstream, raw_http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", [UpstreamFile("demo-1.0.tar.gz")]))
    cache = await start_cache()

    answer = await get(raw_http, f"{cache.url}/pypi/simple/demo/", JSON_V1, UV_ACCEPT_ENCODING)

    assert answer.status == 200
    assert "Content-Encoding" not in answer.headers
    assert {"accept", "accept-encoding"} <= answer.vary()


# -- client Cache-Control: no-cache / max-age=0 ----------------------------------------------


@pytest.mark.parametrize("directive", ["no-cache", "max-age=0", "max-age = 0, no-store"])
async def test_client_no_cache_revalidates_when_checked_long_enough_ago(
    start_cache: StartCache,
    upstream: LocalUpstream,
    database: str,
    raw_http: aiohttp.ClientSession,
    directive: str,
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", MANY_FILES))
    options = {"ttl": 600, "no_cache_revalidate_after": 5}
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    url = f"{cache.url}/pypi/simple/demo/"
    first = await get(raw_http, url)
    revision, _ = await page_revision(database)

    # Checked 4 s ago: the client's no-cache is answered from what we hold.
    clock.advance(4)
    recent = await get(raw_http, url, **{"Cache-Control": directive})
    assert (recent.status, recent.body) == (200, first.body)
    assert upstream.hits[PATH] == 1

    # Checked 6 s ago (well within the TTL): one conditional request.
    clock.advance(2)
    revalidated = await get(raw_http, url, **{"Cache-Control": directive})
    assert (revalidated.status, revalidated.body) == (200, first.body)
    assert upstream.hits[PATH] == 2
    cold, request = upstream.requests_for(PATH)
    assert cold.response_headers is not None
    assert request.headers["If-None-Match"] == cold.response_headers["ETag"]
    assert request.status == 304
    revision_now, checked_at = await page_revision(database)
    assert revision_now == revision
    assert checked_at == pytest.approx(clock.now, abs=1e-3)

    # That confirmation counts: the next no-cache within 5 s is not another request.
    clock.advance(3)
    assert (await get(raw_http, url, **{"Cache-Control": directive})).status == 200
    assert upstream.hits[PATH] == 2
    # A client that did not ask for revalidation never triggers one within the TTL.
    clock.advance(100)
    assert (await get(raw_http, url)).status == 200
    assert upstream.hits[PATH] == 2


async def test_concurrent_no_cache_requests_on_two_instances_cost_one_revalidation(
    start_cache: StartCache, upstream: LocalUpstream, raw_http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", MANY_FILES))
    config = repository("pypi", upstream, ttl=600)
    instances = [await start_cache(config, clock=clock) for _ in range(2)]
    for instance in instances:
        await get(raw_http, f"{instance.url}/pypi/simple/demo/")
    assert upstream.hits[PATH] == 1

    clock.advance(10)
    # Slow enough for every request to arrive while the one revalidation is under way.
    upstream.fail(PATH, Fault(delay=0.3))
    answers = await asyncio.gather(
        *(
            get(raw_http, f"{instance.url}/pypi/simple/demo/", **{"Cache-Control": "max-age=0"})
            for instance in instances * 10
        )
    )

    assert {a.status for a in answers} == {200}
    assert upstream.hits[PATH] == 2
    assert "If-None-Match" in upstream.requests_for(PATH)[-1].headers


@pytest.mark.parametrize(("after", "expected_hits"), [(-1, 1), (0, 4)])
async def test_no_cache_revalidate_after_never_and_always(
    start_cache: StartCache,
    upstream: LocalUpstream,
    raw_http: aiohttp.ClientSession,
    after: float,
    expected_hits: int,
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", MANY_FILES))
    options = {"ttl": 600, "no_cache_revalidate_after": after}
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    url = f"{cache.url}/pypi/simple/demo/"
    await get(raw_http, url)

    # -1: the TTL alone decides, however long ago the page was checked (within the TTL).
    # 0: every no-cache request asks the upstream, even 10 ms after the last one.
    for directive in ("no-cache", "max-age=0", "no-cache"):
        clock.advance(0.01 if after == 0 else 199)
        answer = await get(raw_http, url, **{"Cache-Control": directive})
        assert answer.status == 200

    assert upstream.hits[PATH] == expected_hits


# -- compression -----------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", [JSON_V1, "text/html"])
@pytest.mark.parametrize(
    ("accept_encoding", "coding"),
    [
        (None, None),
        ("identity", None),
        ("gzip", "gzip"),
        (PIP_ACCEPT_ENCODING, "gzip"),
        (UV_ACCEPT_ENCODING, "zstd"),
        ("zstd;q=0.5, gzip", "gzip"),
        ("br", None),
    ],
    ids=["none", "identity", "gzip", "pip", "uv", "gzip-preferred", "unsupported"],
)
async def test_compressed_body_decodes_to_the_identity_body(
    start_cache: StartCache,
    upstream: LocalUpstream,
    raw_http: aiohttp.ClientSession,
    media_type: str,
    accept_encoding: str | None,
    coding: str | None,
) -> None:
    upstream.add(UpstreamProject("demo", MANY_FILES))
    cache = await start_cache()
    url = f"{cache.url}/pypi/simple/demo/"
    identity = await get(raw_http, url, media_type, None)
    assert "Content-Encoding" not in identity.headers
    assert len(identity.body) >= 1024

    answer = await get(raw_http, url, media_type, accept_encoding)

    assert answer.status == 200
    assert answer.headers.get("Content-Encoding") == coding
    assert int(answer.headers["Content-Length"]) == len(answer.body)
    assert answer.headers["Content-Type"] == identity.headers["Content-Type"]
    assert decoded(answer) == identity.body
    if coding is not None:
        assert len(answer.body) < len(identity.body)
        # Decoded with the format's own module, not through the header we trust.
        if coding == "gzip":
            assert gzip.decompress(answer.body) == identity.body
        else:
            assert zstandard.ZstdDecompressor().decompressobj().decompress(answer.body) == (
                identity.body
            )


async def test_compressed_project_list(
    start_cache: StartCache, upstream: LocalUpstream, raw_http: aiohttp.ClientSession
) -> None:
    for i in range(100):
        upstream.add(UpstreamProject(f"project-{i}"))
    cache = await start_cache()
    url = f"{cache.url}/pypi/simple/"
    identity = await get(raw_http, url, JSON_V1, None)

    answer = await get(raw_http, url, JSON_V1, UV_ACCEPT_ENCODING)

    assert answer.headers["Content-Encoding"] == "zstd"
    assert decoded(answer) == identity.body
    assert answer.headers["ETag"] != identity.headers["ETag"]


@pytest.mark.parametrize("accept_encoding", ["gzip", UV_ACCEPT_ENCODING])
async def test_small_bodies_are_not_compressed(
    start_cache: StartCache,
    upstream: LocalUpstream,
    raw_http: aiohttp.ClientSession,
    accept_encoding: str,
) -> None:
    upstream.add(UpstreamProject("demo", [UpstreamFile("demo-1.0.tar.gz")]))
    cache = await start_cache()
    url = f"{cache.url}/pypi/simple/demo/"
    identity = await get(raw_http, url, JSON_V1, None)
    assert len(identity.body) < 1024

    answer = await get(raw_http, url, JSON_V1, accept_encoding)

    assert "Content-Encoding" not in answer.headers
    assert answer.body == identity.body
    # Not compressed, so the very same representation: the same validator.
    assert answer.headers["ETag"] == identity.headers["ETag"]


# -- real clients with warm HTTP caches ------------------------------------------------------


class Exchange(msgspec.Struct, frozen=True):
    path: str
    request: dict[str, str]  # header names in lower case
    status: int
    response: dict[str, str]


class Recorder:
    """ASGI middleware that records every exchange between a client and the cache."""

    def __init__(self, app: ASGIApp, log: list[Exchange]) -> None:
        self._app = app
        self._log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request = _headers(scope["headers"])

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                response = _headers(message.get("headers", []))
                self._log.append(Exchange(scope["path"], request, message["status"], response))
            await send(message)

        await self._app(scope, receive, recording_send)


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}


@pytest.fixture
def recorded(
    start_cache: StartCache,
) -> Callable[..., Awaitable[tuple[RunningCache, list[Exchange]]]]:
    """Start a cache whose exchanges with clients are recorded."""

    async def start(config: RepositoryConfig, clock: Clock) -> tuple[RunningCache, list[Exchange]]:
        log: list[Exchange] = []

        def wrap(app: ASGIApp) -> ASGIApp:
            return Recorder(app, log)

        return await start_cache(config, clock=clock, wrap=wrap), log

    return start


TREE_PAGES = {"/pypi/simple/app/", "/pypi/simple/lib/", "/pypi/simple/tool/"}


async def pip_install(index: str, work: Path, env: Env, *options: str) -> Path:
    python = await new_venv(work / "venv", env)
    env = env | {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
    }
    await run(
        sys.executable, "-m", "pip", "--python", python, "install", *options,
        "--progress-bar", "off", "--index-url", index, "app",
        cwd=work, env=env,
    )  # fmt: skip
    return python


async def uv_install(index: str, work: Path, env: Env, *options: str) -> Path:
    python = await new_venv(work / "venv", env)
    env = env | {"UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    uv = Path(sys.executable).parent / "uv"
    await run(
        uv, "pip", "install", "--python", python, "--index-url", index, "--no-config",
        *options, "app",
        cwd=work, env=env,
    )  # fmt: skip
    return python


async def install(client: str, index: str, work: Path, proxy: ProxyTrap, *options: str) -> None:
    await asyncio.to_thread(work.mkdir)
    env = isolated_env(work / "home", proxy)
    installer = pip_install if client == "pip" else uv_install
    python = await installer(index, work, env, *options)
    await assert_installed(python, work, env)
    assert proxy.requests == []


def pages_of(log: list[Exchange]) -> list[Exchange]:
    return [e for e in log if e.path.startswith("/pypi/simple/")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client", ["pip", "uv"])
async def test_warm_client_cache_revalidates_pages_with_304s(
    client: str,
    tree: None,
    recorded: Callable[..., Awaitable[tuple[RunningCache, list[Exchange]]]],
    upstream: LocalUpstream,
    proxy_trap: ProxyTrap,
    tmp_path: Path,
) -> None:
    # max-age=0 makes both clients revalidate every page they hold (otherwise they trust
    # their copy for max-age seconds and send nothing at all). The clock stands still, so
    # the cache itself never needs to ask the upstream again.
    clock = Clock()
    cache, log = await recorded(repository("pypi", upstream, client_max_age=0), clock)
    index = f"{cache.url}/pypi/simple/"
    client_cache: tuple[str, ...] = ("--cache-dir", str(tmp_path / "client-cache"))
    if client == "pip":
        # pip keeps no HTTP cache for a plain-HTTP index unless the host is trusted.
        client_cache += ("--trusted-host", "127.0.0.1")

    await install(client, index, tmp_path / "cold", proxy_trap, *client_cache)
    cold_pages = pages_of(log)
    assert {e.path for e in cold_pages} == TREE_PAGES
    for path in TREE_PAGES:
        assert next(e for e in cold_pages if e.path == path).status == 200
    upstream_requests = len(upstream.requests)
    log.clear()

    await install(client, index, tmp_path / "warm", proxy_trap, *client_cache)

    warm_pages = pages_of(log)
    assert {e.path for e in warm_pages} == TREE_PAGES
    for exchange in warm_pages:
        # The client revalidated with the validator we gave it, and we said "not modified".
        assert exchange.status == 304, exchange
        held = [e for e in cold_pages if e.path == exchange.path][-1].response["etag"]
        assert exchange.request["if-none-match"] == held, exchange
    # Nothing else was fetched again: files and metadata came from the client's cache.
    assert [e for e in log if e not in warm_pages and e.status == 200] == []
    assert len(upstream.requests) == upstream_requests


def _pip_refresh_options() -> tuple[str, ...]:
    """Recent pips send `max-age=0` on page requests only when asked to refresh them (an
    option older pips lack: they send it on every page request anyway)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return ("--refresh-package", ":all:") if "--refresh-package" in help_text else ()


_PIP_REFRESH = _pip_refresh_options()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("client", "cold_options", "warm_options"),
    [
        ("pip", ("--no-cache-dir",), ("--no-cache-dir", *_PIP_REFRESH)),
        ("uv", ("--cache-dir", "{cache}"), ("--cache-dir", "{cache}", "--refresh")),
    ],
    ids=["pip", "uv"],
)
async def test_forced_revalidation_with_upstream_down_installs_from_stale_pages(
    client: str,
    cold_options: tuple[str, ...],
    warm_options: tuple[str, ...],
    tree: None,
    recorded: Callable[..., Awaitable[tuple[RunningCache, list[Exchange]]]],
    upstream: LocalUpstream,
    proxy_trap: ProxyTrap,
    tmp_path: Path,
) -> None:
    clock = Clock()
    cache, log = await recorded(repository("pypi", upstream, ttl=600), clock)
    index = f"{cache.url}/pypi/simple/"
    client_cache = str(tmp_path / "client-cache")

    await install(
        client, index, tmp_path / "cold", proxy_trap,
        *(o.format(cache=client_cache) for o in cold_options),
    )  # fmt: skip
    await upstream.stop()
    # Within the TTL, but confirmed longer ago than no-cache-revalidate-after (5 s).
    clock.advance(10)
    log.clear()

    await install(
        client, index, tmp_path / "warm", proxy_trap,
        *(o.format(cache=client_cache) for o in warm_options),
    )  # fmt: skip

    warm_pages = pages_of(log)
    assert {e.path for e in warm_pages} == TREE_PAGES
    for exchange in warm_pages:
        # The client asked for a revalidated answer...
        directives = exchange.request.get("cache-control", "").replace(" ", "").split(",")
        assert "no-cache" in directives or "max-age=0" in directives, exchange
        # ...we tried, the upstream was down, and the stored page was served.
        assert exchange.status in (200, 304), exchange
        assert exchange.response.get("x-mypypi2-stale") == "upstream-unavailable", exchange
