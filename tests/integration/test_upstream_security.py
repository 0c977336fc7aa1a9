"""An upstream that is hostile, compromised or just broken, through real sockets.

Credentials never follow a redirect or a file URL to another origin, and never show in an
answer. File URLs and redirects may not lead into our own network unless the upstream lives
there too (names resolve from a table here; nothing leaves loopback). Compressed bodies are
bounded by what they expand to, the project list streams through its parser, header values
PostgreSQL cannot hold are ignored, and a stored page outlives any of it.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from mypypi2.config import RepositoryConfig
from mypypi2.errors import UpstreamError, UpstreamTimeout
from mypypi2.upstream import hosts
from mypypi2.upstream.client import Fetched, UpstreamClient
from tests import fake_dns
from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject, _json_page
from tests.support.cache import Clock, StartCache, repository
from tests.support.http import JSON_V1, Answer
from tests.support.http import get as http_get

PAGE = "/simple/demo/"
SDIST = UpstreamFile("demo-1.0.tar.gz", b"the real sdist")
FILE = f"/files/demo/{SDIST.filename}"
OUR_PAGE = "/pypi/simple/demo/"
OUR_FILE = f"/pypi/files/demo/{SDIST.filename}"
CREDENTIALS = {"headers": {"X-Token": "t0ken"}, "username": "reader", "password": "s3cret"}
BASIC = "Basic " + base64.b64encode(b"reader:s3cret").decode()
GZIP = {"Content-Encoding": "gzip"}
STALE = "X-Mypypi2-Stale"


@pytest.fixture
async def elsewhere() -> AsyncIterator[LocalUpstream]:
    """A second server: another origin (another port) for redirects and file URLs."""
    server = LocalUpstream()
    await server.start()
    yield server
    await server.stop()


async def get(http: aiohttp.ClientSession, url: str) -> Answer:
    """The answer itself, redirects not followed."""
    return await http_get(http, url, follow_redirects=False)


def page_linking(url: str, file: UpstreamFile = SDIST) -> bytes:
    """A project page whose one file lives at `url`."""
    entry = {"filename": file.filename, "url": url, "hashes": {"sha256": file.sha256}}
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": [entry]}).encode()


def carries_credentials(request_headers: Any) -> bool:
    return "X-Token" in request_headers or "Authorization" in request_headers


# -- credentials ------------------------------------------------------------------------------


async def test_a_page_redirected_to_another_origin_is_not_here(
    start_cache: StartCache,
    upstream: LocalUpstream,
    elsewhere: LocalUpstream,
    http: aiohttp.ClientSession,
) -> None:
    # pypiserver sends projects it lacks to its fallback index this way: following it
    # would serve another index's files as this repository's (dependency confusion).
    elsewhere.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(PAGE, Fault(status=303, redirect_to=f"{elsewhere.url}demo/"))
    cache = await start_cache(repository("pypi", upstream, **CREDENTIALS))

    status, _, body = await get(http, cache.url + OUR_PAGE)

    assert status == 404, body
    [asked] = upstream.requests_for(PAGE)
    assert asked.headers["X-Token"] == "t0ken" and asked.headers["Authorization"] == BASIC
    assert elsewhere.requests == []


async def test_a_file_redirected_to_another_origin_gets_no_credentials(
    start_cache: StartCache,
    upstream: LocalUpstream,
    elsewhere: LocalUpstream,
    http: aiohttp.ClientSession,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    elsewhere.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(FILE, Fault(status=302, redirect_to=f"http://127.0.0.1:{elsewhere.port}{FILE}"))
    cache = await start_cache(repository("pypi", upstream, **CREDENTIALS))

    await get(http, cache.url + OUR_PAGE)
    status, _, content = await get(http, cache.url + OUR_FILE)

    assert (status, content) == (200, SDIST.content)
    [asked] = upstream.requests_for(FILE)
    assert carries_credentials(asked.headers)
    [redirected] = elsewhere.requests_for(FILE)
    assert not carries_credentials(redirected.headers)


async def test_credentials_in_the_upstream_url_are_used_and_never_shown(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail("/simple/other/", Fault(status=503))
    with_userinfo = f"http://reader:s3cret@127.0.0.1:{upstream.port}/simple/"
    cache = await start_cache(RepositoryConfig(name="pypi", upstream=with_userinfo))

    found, _, _ = await get(http, cache.url + OUR_PAGE)
    failed, _, body = await get(http, cache.url + "/pypi/simple/other/")

    assert found == 200
    assert upstream.requests_for(PAGE)[0].headers["Authorization"] == BASIC
    assert failed == 502
    assert "s3cret" not in body.decode()
    assert f"upstream http://127.0.0.1:{upstream.port}/simple/other/: HTTP 503" in body.decode()


# -- where file URLs and redirects may lead ----------------------------------------------------


async def test_file_hosts_names_the_only_hosts_files_may_come_from(
    start_cache: StartCache,
    upstream: LocalUpstream,
    elsewhere: LocalUpstream,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns.install(monkeypatch, {"files.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})
    listed = UpstreamFile("good-1.0.tar.gz", b"a listed sdist")
    elsewhere.add(UpstreamProject("demo", [SDIST]))
    elsewhere.add(UpstreamProject("good", [listed]))
    unlisted_url = f"http://other.example:{elsewhere.port}{FILE}"
    listed_url = f"http://files.example:{elsewhere.port}/files/good/{listed.filename}"
    upstream.fail(PAGE, Fault(body=page_linking(unlisted_url), content_type=JSON_V1))
    upstream.fail(
        "/simple/good/", Fault(body=page_linking(listed_url, listed), content_type=JSON_V1)
    )
    cache = await start_cache(repository("pypi", upstream, file_hosts=["files.example"]))

    await get(http, cache.url + OUR_PAGE)
    await get(http, cache.url + "/pypi/simple/good/")
    refused, _, reason = await get(http, cache.url + OUR_FILE)
    fetched, _, content = await get(http, f"{cache.url}/pypi/files/good/{listed.filename}")

    assert refused == 502
    assert b"refused: host other.example is not in file-hosts" in reason
    assert (fetched, content) == (200, listed.content)
    assert [r.path for r in elsewhere.requests] == [f"/files/good/{listed.filename}"]


@pytest.fixture
def public_upstream(monkeypatch: pytest.MonkeyPatch) -> fake_dns.FakeResolver:
    """The upstream's address (127.0.0.1) counts as public; other loopback ones do not."""
    real = hosts.classify
    monkeypatch.setattr(hosts, "classify", lambda a: "public" if a == "127.0.0.1" else real(a))
    return fake_dns.install(
        monkeypatch, {"upstream.example": ["127.0.0.1"], "inner.example": ["127.0.0.2"]}
    )


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("http://inner.example:{port}", "refused: host inner.example resolves only to loopback"),
        ("http://127.0.0.3:{port}", "refused: host 127.0.0.3 is a loopback address"),
        ("//127.0.0.4:{port}", "refused: host 127.0.0.4 is a loopback address"),
    ],
    ids=["name", "ip-literal", "protocol-relative"],
)
async def test_a_public_upstream_cannot_send_us_into_our_network(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    public_upstream: fake_dns.FakeResolver,
    link: str,
    reason: str,
) -> None:
    upstream.fail(
        PAGE,
        Fault(body=page_linking(link.format(port=upstream.port) + FILE), content_type=JSON_V1),
    )
    public = RepositoryConfig(
        name="pypi", upstream=f"http://upstream.example:{upstream.port}/simple/"
    )
    cache = await start_cache(public)

    page, _, _ = await get(http, cache.url + OUR_PAGE)
    refused, _, body = await get(http, cache.url + OUR_FILE)

    assert page == 200
    assert refused == 502
    assert reason in body.decode()
    assert upstream.requests_for(FILE) == []


async def test_a_public_upstream_cannot_redirect_us_into_our_network(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    public_upstream: fake_dns.FakeResolver,
) -> None:
    upstream.add(UpstreamProject("demo", [SDIST]))
    upstream.fail(FILE, Fault(status=307, redirect_to=f"http://inner.example:{upstream.port}/"))
    public = RepositoryConfig(
        name="pypi", upstream=f"http://upstream.example:{upstream.port}/simple/"
    )
    cache = await start_cache(public)

    await get(http, cache.url + OUR_PAGE)
    refused, _, body = await get(http, cache.url + OUR_FILE)

    assert refused == 502
    assert "refused: host inner.example resolves only to loopback 127.0.0.2" in body.decode()


async def test_a_refused_name_is_never_connected_to(
    public_upstream: fake_dns.FakeResolver,
) -> None:
    # The check sits in the connector's resolver: the answer checked is the one connected to.
    connected: list[object] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.append(writer.get_extra_info("peername"))
        writer.close()

    inner = await asyncio.start_server(accept, "127.0.0.2", 0)
    port = inner.sockets[0].getsockname()[1]
    config = RepositoryConfig(name="pypi", upstream="http://upstream.example/simple/")
    client = UpstreamClient.open(config)
    try:
        with pytest.raises(UpstreamError) as raised:
            await client.small_file(f"http://inner.example:{port}/f.metadata", 1000)
    finally:
        await client.close()
        inner.close()
        await inner.wait_closed()

    assert raised.value.reason == "refused: host inner.example resolves only to loopback 127.0.0.2"
    assert connected == []
    assert "inner.example" in public_upstream.asked


# -- compressed bodies ------------------------------------------------------------------------


async def test_a_gzip_page_is_served_and_a_gzip_bomb_is_refused(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    project = UpstreamProject("demo", [SDIST])
    good = gzip.compress(json.dumps(_json_page(project)).encode())
    bomb = gzip.compress(b'{"meta": {"api-version": "1.1"}, "files": [' + b" " * 5_000_000)
    upstream.fail(PAGE, Fault(body=good, content_type=JSON_V1, headers=GZIP))
    upstream.fail("/simple/bomb/", Fault(body=bomb, content_type=JSON_V1, headers=GZIP))
    cache = await start_cache(repository("pypi", upstream, max_page_bytes=1_000_000))

    served, _, body = await get(http, cache.url + OUR_PAGE)
    refused, _, reason = await get(http, cache.url + "/pypi/simple/bomb/")

    assert served == 200, body
    assert [f["filename"] for f in json.loads(body)["files"]] == [SDIST.filename]
    assert upstream.requests_for(PAGE)[0].headers["Accept-Encoding"] == "gzip, deflate"
    assert refused == 502
    assert b"gzip page expands past the limit of 1000000 bytes" in reason


async def test_the_project_list_streams_through_its_parser(upstream: LocalUpstream) -> None:
    # 8 MB of HTML in 8 KB of gzip. Read whole it would be held several times over (body,
    # joined body, text); streamed, only a few pieces and the names are ever held.
    names = [f"project-{i}" for i in range(2000)]
    anchors = "".join(f'<a href="/simple/{n}/">{n}</a>' + " " * 4000 for n in names)
    html = f"<!DOCTYPE html><html><body>{anchors}</body></html>".encode()
    upstream.fail("/simple/", Fault(body=gzip.compress(html), headers=GZIP))
    config = repository("pypi", upstream)
    client = UpstreamClient.open(config)
    tracemalloc.start()
    try:
        fetched = await client.project_list(None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await client.close()

    assert isinstance(fetched, Fetched)
    assert list(fetched.model.names) == names
    assert len(html) > 8_000_000
    assert peak < 3_000_000, f"peak {peak} bytes"


# -- header values ----------------------------------------------------------------------------


@pytest.mark.parametrize("serial", ["²", str(2**64), str(2**63)])
async def test_a_serial_that_is_not_a_bigint_is_ignored(
    start_cache: StartCache,
    upstream: LocalUpstream,
    http: aiohttp.ClientSession,
    serial: str,
) -> None:
    body = json.dumps(_json_page(UpstreamProject("demo", [SDIST]))).encode()
    headers = {"X-PyPI-Last-Serial": serial}
    upstream.fail(PAGE, Fault(body=body, content_type=JSON_V1, headers=headers))
    cache = await start_cache()

    status, _, answer = await get(http, cache.url + OUR_PAGE)

    assert status == 200, answer
    assert [f["filename"] for f in json.loads(answer)["files"]] == [SDIST.filename]


async def test_validators_that_are_not_printable_ascii_are_not_stored(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession, database: str
) -> None:
    body = json.dumps(_json_page(UpstreamProject("demo", [SDIST]))).encode()
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: " + JSON_V1.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b'ETag: "\xff\xfe"\r\n'
        b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\xe9\r\n"
        b"Connection: close\r\n\r\n"
    )
    upstream.fail(PAGE, Fault(raw=head + body))
    cache = await start_cache()

    status, _, answer = await get(http, cache.url + OUR_PAGE)

    assert status == 200, answer
    connection = await asyncpg.connect(database)
    try:
        row = await connection.fetchrow(
            "SELECT etag, last_modified FROM projects WHERE repository = 'pypi' AND name = 'demo'"
        )
    finally:
        await connection.close()
    assert row is not None
    assert (row["etag"], row["last_modified"]) == (None, None)


# -- a stored page outlives garbage ------------------------------------------------------------


GARBAGE = {
    "not-http": Fault(raw=b"\x16\x03\x01 this is no HTTP answer\r\n\r\n"),
    "corrupt-gzip": Fault(body=b"not gzip at all", content_type=JSON_V1, headers=GZIP),
    "gzip-bomb": Fault(
        body=gzip.compress(b"{" + b" " * 5_000_000), content_type=JSON_V1, headers=GZIP
    ),
    "unknown-coding": Fault(body=b"{}", content_type=JSON_V1, headers={"Content-Encoding": "br"}),
}


@pytest.mark.parametrize("fault", GARBAGE.values(), ids=GARBAGE.keys())
async def test_the_stored_page_is_served_when_the_upstream_sends_garbage(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession, fault: Fault
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", [SDIST]))
    options = {"ttl": 60, "stale_while_revalidate": 0, "max_page_bytes": 1_000_000}
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    _, _, stored = await get(http, cache.url + OUR_PAGE)
    upstream.fail(PAGE, fault)

    clock.advance(61)
    status, headers, body = await get(http, cache.url + OUR_PAGE)

    assert (status, body) == (200, stored)
    assert headers[STALE] == "upstream-unavailable"
    assert len(upstream.requests_for(PAGE)) >= 2  # it did ask, and got garbage


# -- deadlines --------------------------------------------------------------------------------


async def test_a_download_ends_at_its_deadline_however_steadily_bytes_arrive(
    upstream: LocalUpstream,
) -> None:
    # Never silent for long (sock-read is not reached), but far slower than allowed.
    sdist = UpstreamFile("demo-1.0.tar.gz", b"x" * 40)
    upstream.add(UpstreamProject("demo", [sdist]))
    upstream.fail(FILE, Fault(slow_chunk=1, slow_delay=0.1))
    # 1 s: the first bytes arrive within it even on a loaded machine, all 40 take 4 s.
    config = repository("pypi", upstream, download_timeout=1.0, read_timeout=10.0)
    client = UpstreamClient.open(config)
    received = b""
    try:
        with pytest.raises(UpstreamTimeout):
            url = f"http://127.0.0.1:{upstream.port}{FILE}"
            async with client.file(url) as body:
                async for chunk in body.chunks:
                    received += chunk
    finally:
        await client.close()

    assert 0 < len(received) < len(sdist.content)
