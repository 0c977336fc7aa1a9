"""The status page over real traffic: `mypypi2 serve` with two workers counts every request
exactly once whichever worker answered it and whichever renders the page, and the page in a
real browser (Debian's Chromium, driven by Playwright) draws its charts without a console
error and shows the numbers of /-/status.json."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.apps import StateSpy
from tests.support.cache import StartCache
from tests.support.files import wait_stored
from tests.support.http import get
from tests.support.process import Launch, add_demo, clean_environ, write_config
from tests.support.status import keyed_values, lookup, shown_as
from tests.support.waiting import eventually

CHROMIUM = "/usr/bin/chromium"
# Where the browser test leaves its screenshot (default: the test's tmp_path).
ARTIFACTS = "MYPYPI2_TEST_ARTIFACTS"


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where the browser test leaves its screenshot."""
    directory = Path(os.environ.get(ARTIFACTS) or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
async def raw_http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps bodies as sent, so their lengths are the bytes the cache served."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def drive_known_traffic(
    raw_http: aiohttp.ClientSession, url: str, upstream: LocalUpstream, db: asyncpg.Connection
) -> dict[str, int]:
    """Pages and files, cold then warm, a name that can't exist and a failing upstream;
    returns the request counts and bytes the report must show."""
    demo = add_demo(upstream)
    upstream.add(UpstreamProject("broken", [UpstreamFile("broken-1.0.tar.gz")]))
    upstream.fail("/simple/broken/", Fault(status=503))
    file = demo.files[0]
    sent = []
    for path, status in (
        ("/pypi/simple/demo/", 200),  # miss
        ("/pypi/simple/demo/", 200),  # hit
        (f"/pypi/files/demo/{file.filename}", 200),  # miss: downloaded
        (f"/pypi/files/demo/{file.filename}", 200),  # hit: stored
        ("/pypi/simple/-not-a-name-/", 404),  # never asked upstream
        ("/pypi/simple/broken/", 502),  # the upstream fails
    ):
        answer = await get(raw_http, url + path)
        assert answer.status == status, path
        sent.append(len(answer.body))
        if path.endswith(file.filename):
            # The download is committed just after its last byte went out: until then the
            # next request for it would join it (a miss too).
            await wait_stored(db, file)
    return {
        "requests": 6,
        "hits": 2,
        "misses": 2,
        "not_found": 1,
        "errors": 1,
        "bytes_served": sum(sent),
        "demo_bytes": sum(sent[:4]),
        "bytes_fetched": sum(
            int(r.response_headers["Content-Length"])
            for r in upstream.requests
            if r.status == 200 and r.response_headers is not None
        ),
        "upstream_requests": len(upstream.requests),
        "upstream_failures": len(upstream.requests_for("/simple/broken/")),
        "stored_bytes": len(demo.files[0].content),
    }


def assert_report(report: dict[str, Any], expected: dict[str, int]) -> None:
    [pypi] = report["repositories"]
    for window in ("last_hour", "last_day"):
        totals = pypi[window]["totals"]
        for name in (
            "requests", "hits", "misses", "not_found", "errors", "bytes_served", "bytes_fetched",
        ):  # fmt: skip
            assert totals[name] == expected[name], (window, name)
        assert totals["upstream_requests"] == expected["upstream_requests"], window
        assert totals["upstream_failures"] == expected["upstream_failures"], window
        assert pypi[window]["hit_ratio"] == 0.5
    assert pypi["top_projects"][0] == {
        "repository": "pypi",
        "project": "demo",
        "requests": 4,
        "bytes_served": expected["demo_bytes"],
    }
    assert pypi["upstream"]["state"] == "failing"  # its last request failed
    assert pypi["upstream"]["last_success"] is not None
    assert len(pypi["upstream"]["failures"]) == expected["upstream_failures"]
    assert pypi["storage"] == {"files": 1, "bytes": expected["stored_bytes"], "max_bytes": None}


def assert_shown(keyed: list[tuple[str, str | None]], report: dict[str, Any]) -> None:
    """The numbers of the page's keyed elements are the report's."""
    assert len(keyed) > 20
    for key, value in keyed:
        if value is not None:
            assert value == shown_as(lookup(report, key)), key


async def test_two_workers_count_every_request_once(
    launch: Launch,
    upstream: LocalUpstream,
    database: str,
    db: asyncpg.Connection,
    raw_http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    write_config(
        tmp_path,
        {
            "data-dir": str(tmp_path / "data"),
            "database": {"url": database},
            "repositories": [{"name": "pypi", "upstream": upstream.url}],
        },
    )
    server = await launch(tmp_path, clean_environ(), "--workers", "2")
    expected = await drive_known_traffic(raw_http, server.url, upstream, db)
    report: dict[str, Any] = {}

    async def flushed() -> bool:
        report.update((await get(raw_http, server.url + "/-/status.json", accept=None)).json())
        totals = report["repositories"][0]["last_hour"]["totals"]
        return bool(totals["requests"] >= expected["requests"])

    # Each worker adds its tallies every ten seconds.
    await eventually(flushed, "both workers flushed", polls=300, interval=0.1)
    assert_report(report, expected)
    page = await get(raw_http, server.url + "/-/status", accept=None)
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert_shown(keyed_values(page.body.decode()), report)


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no browser: {CHROMIUM} is absent")
async def test_the_page_in_a_browser(
    start_cache: StartCache,
    upstream: LocalUpstream,
    db: asyncpg.Connection,
    raw_http: aiohttp.ClientSession,
    artifacts: Path,
) -> None:
    from playwright.async_api import async_playwright

    found: list[Any] = []
    cache = await start_cache(wrap=lambda app: StateSpy(app, found))
    expected = await drive_known_traffic(raw_http, cache.url, upstream, db)
    await found[0]["traffic"].flush()  # one worker: what it tallied is all there is
    report = (await get(raw_http, cache.url + "/-/status.json", accept=None)).json()
    assert_report(report, expected)

    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
            loaded = await page.goto(cache.url + "/-/status")
            assert loaded is not None and loaded.status == 200
            bars = page.locator("svg.chart rect.bar")
            assert await bars.count() > 0
            box = await bars.first.bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0
            shown = await page.eval_on_selector_all(
                "[data-key]", "nodes => nodes.map(n => [n.dataset.key, n.dataset.value ?? null])"
            )
            screenshot = artifacts / "status-page.png"
            await page.screenshot(path=str(screenshot), full_page=True)
            print(f"status page screenshot: {screenshot}")
        finally:
            await browser.close()
    assert problems == []
    assert_shown([(key, value) for key, value in shown], report)
    assert screenshot.stat().st_size > 10_000
