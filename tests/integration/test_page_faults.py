"""Upstream pages we cannot use, through a real server and database: values PostgreSQL
refuses to store are an upstream error (the stale copy served, 502 with nothing stored,
never a 500); a failure is remembered briefly by every instance, so a malformed page costs
one upstream request per pause, not one per client; not-found rows expire instead of
piling up; and error bodies that echo the request are plain text, never sniffed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from mypypi2.config import RepositoryConfig
from mypypi2.freshness import ERROR_RETRY_SECONDS
from mypypi2.page_kinds import NOT_FOUND_DELETED_AT_ONCE, NOT_FOUND_KEPT_SECONDS
from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.cache import Clock, StartCache, repository
from tests.support.http import JSON_V1, Answer
from tests.support.http import get as http_get

PATH = "/simple/demo/"
GOOD = UpstreamFile("demo-1.0.tar.gz", b"the real sdist")
STALE = "X-Mypypi2-Stale"
PAUSE = ERROR_RETRY_SECONDS + 1  # past the pause after a failure


async def get(http: aiohttp.ClientSession, url: str, accept: str = JSON_V1) -> Answer:
    """The answer itself, redirects not followed."""
    return await http_get(http, url, accept, follow_redirects=False)


@pytest.fixture
async def admin(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


# -- values PostgreSQL refuses ------------------------------------------------------------------

# Real refusals by the real server, for a file name any parser lets through: a constraint
# (what an out-of-range value meets) and an index entry over the btree size limit (what a
# huge filename meets). The test's own database gets them.
REFUSALS = {
    "check-violation": "ALTER TABLE files ADD CONSTRAINT refused CHECK (filename !~ 'refused')",
    "btree-row-too-large": (
        "CREATE INDEX refused ON files ((CASE WHEN filename ~ 'refused' THEN "
        + " || ".join(f"md5(filename || '{salt}')" for salt in range(100))
        + " ELSE filename END))"
    ),
}
REFUSED = UpstreamFile("demo-2.0.refused.tar.gz", b"a later sdist")


@pytest.mark.parametrize("refusal", REFUSALS.values(), ids=REFUSALS.keys())
async def test_a_page_postgresql_refuses_serves_the_stale_copy(
    start_cache: StartCache,
    upstream: LocalUpstream,
    admin: asyncpg.Connection,
    http: aiohttp.ClientSession,
    refusal: str,
) -> None:
    await admin.execute(refusal)
    clock = Clock()
    project = upstream.add(UpstreamProject("demo", [GOOD]))
    options = {"ttl": 60, "stale_while_revalidate": 0}
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    url = f"{cache.url}/pypi/simple/demo/"
    status, _, stored = await get(http, url)
    assert status == 200

    project.files = [GOOD, REFUSED]
    project.serial = 2
    clock.advance(61)
    status, headers, body = await get(http, url)

    assert status == 200, body
    assert headers[STALE] == "upstream-unavailable"
    assert body == stored
    assert upstream.hits[PATH] == 2
    # Remembered: the next client is answered without asking the upstream again.
    assert (await get(http, url))[1][STALE] == "upstream-unavailable"
    assert upstream.hits[PATH] == 2

    upstream.add(UpstreamProject("cold", [UpstreamFile("cold-1.0.refused.tar.gz")]))
    status, headers, body = await get(http, f"{cache.url}/pypi/simple/cold/")

    assert status == 502, body
    assert "cannot store the page" in body.decode()
    assert headers["Cache-Control"] == "no-store"
    assert await admin.fetchval("SELECT count(*) FROM projects WHERE name = 'cold'") == 0


async def test_a_page_postgresql_refuses_never_shows_the_upstream_credentials(
    start_cache: StartCache,
    upstream: LocalUpstream,
    admin: asyncpg.Connection,
    http: aiohttp.ClientSession,
) -> None:
    await admin.execute(REFUSALS["check-violation"])
    upstream.add(UpstreamProject("cold", [UpstreamFile("cold-1.0.refused.tar.gz")]))
    with_userinfo = f"http://reader:s3cret@127.0.0.1:{upstream.port}/simple/"
    cache = await start_cache(RepositoryConfig(name="pypi", upstream=with_userinfo))

    status, _, body = await get(http, f"{cache.url}/pypi/simple/cold/")

    assert status == 502, body
    assert "s3cret" not in body.decode()
    assert f"upstream http://127.0.0.1:{upstream.port}/simple/cold/: cannot store" in body.decode()


def _page(files: object, **meta: object) -> bytes:
    return json.dumps(
        {"meta": {"api-version": "1.1", **meta}, "name": "demo", "files": files}
    ).encode()


_ENTRY = {"filename": "demo-1.0.tar.gz", "url": "demo-1.0.tar.gz", "hashes": {}}
_LONG_NAME = "demo-1.0-" + "7f" * 4000 + ".tar.gz"
# Values PostgreSQL (or the way to it) refuses, unless the parser drops them first.
UNSTORABLE = {
    "serial-beyond-int64": _page([_ENTRY], **{"_last-serial": 2**70}),
    "size-beyond-int64": _page([{**_ENTRY, "size": 2**70}]),
    "filename-over-the-btree-limit": _page([{"filename": _LONG_NAME, "url": _LONG_NAME}]),
    "upload-time-year-one": _page([{**_ENTRY, "upload-time": "0001-01-01T00:00:00Z"}]),
}


@pytest.mark.parametrize("body", UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_an_unstorable_value_is_never_a_500(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession, body: bytes
) -> None:
    upstream.fail(PATH, Fault(body=body, content_type=JSON_V1))
    cache = await start_cache()

    status, _, answer = await get(http, f"{cache.url}/pypi/simple/demo/")

    # Dropped by the parser (200), or refused on the way in (502): an upstream problem.
    assert status in (200, 502), answer
    if status == 502:
        assert "cannot store the page" in answer.decode()


# -- failures are remembered, briefly, by everyone ------------------------------------------------

MALFORMED = Fault(body=b'{"meta": {"api-version": "1.1"}, "files": [', content_type=JSON_V1)


async def test_a_malformed_page_costs_one_upstream_request_per_pause(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("demo", [GOOD]))
    upstream.fail(PATH, MALFORMED)
    config = repository("pypi", upstream)
    first, second = await start_cache(config, clock=clock), await start_cache(config, clock=clock)

    answers = [await get(http, f"{cache.url}/pypi/simple/demo/") for cache in (first, second)]
    answers += [await get(http, f"{first.url}/pypi/simple/demo/") for _ in range(5)]

    # Every instance answers with the failure it shares, never with a 404.
    assert {status for status, _, _ in answers} == {502}
    assert all(b"malformed page" in body for _, _, body in answers)
    assert upstream.hits[PATH] == 1

    clock.advance(PAUSE)
    assert (await get(http, f"{second.url}/pypi/simple/demo/"))[0] == 502
    assert upstream.hits[PATH] == 2

    del upstream.faults[PATH]
    clock.advance(PAUSE)
    status, _, body = await get(http, f"{first.url}/pypi/simple/demo/")
    assert status == 200, body
    assert upstream.hits[PATH] == 3


# -- not-found rows expire ----------------------------------------------------------------------


async def test_not_found_rows_are_deleted_once_long_expired(
    start_cache: StartCache,
    upstream: LocalUpstream,
    admin: asyncpg.Connection,
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    upstream.add(UpstreamProject("gone", [GOOD]))
    options = {"negative_ttl": 60, "gone_after_404s": 1, "ttl": 60, "stale_while_revalidate": 0}
    cache = await start_cache(repository("pypi", upstream, **options), clock=clock)
    base = f"{cache.url}/pypi/simple"
    assert (await get(http, f"{base}/gone/"))[0] == 200
    del upstream.projects["gone"]
    clock.advance(61)
    assert (await get(http, f"{base}/gone/"))[0] == 404  # held once: its file row stays
    for number in range(5):
        assert (await get(http, f"{base}/random-{number}/"))[0] == 404
    # A scan that came before, long ago: more rows than one clean-up deletes.
    long_ago = dt.datetime.fromtimestamp(clock.now - 2 * NOT_FOUND_KEPT_SECONDS, dt.UTC)
    await admin.execute(
        "INSERT INTO projects (repository, name, found, changed_at, checked_at)"
        " SELECT 'pypi', 'scan-' || n, false, $1, $1 FROM generate_series(1, $2) AS n",
        long_ago,
        NOT_FOUND_DELETED_AT_ONCE + 20,
    )

    clock.advance(60 + NOT_FOUND_KEPT_SECONDS + 1)

    async def names() -> set[str]:
        return {row["name"] for row in await admin.fetch("SELECT name FROM projects")}

    # Each new not-found row deletes at most NOT_FOUND_DELETED_AT_ONCE old ones, oldest first.
    assert (await get(http, f"{base}/new-0/"))[0] == 404
    after_one = await names()
    assert sum(name.startswith("scan-") for name in after_one) == 20
    assert {f"random-{number}" for number in range(5)} <= after_one
    assert (await get(http, f"{base}/new-1/"))[0] == 404
    after_two = await names()

    assert after_two == {"gone", "new-0", "new-1"}  # the held project keeps its row
    # A deleted row is just a miss: asked again, remembered again.
    assert (await get(http, f"{base}/random-0/"))[0] == 404
    assert upstream.hits["/simple/random-0/"] == 2


# -- error bodies -------------------------------------------------------------------------------


async def test_error_bodies_that_echo_the_request_are_never_sniffed(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.fail("/simple/broken/", Fault(status=500))
    cache = await start_cache()
    base = f"{cache.url}/pypi/simple"
    answers = {
        "unknown project": await get(http, f"{base}/nothing-here/"),
        "unknown repository": await get(http, f"{cache.url}/nope/simple/"),
        "not acceptable": await get(http, f"{base}/", "text/html-<script>alert(1)</script>"),
        "upstream error": await get(http, f"{base}/broken/"),
    }

    assert [status for status, _, _ in answers.values()] == [404, 404, 406, 502]
    for what, (_, headers, _) in answers.items():
        assert headers["X-Content-Type-Options"] == "nosniff", what
        assert headers["Content-Type"] == "text/plain; charset=utf-8", what
        assert headers["Cache-Control"] == "no-store", what
    assert b"<script>" in answers["not acceptable"][2]  # echoed, and harmless as text
