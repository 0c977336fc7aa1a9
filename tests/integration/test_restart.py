"""What one instance stored is served by the next one on the same database, without the
upstream: PostgreSQL, not a worker's memory, is the truth."""

from __future__ import annotations

import aiohttp
import pytest

from tests.local_upstream import LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.cache import Clock, StartCache, repository
from tests.support.http import JSON_V1, get

PAGES = ["/pypi/simple/demo/", "/pypi/simple/"]
FORMATS = [JSON_V1, "text/html"]


@pytest.fixture
def project(upstream: LocalUpstream) -> UpstreamProject:
    upstream.add(UpstreamProject("Other", [UpstreamFile("other-0.1.tar.gz")]))
    return upstream.add(
        UpstreamProject(
            "demo",
            [
                UpstreamFile("demo-1.0.tar.gz", b"sdist", requires_python=">=3.9"),
                UpstreamFile("demo-1.1-py3-none-any.whl", b"wheel", yanked="broken"),
            ],
            serial=7,
        )
    )


async def test_new_instance_serves_stored_pages_without_upstream(
    start_cache: StartCache,
    upstream: LocalUpstream,
    project: UpstreamProject,
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    config = repository("pypi", upstream, ttl=600, list_ttl=600)
    first = await start_cache(config, clock=clock)
    before = {
        (path, accept): await get(http, f"{first.url}{path}", accept)
        for path in PAGES
        for accept in FORMATS
    }
    assert {status for status, _, _ in before.values()} == {200}
    hits = sum(upstream.hits.values())
    assert hits == 2  # one per page: the second format is rendered from the stored rows
    await first.stop()
    await upstream.stop()

    clock.advance(599)  # still within the TTL
    second = await start_cache(config, clock=clock)
    for (path, accept), (_, old_headers, old_body) in before.items():
        status, headers, body = await get(http, f"{second.url}{path}", accept)

        assert status == 200, (path, accept, body)
        assert body == old_body
        # The same rows render the same bytes: validators hold across workers and restarts.
        assert headers["ETag"] == old_headers["ETag"]
        assert headers["Last-Modified"] == old_headers["Last-Modified"]
        assert "X-Mypypi2-Stale" not in headers
    assert sum(upstream.hits.values()) == hits
    assert b"demo-1.1-py3-none-any.whl" in before[("/pypi/simple/demo/", JSON_V1)][2]
    assert b"Other" in before[("/pypi/simple/", "text/html")][2]


async def test_new_instance_serves_stale_pages_when_upstream_is_gone(
    start_cache: StartCache,
    upstream: LocalUpstream,
    project: UpstreamProject,
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    config = repository("pypi", upstream, ttl=600, list_ttl=600)
    first = await start_cache(config, clock=clock)
    before = {path: await get(http, f"{first.url}{path}", JSON_V1) for path in PAGES}
    await first.stop()
    await upstream.stop()

    clock.advance(601)  # past the TTL: the new instance must ask, and nobody listens
    second = await start_cache(config, clock=clock)
    for path, (_, old_headers, old_body) in before.items():
        status, headers, body = await get(http, f"{second.url}{path}", JSON_V1)

        assert status == 200, (path, body)
        assert body == old_body
        assert headers["ETag"] == old_headers["ETag"]
        assert headers["X-Mypypi2-Stale"] == "upstream-unavailable"


async def test_new_instance_remembers_upstream_404_without_upstream(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    first = await start_cache()
    assert (await get(http, f"{first.url}/pypi/simple/ghost/", JSON_V1))[0] == 404
    await first.stop()
    await upstream.stop()

    second = await start_cache()
    status, _, body = await get(http, f"{second.url}/pypi/simple/ghost/", JSON_V1)

    assert status == 404, body
    assert upstream.hits["/simple/ghost/"] == 1
