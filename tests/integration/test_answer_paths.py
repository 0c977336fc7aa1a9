"""The warm path and the routes give the same answers, byte for byte.

Each request is sent twice: as written, to a page or file this worker already holds (the
warm path of routes/warm.py answers it when it can), and with a query string, which the warm
path never answers, so that the routes (simple.py, files.py) do the same work the slow way.
Status, headers (in order, Date, Server and X-Request-Id aside: per request) and body must agree.
In-process, a spy tells which path answered; the warm file path needs zero-copy pathsend,
which hypercorn lacks, so it runs behind a stand-in for it here and under `mypypi2 serve`
(granian offers pathsend) below.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import asyncpg
import pytest
import zstandard
from starlette.types import ASGIApp

from mypypi2.config import SERVERS
from tests import dists
from tests.local_upstream import LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.apps import PathsendAsBody, RouteSpy
from tests.support.cache import StartCache
from tests.support.process import Launch, clean_environ, write_config
from tests.support.waiting import eventually

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML = "text/html"
# Enough files for the page to be worth compressing, and a wheel with PEP 658 metadata.
WHEEL = dists.wheel("demo", "1.0")
FILES = [UpstreamFile(f"demo-0.{i}.tar.gz", f"sdist {i}".encode()) for i in range(30)]
PAGE = "/pypi/simple/demo/"
FILE = f"/pypi/files/demo/{WHEEL.filename}"
METADATA = FILE + ".metadata"
ROUTED = "?via=routes"
# The server's own headers, and the request id (new for every request).
_PER_REQUEST = (b"date", b"server", b"x-request-id")

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


async def request(
    port: int, method: str, target: str, headers: dict[str, str] | list[tuple[str, str]]
) -> Answer:
    """One request over a raw socket: the status, header lines and body exactly as sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        pairs = headers.items() if isinstance(headers, dict) else headers
        lines += [f"{name}: {value}" for name, value in pairs]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    fields = [tuple(line.split(b": ", 1)) for line in header_lines]
    kept = [(name.lower(), value) for name, value in fields if name.lower() not in _PER_REQUEST]
    assert any(name.lower() == b"x-request-id" for name, _ in fields), "every answer has an id"
    return int(status_line.split(b" ")[1]), kept, body


def server_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def header(answer: Answer, name: bytes) -> bytes | None:
    return next((value for key, value in answer[1] if key == name), None)


async def both(port: int, method: str, path: str, **headers: str) -> Answer:
    """The answer of the warm path, once asserted to be the routes' too."""
    warm = await request(port, method, path, headers)
    routed = await request(port, method, path + ROUTED, headers)
    assert warm == routed, (method, path, headers)
    return warm


async def wait_stored(dsn: str, filename: str) -> None:
    db = await asyncpg.connect(dsn)
    try:
        query = "SELECT stored_key IS NOT NULL FROM files WHERE filename = $1"

        async def stored() -> bool:
            return bool(await db.fetchval(query, filename))

        await eventually(stored, f"{filename} stored")
    finally:
        await db.close()


async def hold_everything(port: int, dsn: str) -> None:
    """Have the worker hold the page, the stored wheel and its metadata in memory."""
    assert (await request(port, "GET", PAGE, {"Accept": JSON_V1}))[0] == 200
    assert (await request(port, "GET", FILE, {}))[2] == WHEEL.content  # downloaded
    await wait_stored(dsn, WHEEL.filename)
    for target in (FILE + ROUTED, METADATA + ROUTED):  # the routes learn of both
        assert (await request(port, "GET", target, {}))[0] == 200


async def assert_pages_agree(port: int) -> list[str]:
    """Every page answer the warm path gives, compared; which kinds were asked."""
    page = await both(port, "GET", PAGE, Accept=JSON_V1)
    assert page[0] == 200
    assert [f["filename"] for f in json.loads(page[2])["files"]][-1] == WHEEL.filename
    assert header(page, b"content-encoding") is None
    html = await both(port, "GET", PAGE, Accept=HTML)
    assert (html[0], header(html, b"content-type")) == (200, b"text/html; charset=utf-8")
    assert WHEEL.filename.encode() in html[2]
    gzipped = await both(port, "GET", PAGE, **{"Accept": JSON_V1, "Accept-Encoding": "gzip"})
    assert header(gzipped, b"content-encoding") == b"gzip"
    assert gzip.decompress(gzipped[2]) == page[2]
    zstd = await both(port, "GET", PAGE, **{"Accept": JSON_V1, "Accept-Encoding": "zstd"})
    assert header(zstd, b"content-encoding") == b"zstd"
    assert zstandard.ZstdDecompressor().decompress(zstd[2]) == page[2]
    etag, last_modified = header(page, b"etag"), header(page, b"last-modified")
    assert etag is not None and last_modified is not None
    by_etag = await both(port, "GET", PAGE, **{"Accept": JSON_V1, "If-None-Match": etag.decode()})
    assert (by_etag[0], by_etag[2], header(by_etag, b"etag")) == (304, b"", etag)
    gzip_etag = header(gzipped, b"etag")
    assert gzip_etag is not None and gzip_etag != etag
    by_gzip_etag = await both(
        port,
        "GET",
        PAGE,
        **{"Accept": JSON_V1, "Accept-Encoding": "gzip", "If-None-Match": etag.decode()},
    )
    # The identity ETag names the page in any encoding; the 304 carries the gzip one.
    assert (by_gzip_etag[0], header(by_gzip_etag, b"etag")) == (304, gzip_etag)
    by_date = await both(
        port, "GET", PAGE, **{"Accept": JSON_V1, "If-Modified-Since": last_modified.decode()}
    )
    assert (by_date[0], header(by_date, b"last-modified")) == (304, last_modified)
    return ["json", "html", "gzip", "zstd", "etag", "gzip-etag", "date"]


async def assert_files_agree(port: int) -> None:
    whole = await both(port, "GET", FILE)
    assert (whole[0], whole[2]) == (200, WHEEL.content)
    assert header(whole, b"etag") == f'"{WHEEL.sha256}"'.encode()
    assert header(whole, b"content-length") == str(len(WHEEL.content)).encode()
    head = await both(port, "HEAD", FILE)
    assert (head[0], head[1], head[2]) == (200, whole[1], b"")
    etag, last_modified = header(whole, b"etag"), header(whole, b"last-modified")
    assert etag is not None and last_modified is not None
    by_etag = await both(port, "GET", FILE, **{"If-None-Match": etag.decode()})
    assert (by_etag[0], by_etag[2], header(by_etag, b"etag")) == (304, b"", etag)
    by_date = await both(port, "GET", FILE, **{"If-Modified-Since": last_modified.decode()})
    assert (by_date[0], header(by_date, b"last-modified")) == (304, last_modified)
    metadata = await both(port, "GET", METADATA)
    assert WHEEL.metadata is not None
    assert (metadata[0], metadata[2]) == (200, WHEEL.metadata)
    assert header(metadata, b"content-length") == str(len(WHEEL.metadata)).encode()


async def test_warm_path_and_routes_answer_alike(
    start_cache: StartCache, upstream: LocalUpstream, database: str
) -> None:
    upstream.add(UpstreamProject("demo", [*FILES, WHEEL]))
    spy = RouteSpy()

    def wrap(app: ASGIApp) -> ASGIApp:
        return PathsendAsBody(spy.wrap(app))

    cache = await start_cache(wrap=wrap)
    await hold_everything(cache.port, database)
    spy.paths.clear()

    asked = await assert_pages_agree(cache.port)

    # Each pair of requests reached the routes once: the warm path answered the other.
    assert spy.paths == [PAGE] * len(asked)
    spy.paths.clear()

    await assert_files_agree(cache.port)

    # The warm path answers a plain GET of a stored file or metadata; HEAD and conditional
    # requests are the routes' (both of each pair reached them).
    assert spy.paths == [FILE, FILE, FILE, FILE, FILE, FILE, FILE, METADATA]
    assert upstream.hits["/simple/demo/"] == 1
    assert upstream.hits[f"/files/demo/{WHEEL.filename}"] == 1


async def test_a_header_sent_twice_is_read_alike_by_both_paths(
    start_cache: StartCache, upstream: LocalUpstream
) -> None:
    """Both read the first of repeated fields (Starlette's Headers.get); the warm path read
    the last, so the same request got gzip from one path and zstd from the other."""
    upstream.add(UpstreamProject("demo", [*FILES, WHEEL]))
    cache = await start_cache()
    first = await request(cache.port, "GET", PAGE, {"Accept": JSON_V1})
    etag = header(first, b"etag")
    assert etag is not None
    twice = [
        ("Accept", JSON_V1),
        ("Accept-Encoding", "gzip"),
        ("Accept-Encoding", "zstd"),
        ("If-None-Match", '"other"'),
        ("If-None-Match", etag.decode()),
    ]

    warm = await request(cache.port, "GET", PAGE, twice)
    routed = await request(cache.port, "GET", PAGE + ROUTED, twice)

    assert warm == routed
    assert (warm[0], header(warm, b"content-encoding")) == (200, b"gzip")


@pytest.mark.parametrize("server_name", SERVERS)
async def test_warm_path_and_routes_answer_alike_under_every_server(
    launch: Launch, upstream: LocalUpstream, database: str, tmp_path: Path, server_name: str
) -> None:
    """Under `mypypi2 serve`: granian offers pathsend, so its warm path sends stored files."""
    upstream.add(UpstreamProject("demo", [*FILES, WHEEL]))
    write_config(
        tmp_path,
        {
            "data-dir": str(tmp_path / "data"),
            "database": {"url": database},
            "repositories": [{"name": "pypi", "upstream": upstream.url}],
        },
    )
    server = await launch(tmp_path, clean_environ(), "--workers", "1", "--server", server_name)
    await hold_everything(server_port(server.url), database)

    await assert_pages_agree(server_port(server.url))
    await assert_files_agree(server_port(server.url))

    assert upstream.hits[f"/files/demo/{WHEEL.filename}"] == 1


async def test_head_of_a_file_of_unknown_size_claims_no_length(
    start_cache: StartCache, upstream: LocalUpstream
) -> None:
    """A PEP 503 page gives no size: HEAD of a file not stored yet said Content-Length: 0."""
    sdist = UpstreamFile("demo-1.0.tar.gz", b"an sdist of some length")
    upstream.add(UpstreamProject("demo", [sdist], format="html"))
    cache = await start_cache()
    assert (await request(cache.port, "GET", PAGE, {"Accept": JSON_V1}))[0] == 200

    head = await request(cache.port, "HEAD", f"/pypi/files/demo/{sdist.filename}", {})

    assert head[0] == 200
    assert header(head, b"content-length") is None
    assert header(head, b"etag") == f'"{sdist.sha256}"'.encode()
    assert upstream.hits[f"/files/demo/{sdist.filename}"] == 0
