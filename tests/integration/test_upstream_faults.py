"""Bad upstream answers, through a real server and a real database.

For a cold project every bad answer is a clear 502 (504 for a timeout) that names the
reason, nothing is stored half-way, and the next good answer is served and stored. An
upstream 404 stays a 404 and is remembered. A stored page outlives its TTL when the
upstream fails (stale-if-error), and a changed upstream page replaces it once it answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest

from mypypi2.freshness import ERROR_RETRY_SECONDS
from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.cache import Clock, StartCache, free_port, repository
from tests.support.http import JSON_V1, Answer
from tests.support.http import get as http_get

PATH = "/simple/demo/"
GOOD = UpstreamFile("demo-1.0.tar.gz", b"the real sdist", requires_python=">=3.9")
NEW = UpstreamFile("demo-2.0.tar.gz", b"a later sdist")


async def get(http: aiohttp.ClientSession, url: str, accept: str = JSON_V1) -> Answer:
    """The answer itself, redirects not followed."""
    return await http_get(http, url, accept, follow_redirects=False)


async def stored_project(dsn: str, name: str = "demo") -> tuple[asyncpg.Record | None, list[str]]:
    """The project's row and the filenames it lists, as the database holds them."""
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT id, found, revision, checked_at FROM projects"
            " WHERE repository = 'pypi' AND name = $1",
            name,
        )
        files = await connection.fetch(
            "SELECT f.filename FROM files f JOIN projects p ON p.id = f.project_id"
            " WHERE p.repository = 'pypi' AND p.name = $1 AND f.listed ORDER BY f.position",
            name,
        )
        return row, [f["filename"] for f in files]
    finally:
        await connection.close()


async def assert_nothing_stored(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        found = await connection.fetchval(
            "SELECT count(*) FROM projects WHERE name = 'demo' AND found"
        )
        files = await connection.fetchval(
            "SELECT count(*) FROM files f JOIN projects p ON p.id = f.project_id"
            " WHERE p.name = 'demo'"
        )
    finally:
        await connection.close()
    assert (found, files) == (0, 0)


def assert_good_page(answer: Answer) -> None:
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"] == JSON_V1
    assert "X-Mypypi2-Stale" not in answer.headers
    page = answer.json()
    assert page["name"] == "demo"
    [entry] = page["files"]
    assert entry["filename"] == GOOD.filename
    assert entry["hashes"] == {"sha256": GOOD.sha256}
    assert entry["requires-python"] == GOOD.requires_python
    assert entry["url"].endswith(f"/pypi/files/demo/{GOOD.filename}")


# -- a cold project and a bad answer ---------------------------------------------------------


def _json_page(files: object) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": files}).encode()


_VALID_JSON = _json_page(
    [{"filename": GOOD.filename, "url": f"../../files/demo/{GOOD.filename}", "hashes": {}}]
)
_VALID_HTML = f'<html><body><a href="../../files/demo/{GOOD.filename}">x</a></body></html>'.encode()


@dataclass(frozen=True)
class Case:
    fault: Fault
    status: int
    reason: str
    options: dict[str, Any] = field(default_factory=dict)
    # aiohttp resends an idempotent request once when the server disconnects before answering.
    hits: int = 1


CASES = {
    "html-unterminated-tag": Case(
        Fault(
            body=b'<!DOCTYPE html><html><body><a href="../../files/demo/demo-1.0.tar.gz">'
            b'demo-1.0.tar.gz</a><br/><a href="../../files/demo/demo-1.1.tar',
        ),
        502,
        "unterminated tag",
    ),
    # An anchor without href is skipped, not an error (the parser is lenient about it).
    "html-unterminated-comment": Case(
        Fault(body=b"<!DOCTYPE html><html><body><!-- <a href='demo-1.0.tar.gz'>"),
        502,
        "unterminated",
    ),
    "html-not-utf8": Case(
        Fault(body=b"<html><body><a href='demo-1.0.tar.gz'>\xff\xfe</a></body></html>"),
        502,
        "not UTF-8",
    ),
    "invalid-json": Case(
        Fault(body=b'{"meta": {"api-version": "1.1"}, "files": [', content_type=JSON_V1),
        502,
        "invalid JSON",
    ),
    # A file entry with a wrong type costs that entry or field, not the page.
    "json-not-an-object": Case(
        Fault(body=b'["demo-1.0.tar.gz"]', content_type=JSON_V1),
        502,
        "invalid JSON",
    ),
    "json-files-not-a-list": Case(
        Fault(body=_json_page("demo-1.0.tar.gz"), content_type=JSON_V1),
        502,
        "invalid JSON",
    ),
    "json-without-files": Case(
        Fault(body=b'{"meta": {"api-version": "1.1"}, "name": "demo"}', content_type=JSON_V1),
        502,
        "invalid JSON",
    ),
    "json-unknown-major-api-version": Case(
        Fault(
            body=json.dumps({"meta": {"api-version": "2.0"}, "name": "demo", "files": []}).encode(),
            content_type=JSON_V1,
        ),
        502,
        "unsupported api-version",
    ),
    "json-served-as-application-json": Case(
        Fault(body=_VALID_JSON, content_type="application/json"),
        502,
        "unexpected Content-Type 'application/json'",
    ),
    "html-served-as-text-plain": Case(
        Fault(body=_VALID_HTML, content_type="text/plain"),
        502,
        "unexpected Content-Type 'text/plain'",
    ),
    "empty-body-json": Case(Fault(body=b"", content_type=JSON_V1), 502, "empty body"),
    "empty-body-html": Case(Fault(body=b""), 502, "empty body"),
    "json-body-as-html": Case(Fault(body=_VALID_JSON), 502, "not HTML"),
    "over-max-page-bytes-with-length": Case(
        Fault(body=b"<html>" + b" " * 2000 + b"</html>"),
        502,
        "page of 2013 bytes is over 1000",
        {"max_page_bytes": 1000},
    ),
    "over-max-page-bytes-chunked": Case(
        Fault(body=b"<html>" + b" " * 200_000 + b"</html>", chunked=True),
        502,
        "over the limit of 1000 bytes",
        {"max_page_bytes": 1000},
    ),
    "status-500": Case(Fault(status=500), 502, "HTTP 500"),
    "status-503": Case(Fault(status=503), 502, "HTTP 503"),
    "status-403": Case(Fault(status=403), 502, "HTTP 403"),
    "timeout": Case(Fault(delay=30.0), 504, "timed out", {"read_timeout": 0.3}),
    "connection-dropped-before-answer": Case(Fault(reset=True), 502, "Disconnected", hits=2),
    "connection-dropped-mid-body": Case(
        Fault(body=_VALID_HTML, truncate=10), 502, "ClientPayloadError"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_bad_answer_for_cold_project_is_an_error_then_recovers(
    start_cache: StartCache,
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
    case: Case,
) -> None:
    upstream.add(UpstreamProject("demo", [GOOD]))
    upstream.fail(PATH, case.fault)
    clock = Clock()
    cache = await start_cache(repository("pypi", upstream, **case.options), clock=clock)

    failed = await get(http, f"{cache.url}/pypi/simple/demo/")

    assert failed.status == case.status, failed.body
    assert case.reason in failed.body.decode()
    assert failed.headers["Cache-Control"] == "no-store"
    assert upstream.hits[PATH] == case.hits
    await assert_nothing_stored(database)

    del upstream.faults[PATH]
    clock.advance(ERROR_RETRY_SECONDS + 1)  # failures are remembered that long (test_page_faults)
    recovered = await get(http, f"{cache.url}/pypi/simple/demo/")

    assert_good_page(recovered)
    assert upstream.hits[PATH] == case.hits + 1
    row, files = await stored_project(database)
    assert row is not None
    assert row["found"]
    assert files == [GOOD.filename]


@pytest.mark.parametrize(
    ("fault", "status", "reason"),
    [
        (Fault(status=500), 502, "HTTP 500"),
        (
            Fault(body=b'{"meta": {"api-version": "1.0"}, "projects": 7}', content_type=JSON_V1),
            502,
            "invalid JSON",
        ),
        (Fault(delay=30.0), 504, "timed out"),
    ],
    ids=["status-500", "json-wrong-types", "timeout"],
)
async def test_bad_answer_for_cold_project_list_stores_nothing(
    start_cache: StartCache,
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
    fault: Fault,
    status: int,
    reason: str,
) -> None:
    upstream.add(UpstreamProject("demo", [GOOD]))
    upstream.fail("/simple/", fault)
    clock = Clock()
    cache = await start_cache(repository("pypi", upstream, read_timeout=0.3), clock=clock)

    failed = await get(http, f"{cache.url}/pypi/simple/")

    assert failed.status == status, failed.body
    assert reason in failed.body.decode()
    connection = await asyncpg.connect(database)
    try:
        assert await connection.fetchval("SELECT count(*) FROM project_lists") == 0
    finally:
        await connection.close()

    del upstream.faults["/simple/"]
    clock.advance(ERROR_RETRY_SECONDS + 1)
    recovered = await get(http, f"{cache.url}/pypi/simple/")

    assert recovered.status == 200
    assert [p["name"] for p in recovered.json()["projects"]] == ["demo"]
    connection = await asyncpg.connect(database)
    try:
        names = await connection.fetchval("SELECT names FROM project_lists")
    finally:
        await connection.close()
    assert names == ["demo"]


async def test_connection_refused_is_502_then_recovers_when_upstream_listens(
    start_cache: StartCache, database: str, http: aiohttp.ClientSession
) -> None:
    port = free_port()  # nothing listens there (yet)
    late = LocalUpstream()
    late.port = port
    late.add(UpstreamProject("demo", [GOOD]))
    clock = Clock()
    cache = await start_cache(repository("pypi", late), clock=clock)

    refused = await get(http, f"{cache.url}/pypi/simple/demo/")

    assert refused.status == 502, refused.body
    assert "Cannot connect to host" in refused.body.decode()
    await assert_nothing_stored(database)

    await late.start(port)
    clock.advance(ERROR_RETRY_SECONDS + 1)
    try:
        recovered = await get(http, f"{cache.url}/pypi/simple/demo/")
    finally:
        await late.stop()

    assert_good_page(recovered)
    assert late.hits[PATH] == 1
    row, files = await stored_project(database)
    assert row is not None
    assert row["found"]
    assert files == [GOOD.filename]


# -- bad entries on an otherwise good page ---------------------------------------------------


@pytest.mark.parametrize("format_", ["json", "html"])
async def test_unparseable_file_url_skips_that_entry(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession, format_: str
) -> None:
    bad_url = "http://[oops/demo-0.9.tar.gz"
    if format_ == "json":
        body = _json_page(
            [
                {"filename": "demo-0.9.tar.gz", "url": bad_url, "hashes": {}},
                {"filename": GOOD.filename, "url": f"../../files/demo/{GOOD.filename}"},
            ]
        )
        fault = Fault(body=body, content_type=JSON_V1)
    else:
        body = (
            f'<html><body><a href="{bad_url}">demo-0.9.tar.gz</a>'
            f'<a href="../../files/demo/{GOOD.filename}">{GOOD.filename}</a></body></html>'
        ).encode()
        fault = Fault(body=body)
    upstream.fail(PATH, fault)
    cache = await start_cache()

    answer = await get(http, f"{cache.url}/pypi/simple/demo/")

    # parse.py: "Bad entries (unsafe filename, non-HTTP URL, duplicate) are skipped".
    assert answer.status == 200, answer.body
    assert answer.filenames() == [GOOD.filename]


async def test_nul_character_in_upstream_string_is_not_a_500(
    start_cache: StartCache, upstream: LocalUpstream, database: str, http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", [UpstreamFile(GOOD.filename, requires_python=">=3\x00")]))
    cache = await start_cache()

    answer = await get(http, f"{cache.url}/pypi/simple/demo/")

    # Either the odd value is dropped (200) or the page is refused as malformed (502).
    assert answer.status in (200, 502), answer.body
    if answer.status == 502:
        await assert_nothing_stored(database)


# -- upstream 404 ----------------------------------------------------------------------------


async def test_upstream_404_is_404_and_remembered(
    start_cache: StartCache, upstream: LocalUpstream, database: str, http: aiohttp.ClientSession
) -> None:
    cache = await start_cache()

    first = await get(http, f"{cache.url}/pypi/simple/demo/")
    again = await get(http, f"{cache.url}/pypi/simple/demo/", accept="text/html")

    assert (first.status, again.status) == (404, 404)
    assert "'demo' not found" in first.body.decode()
    assert upstream.hits[PATH] == 1
    row, files = await stored_project(database)
    assert row is not None
    assert not row["found"]
    assert files == []

    # Remembered in the database, not only in this worker: another instance does not ask.
    other = await start_cache()
    from_other = await get(http, f"{other.url}/pypi/simple/demo/")

    assert from_other.status == 404
    assert upstream.hits[PATH] == 1


async def test_upstream_410_is_404(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.fail(PATH, Fault(status=410, body=b"gone"))
    cache = await start_cache()

    answer = await get(http, f"{cache.url}/pypi/simple/demo/")

    assert answer.status == 404, answer.body


async def test_upstream_404_for_project_list_is_404(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.fail("/simple/", Fault(status=404, body=b"no list here"))
    cache = await start_cache()

    answer = await get(http, f"{cache.url}/pypi/simple/")

    assert answer.status == 404, answer.body


async def test_negative_cache_expires_after_negative_ttl(
    start_cache: StartCache, upstream: LocalUpstream, database: str, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    cache = await start_cache(repository("pypi", upstream, negative_ttl=60), clock=clock)

    assert (await get(http, f"{cache.url}/pypi/simple/demo/")).status == 404
    upstream.add(UpstreamProject("demo", [GOOD]))
    clock.advance(59)
    assert (await get(http, f"{cache.url}/pypi/simple/demo/")).status == 404
    assert upstream.hits[PATH] == 1

    clock.advance(2)
    published = await get(http, f"{cache.url}/pypi/simple/demo/")

    assert_good_page(published)
    assert upstream.hits[PATH] == 2
    row, files = await stored_project(database)
    assert row is not None
    assert row["found"]
    assert files == [GOOD.filename]


# -- stale-if-error --------------------------------------------------------------------------


STALE_FAULTS = {
    "status-500": Fault(status=500),
    "timeout": Fault(delay=30.0),
    "connection-dropped": Fault(reset=True),
    "malformed-page": Fault(body=b"<html><a href='demo-1.0.tar.gz'"),
}


@pytest.mark.parametrize("fault", STALE_FAULTS.values(), ids=STALE_FAULTS.keys())
async def test_stale_page_is_served_when_upstream_fails_then_replaced(
    start_cache: StartCache,
    upstream: LocalUpstream,
    database: str,
    http: aiohttp.ClientSession,
    fault: Fault,
) -> None:
    clock = Clock()
    project = upstream.add(UpstreamProject("demo", [GOOD]))
    cache = await start_cache(
        repository("pypi", upstream, ttl=60, read_timeout=0.3, stale_while_revalidate=0),
        clock=clock,
    )
    url = f"{cache.url}/pypi/simple/demo/"
    fresh = await get(http, url)
    assert_good_page(fresh)
    stored, _ = await stored_project(database)
    assert stored is not None

    clock.advance(61)
    upstream.fail(PATH, fault)
    # aiohttp resends an idempotent request once when the server disconnects before answering.
    attempts = 2 if fault.reset else 1
    stale = await get(http, url)

    assert stale.status == 200
    assert stale.headers["X-Mypypi2-Stale"] == "upstream-unavailable"
    assert stale.body == fresh.body
    assert stale.headers["ETag"] == fresh.headers["ETag"]
    assert upstream.hits[PATH] == 1 + attempts
    after_failure, files = await stored_project(database)
    assert after_failure is not None
    # The failure neither touched the rows nor counted as a confirmation.
    assert after_failure["revision"] == stored["revision"]
    assert after_failure["checked_at"] == stored["checked_at"]
    assert files == [GOOD.filename]

    # The upstream is not hammered: the stale copy is served a while before asking again.
    assert (await get(http, url)).headers["X-Mypypi2-Stale"] == "upstream-unavailable"
    assert upstream.hits[PATH] == 1 + attempts

    del upstream.faults[PATH]
    project.files = [GOOD, NEW]
    project.serial = 2
    clock.advance(61)
    replaced = await get(http, url)

    assert replaced.status == 200, replaced.body
    assert "X-Mypypi2-Stale" not in replaced.headers
    assert replaced.filenames() == [GOOD.filename, NEW.filename]
    assert replaced.headers["ETag"] != fresh.headers["ETag"]
    assert replaced.headers["X-PyPI-Last-Serial"] == "2"
    assert upstream.hits[PATH] == 2 + attempts
    after_change, files = await stored_project(database)
    assert after_change is not None
    assert after_change["revision"] > stored["revision"]
    assert files == [GOOD.filename, NEW.filename]


async def test_stale_project_list_is_served_when_upstream_fails(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", [GOOD]))
    cache = await start_cache(
        repository("pypi", upstream, list_ttl=60, stale_while_revalidate=0), clock=clock
    )
    url = f"{cache.url}/pypi/simple/"
    fresh = await get(http, url)
    assert fresh.status == 200

    clock.advance(61)
    upstream.fail("/simple/", Fault(status=500))
    stale = await get(http, url)

    assert stale.status == 200
    assert stale.headers["X-Mypypi2-Stale"] == "upstream-unavailable"
    assert stale.body == fresh.body
    assert upstream.hits["/simple/"] == 2


async def test_stale_page_with_ttl_zero_is_served_when_upstream_fails(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", [GOOD]))
    cache = await start_cache(repository("pypi", upstream, ttl=0, stale_while_revalidate=0))
    url = f"{cache.url}/pypi/simple/demo/"
    fresh = await get(http, url)
    assert_good_page(fresh)

    upstream.fail(PATH, Fault(status=500))
    stale = await get(http, url)

    assert stale.status == 200
    assert stale.headers["X-Mypypi2-Stale"] == "upstream-unavailable"
    assert stale.body == fresh.body
    assert upstream.hits[PATH] == 2


async def test_ttl_zero_page_follows_upstream_changes(
    start_cache: StartCache, upstream: LocalUpstream, database: str, http: aiohttp.ClientSession
) -> None:
    project = upstream.add(UpstreamProject("demo", [GOOD]))
    cache = await start_cache(repository("pypi", upstream, ttl=0, stale_while_revalidate=0))
    url = f"{cache.url}/pypi/simple/demo/"
    assert_good_page(await get(http, url))
    before, _ = await stored_project(database)
    assert before is not None

    project.files = [NEW]
    changed = await get(http, url)

    assert changed.filenames() == [NEW.filename]
    after, files = await stored_project(database)
    assert after is not None
    assert after["revision"] == before["revision"] + 1
    assert files == [NEW.filename]


async def test_answer_with_lower_serial_does_not_replace_the_stored_page(
    start_cache: StartCache, upstream: LocalUpstream, database: str, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    project = upstream.add(UpstreamProject("demo", [GOOD, NEW], serial=5))
    cache = await start_cache(
        repository("pypi", upstream, ttl=60, stale_while_revalidate=0), clock=clock
    )
    url = f"{cache.url}/pypi/simple/demo/"
    newer = await get(http, url)
    assert newer.headers["X-PyPI-Last-Serial"] == "5"

    # SPEC-CHECKLIST: keep X-PyPI-Last-Serial monotonic.
    project.files = [GOOD]
    project.serial = 3
    clock.advance(61)
    answer = await get(http, url)

    assert answer.status == 200
    assert upstream.hits[PATH] == 2
    assert answer.headers["X-PyPI-Last-Serial"] == "5"
    assert answer.filenames() == [GOOD.filename, NEW.filename]
    _, files = await stored_project(database)
    assert files == [GOOD.filename, NEW.filename]
