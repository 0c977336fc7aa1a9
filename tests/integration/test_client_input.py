"""What a client can put in a page request: names, headers, query strings, path segments.

None of it may cost a 5xx, and a name that cannot exist upstream must cost nothing at all:
no upstream request, no database row. The requests go over a raw socket so that bytes an
HTTP client library would refuse to send (non-latin-1, NUL) reach the server as written.
Each hostile request is sent twice: to a page this worker holds (the warm path of
routes/warm.py) and to a page it has never seen (the routes); both must answer the same.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest
from multidict import CIMultiDictProxy

from tests.local_upstream import LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.apps import RouteSpy
from tests.support.cache import RunningCache, StartCache
from tests.support.http import JSON_V1

# Enough files for the page to be worth compressing, so Accept-Encoding is read too.
FILES = [UpstreamFile(f"demo-1.{i}.tar.gz", f"sdist {i}".encode()) for i in range(30)]


async def raw_get(
    cache: RunningCache, target: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes]]:
    """Send one GET exactly as given; the status and headers of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", cache.port)
    try:
        lines = [b"GET " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
        lines += [name + b": " + value for name, value in headers or []]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, _ = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    fields = dict(line.split(b": ", 1) for line in header_lines)
    return int(status_line.split(b" ")[1]), {k.lower(): v for k, v in fields.items()}


async def project_rows(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn)
    try:
        return [r["name"] for r in await connection.fetch("SELECT name FROM projects")]
    finally:
        await connection.close()


# -- names -----------------------------------------------------------------------------------

# Names no index can hold. The first three passed a Unicode case-folding check (the long s
# folds to s, the dotless i to i, the Kelvin sign to k); the long ones reached the upstream,
# and the longest PostgreSQL's index-row limit.
INVALID_NAMES = [
    pytest.param("\u017fix", id="long-s"),
    pytest.param("\u0131dna", id="dotless-i"),
    pytest.param("\u212aeras", id="kelvin-sign"),
    pytest.param("é", id="latin-1"),
    pytest.param("six\n", id="trailing-newline"),
    pytest.param("six\x00", id="nul"),
    pytest.param("six\x7f", id="del"),
    pytest.param("-six", id="leading-dash"),
    pytest.param("six.", id="trailing-dot"),
    pytest.param("six six", id="space"),
    pytest.param("\ufffd", id="replacement-char"),
    pytest.param("a" * 201, id="over-the-cap"),
    # Incompressible, so its index entry really is ~2.8 kB: a 500 (after an upstream GET)
    # when PostgreSQL refused the row.
    pytest.param(
        "".join(hashlib.sha256(bytes([i])).hexdigest() for i in range(44)),
        id="past-the-index-row-limit",
    ),
]


@pytest.mark.parametrize("name", INVALID_NAMES)
async def test_invalid_project_name_is_404_without_asking_anyone(
    start_cache: StartCache, upstream: LocalUpstream, database: str, name: str
) -> None:
    cache = await start_cache()
    quoted = quote(name, safe="").encode()

    targets = [
        b"/pypi/simple/" + quoted + b"/",
        b"/pypi/simple/v1+json/" + quoted + b"/",
        b"/pypi/simple/" + quoted,  # no redirect to the slashed URL either
        b"/pypi/files/" + quoted + b"/" + quoted + b"-1.0.tar.gz",
    ]
    statuses = {target: (await raw_get(cache, target))[0] for target in targets}

    assert statuses == dict.fromkeys(targets, 404)

    assert upstream.requests == []
    assert await project_rows(database) == []


async def test_longest_name_allowed_is_asked_of_the_upstream(
    start_cache: StartCache, upstream: LocalUpstream, database: str
) -> None:
    # The cap (names.MAX_NAME_LENGTH) refuses nothing the public index could hold.
    name = "a" * 200
    upstream.add(UpstreamProject(name, FILES[:1]))
    cache = await start_cache()

    status, _ = await raw_get(cache, f"/pypi/simple/{name}/".encode())

    assert status == 200
    assert upstream.hits[f"/simple/{name}/"] == 1
    assert await project_rows(database) == [name]


# -- hostile requests ------------------------------------------------------------------------

_HUGE = b"text/plain;q=0.5, " * 600  # ~11 KB, under the server's header limit

# (query, header name, header value, the status both paths must answer).
HOSTILE = [
    # Accept: q-values outside the grammar make their range unusable.
    ("", b"accept", JSON_V1.encode() + b";q=1e999", 406),
    ("", b"accept", b"text/html;q=nan", 406),
    ("", b"accept", b"text/html;q=inf", 406),
    ("", b"accept", b"text/html;q=-1", 406),
    ("", b"accept", b"text/html;q=-0", 406),
    ("", b"accept", b"text/html;q=0x1", 406),
    ("", b"accept", b"text/html;q=", 406),
    ("", b"accept", b"text/html;q=0.5;q=1e999", 200),
    ("", b"accept", b"text/html;q", 406),
    ("", b"accept", b"text/html;=;==;q==1", 406),
    ("", b"accept", b";;;", 200),
    ("", b"accept", b",,,;q=1,", 200),
    ("", b"accept", b"", 200),
    ("", b"accept", b"/", 200),
    ("", b"accept", b"*/*/*", 200),
    ("", b"accept", b"\xff\xfe\xfd", 200),
    ("", b"accept", b"text/html\xc5\xbf", 406),
    ("", b"accept", _HUGE, 406),
    ("", b"accept", _HUGE + JSON_V1.encode(), 200),
    # Accept-Encoding: anything unusable means the identity.
    ("", b"accept-encoding", b"gzip;q=1e999", 200),
    ("", b"accept-encoding", b"zstd;q=nan, gzip;q=-1", 200),
    ("", b"accept-encoding", b";;;", 200),
    ("", b"accept-encoding", b"", 200),
    ("", b"accept-encoding", b"\xff\xfe", 200),
    ("", b"accept-encoding", b"gzip, " * 1500, 200),
    # If-None-Match.
    ("", b"if-none-match", b"*", 304),
    ("", b"if-none-match", b'W/"x", *', 304),
    ("", b"if-none-match", b"W/", 200),
    ("", b"if-none-match", b'"', 200),
    ("", b"if-none-match", b",,,", 200),
    ("", b"if-none-match", b"", 200),
    ("", b"if-none-match", b"\xff\xfe", 200),
    ("", b"if-none-match", b'"x", ' * 2000, 200),
    # If-Modified-Since: anything but a valid HTTP-date is ignored.
    ("", b"if-modified-since", b"yesterday", 200),
    ("", b"if-modified-since", b"Mon, 99 Foo 99999 99:99:99 GMT", 200),
    ("", b"if-modified-since", b"Fri, 31 Dec 99999 23:59:59 GMT", 200),
    ("", b"if-modified-since", b"Thu, 01 Jan 1970 00:00:00 GMT", 200),
    ("", b"if-modified-since", b"Sat, 01 Jan 0000 00:00:00 GMT", 200),
    ("", b"if-modified-since", b"-1", 200),
    ("", b"if-modified-since", b"\xff", 200),
    ("", b"if-modified-since", b"", 200),
    ("", b"if-modified-since", b"x" * 8000, 200),
    # Cache-Control: a revalidation or nothing, never an error.
    ("", b"cache-control", b"max-age=99999999999999999999999", 200),
    ("", b"cache-control", b"max-age=-1, no-cache=\xff", 200),
    ("", b"cache-control", b";;;,,,", 200),
    ("", b"cache-control", b"", 200),
    ("", b"cache-control", b"no-store, " * 1000, 200),
    # ?format=: one exact media type, or Accept decides when blank.
    ("format=%ff%fe", b"x-none", b"", 406),
    # A long s (U+017F) must not fold to "s" and select JSON.
    ("format=application/vnd.pypi.%C5%BFimple.v1%2Bjson", b"x-none", b"", 406),
    ("format=%00", b"x-none", b"", 406),
    ("format=;;;", b"x-none", b"", 406),
    ("format=*/*", b"x-none", b"", 406),
    ("format=", b"x-none", b"", 200),
    ("format", b"x-none", b"", 200),
    ("format=%", b"x-none", b"", 406),
    ("format=application/vnd.pypi.simple.v1%2Bjson", b"x-none", b"", 200),
    ("format=text/html&format=junk", b"x-none", b"", 200),
    ("format=" + "x" * 4000, b"x-none", b"", 406),
    ("%zz=%&&&=", b"x-none", b"", 200),
]


async def test_hostile_page_requests_never_get_a_5xx(
    start_cache: StartCache, upstream: LocalUpstream
) -> None:
    upstream.add(UpstreamProject("warm", FILES))
    for index in range(len(HOSTILE)):
        upstream.add(UpstreamProject(f"cold-{index}", FILES))
    spy = RouteSpy()
    cache = await start_cache(wrap=spy.wrap)
    assert (await raw_get(cache, b"/pypi/simple/warm/"))[0] == 200

    answers = {}
    for index, (query, name, value, _) in enumerate(HOSTILE):
        suffix = b"?" + query.encode() if query else b""
        header = [(name, value)]
        warm, _ = await raw_get(cache, b"/pypi/simple/warm/" + suffix, header)
        cold, _ = await raw_get(cache, f"/pypi/simple/cold-{index}/".encode() + suffix, header)
        answers[query, name, value] = (warm, cold)

    assert answers == {(q, n, v): (status, status) for q, n, v, status in HOSTILE}
    # The warm page was never fetched again; a cold one once, or not at all when the answer
    # was a 406 (negotiation comes first).
    assert upstream.hits["/simple/warm/"] == 1
    fetched = {i: upstream.hits[f"/simple/cold-{i}/"] for i in range(len(HOSTILE))}
    assert fetched == {i: int(case[3] != 406) for i, case in enumerate(HOSTILE)}
    # The warm path answered the held page itself, except with a query string, a
    # Cache-Control or a 406 (plus the first, cold, request).
    routed = [
        (q, n, v) for q, n, v, status in HOSTILE if q or n == b"cache-control" or status == 406
    ]
    assert spy.paths.count("/pypi/simple/warm/") == 1 + len(routed)


# -- the repository segment ------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"/py%00pi/simple/demo/",
        b"/py%0Api/simple/demo/",
        b"/%01/simple/demo/",
        b"/pypi%7F/simple/demo/",
        # Not a redirect for a repository that does not exist, nor one with a NUL in it.
        b"/py%00pi/simple/Demo/",
        b"/py%00pi/simple/demo",
        b"/py%00pi/simple",
        b"/py%0D%0Api/simple/Demo/",
        b"/py%00pi/simple/v1+json/demo/",
        b"/py%00pi/simple/",
        b"/nowhere/simple/Demo/",
        b"/nowhere/simple",
    ],
)
async def test_control_characters_in_the_repository_segment_are_404(
    start_cache: StartCache, upstream: LocalUpstream, target: bytes
) -> None:
    upstream.add(UpstreamProject("demo", FILES))
    cache = await start_cache()
    assert (await raw_get(cache, b"/pypi/simple/demo/"))[0] == 200

    status, _ = await raw_get(cache, target)

    assert status == 404
    assert upstream.hits["/simple/demo/"] == 1


@pytest.mark.parametrize(
    "path", ["/pypi/simple/Demo", "/pypi/simple/v1+json", "/pypi/simple/v1+html", "/pypi/simple"]
)
async def test_urls_that_can_exist_are_still_given_their_slash(
    start_cache: StartCache, upstream: LocalUpstream, path: str
) -> None:
    cache = await start_cache()

    status, headers = await raw_get(cache, path.encode())

    assert (status, headers[b"location"]) == (308, path.encode() + b"/")
    assert upstream.requests == []


# -- conditional requests on pages -----------------------------------------------------------

# The warm path answers plain GETs of held pages; a query string sends the same request
# through the routes.
PATHS = [pytest.param("", id="warm"), pytest.param("?via=routes", id="routes")]


async def _get(
    http: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, CIMultiDictProxy[str]]:
    headers.setdefault("Accept", JSON_V1)
    async with http.get(url, headers=headers) as response:
        await response.read()
        return response.status, response.headers


@pytest.mark.parametrize("suffix", PATHS)
async def test_if_modified_since_on_pages(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession, suffix: str
) -> None:
    upstream.add(UpstreamProject("demo", FILES))
    spy = RouteSpy()
    cache = await start_cache(wrap=spy.wrap)
    url = f"{cache.url}/pypi/simple/demo/{suffix}"
    status, headers = await _get(http, url)
    assert status == 200
    last_modified = headers["Last-Modified"]
    etag = headers["ETag"]
    earlier = format_datetime(
        parsedate_to_datetime(last_modified).replace(microsecond=0) - dt.timedelta(seconds=1),
        usegmt=True,
    )

    # Equal (what clients echo) or later: not modified, with the validators again.
    status, headers = await _get(http, url, **{"If-Modified-Since": last_modified})
    assert (status, headers["ETag"], headers["Last-Modified"]) == (304, etag, last_modified)
    later = "Fri, 31 Dec 9999 23:59:59 GMT"
    assert (await _get(http, url, **{"If-Modified-Since": later}))[0] == 304
    # One second earlier: modified since.
    assert (await _get(http, url, **{"If-Modified-Since": earlier}))[0] == 200
    # If-None-Match present: If-Modified-Since is not looked at (RFC 9110 §13.1.3).
    both = {"If-Modified-Since": last_modified, "If-None-Match": '"other"'}
    assert (await _get(http, url, **both))[0] == 200
    both = {"If-Modified-Since": earlier, "If-None-Match": etag}
    assert (await _get(http, url, **both))[0] == 304
    # RFC 850 and asctime dates count too (RFC 9110 §5.6.7).
    moment = parsedate_to_datetime(last_modified)
    rfc850 = moment.strftime("%A, %d-%b-%y %H:%M:%S GMT")
    asctime = moment.strftime("%a %b %e %H:%M:%S %Y")
    for spelled in (rfc850, asctime):
        assert (await _get(http, url, **{"If-Modified-Since": spelled}))[0] == 304, spelled
    assert upstream.hits["/simple/demo/"] == 1
    assert len(spy.paths) == (1 if suffix == "" else 8)  # 8 requests in all


@pytest.mark.parametrize("suffix", PATHS)
async def test_if_none_match_lists_on_pages(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession, suffix: str
) -> None:
    upstream.add(UpstreamProject("demo", FILES))
    spy = RouteSpy()
    cache = await start_cache(wrap=spy.wrap)
    url = f"{cache.url}/pypi/simple/demo/{suffix}"
    status, headers = await _get(http, url)
    assert status == 200
    etag = headers["ETag"]

    expected = {
        etag: 304,
        f"W/{etag}": 304,  # weak comparison (RFC 9110 §13.1.2)
        f'"a", W/"b", {etag}': 304,
        f'"a",{etag} ,"c"': 304,
        f'W/"a", W/{etag}': 304,
        "*": 304,
        '"a", "b"': 200,
        etag.strip('"'): 200,  # unquoted: not an entity tag
        f'"{etag}"': 200,
        'W/"a"': 200,
    }
    answers = {value: (await _get(http, url, **{"If-None-Match": value}))[0] for value in expected}
    assert answers == expected
    assert len(spy.paths) == (1 if suffix == "" else 1 + len(expected))
