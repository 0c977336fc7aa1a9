"""`/-/metrics` of a real `mypypi2 serve` with two workers: known traffic, exact counts.

Whichever worker answers a scrape reports every worker's counts; workers publish theirs
about once a second, so the test polls until the counts settle, then compares them all.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.support import waiting
from tests.support.process import Launch, Server, clean_environ, write_config

PIP = 'pip/24.0 {"installer":{"name":"pip","version":"24.0"}}'
UV = 'uv/0.5.11 {"installer":{"name":"uv","version":"0.5.11"}}'
POETRY = "poetry/1.8.3"
BURST = 10
FILE = UpstreamFile("demo-1.0-py3-none-any.whl", content=b"wheel bytes " * 100)
# Samples that the scrapes themselves change (the requests to /-/metrics, their clients).
_SCRAPES = ("mypypi2_clients_total", "mypypi2_database_connections")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, server: Server) -> Samples:
    # A new connection each time: either worker may answer, and both must agree.
    async with http.get(f"{server.url}/-/metrics", headers={"Connection": "close"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith(("_created", "_bucket"))
    }


def traffic(samples: Samples) -> Samples:
    """The samples the scrapes themselves leave alone."""
    return {
        (name, labels): value
        for (name, labels), value in samples.items()
        if not name.startswith(_SCRAPES) and ("kind", "other") not in labels
    }


def pick(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The nonzero samples of `name`, by their labels in order."""
    return {
        tuple(sorted(labels)): value
        for (sample, labels), value in samples.items()
        if sample == name and value
    }


async def get(http: aiohttp.ClientSession, url: str, user_agent: str) -> int:
    headers = {"User-Agent": user_agent, "Connection": "close"}
    async with http.get(url, headers=headers, allow_redirects=False) as response:
        await response.read()
        return response.status


async def test_known_traffic_gives_exact_counts_over_two_workers(
    launch: Launch, upstream: LocalUpstream, database: str, tmp_path: Path
) -> None:
    upstream.add(UpstreamProject("demo", [FILE]))
    write_config(
        tmp_path,
        {
            "data-dir": str(tmp_path / "data"),
            "database": {"url": database},
            "repositories": [
                {"name": "pypi", "upstream": upstream.url},
                # Past its TTL within a second, and never served past it without asking.
                {"name": "flaky", "upstream": upstream.url, "ttl": 1, "stale-while-revalidate": 0},
            ],
        },
    )
    server = await launch(tmp_path, clean_environ(), "--workers", "2")
    pypi, flaky = f"{server.url}/pypi", f"{server.url}/flaky"
    file_url = f"{pypi}/files/demo/{FILE.filename}"
    gate = asyncio.Event()
    upstream.fail(f"/files/demo/{FILE.filename}", Fault(gate=gate))
    async with aiohttp.ClientSession() as http:
        assert await get(http, f"{pypi}/simple/demo/", PIP) == 200  # cold: miss
        assert await get(http, f"{pypi}/simple/demo/", PIP) == 200  # warm: hit
        burst = [asyncio.ensure_future(get(http, file_url, UV)) for _ in range(BURST)]
        await waiting.eventually(
            lambda: upstream.hits[f"/files/demo/{FILE.filename}"] == 1, "the download began"
        )
        await asyncio.sleep(1.5)  # for every request of the burst to reach a worker
        gate.set()
        assert await asyncio.gather(*burst) == [200] * BURST
        assert await get(http, f"{pypi}/simple/nope/", POETRY) == 404
        assert await get(http, f"{flaky}/simple/demo/", PIP) == 200  # cold: miss
        await asyncio.sleep(1.2)  # past the TTL
        await upstream.stop()
        assert await get(http, f"{flaky}/simple/demo/", PIP) == 200  # stale

        previous: Samples = {}

        async def settled() -> bool:
            nonlocal previous
            samples = traffic(await scrape(http, server))
            done = samples == previous
            previous = samples
            return done and sum(pick(samples, "mypypi2_requests_total").values()) == 15

        await waiting.eventually(settled, "the counts settle", polls=100, interval=0.3)
        clients = pick(await scrape(http, server), "mypypi2_clients_total")

    samples = previous
    size = len(FILE.content)
    assert pick(samples, "mypypi2_requests_total") == {
        (("kind", "page"), ("outcome", "miss"), ("repository", "pypi"), ("status", "200")): 1,
        (("kind", "page"), ("outcome", "hit"), ("repository", "pypi"), ("status", "200")): 1,
        (("kind", "file"), ("outcome", "miss"), ("repository", "pypi"), ("status", "200")): 10,
        (("kind", "page"), ("outcome", "not-found"), ("repository", "pypi"), ("status", "404")): 1,
        (("kind", "page"), ("outcome", "miss"), ("repository", "flaky"), ("status", "200")): 1,
        (("kind", "page"), ("outcome", "stale"), ("repository", "flaky"), ("status", "200")): 1,
    }
    assert pick(samples, "mypypi2_coalesced_waiters_total") == {
        (("kind", "file"), ("repository", "pypi")): BURST - 1
    }
    assert pick(samples, "mypypi2_upstream_requests_total") == {
        (("kind", "page"), ("repository", "pypi"), ("result", "200")): 1,
        (("kind", "file"), ("repository", "pypi"), ("result", "200")): 1,
        (("kind", "page"), ("repository", "pypi"), ("result", "404")): 1,
        (("kind", "page"), ("repository", "flaky"), ("result", "200")): 1,
        (("kind", "page"), ("repository", "flaky"), ("result", "connect-error")): 1,
    }
    assert pick(samples, "mypypi2_upstream_duration_seconds_count") == {
        (("kind", "page"), ("repository", "pypi")): 2,
        (("kind", "file"), ("repository", "pypi")): 1,
        (("kind", "page"), ("repository", "flaky")): 2,
    }
    assert pick(samples, "mypypi2_stale_served_total") == {
        (("reason", "upstream"), ("repository", "flaky")): 1
    }
    assert pick(samples, "mypypi2_request_duration_seconds_count") == {
        (("kind", "page"),): 5,
        (("kind", "file"),): BURST,
    }
    served = pick(samples, "mypypi2_served_bytes_total")
    assert served[(("kind", "file"), ("repository", "pypi"))] == BURST * size
    received = pick(samples, "mypypi2_upstream_bytes_total")
    assert received[(("kind", "file"), ("repository", "pypi"))] == size
    # Bytes saved, as the README's PromQL computes it, for the file: nine of ten.
    assert served[(("kind", "file"), ("repository", "pypi"))] - size == (BURST - 1) * size
    assert pick(samples, "mypypi2_stored_files") == {(("repository", "pypi"),): 1}
    assert pick(samples, "mypypi2_stored_bytes") == {(("repository", "pypi"),): size}
    assert pick(samples, "mypypi2_downloads_in_flight") == {}
    assert pick(samples, "mypypi2_verification_failures_total") == {}
    # The scrapes were made by aiohttp ("other"); every other request named its installer.
    del clients[(("installer", "other"),)]
    assert clients == {
        (("installer", "pip"),): 4,
        (("installer", "uv"),): BURST,
        (("installer", "poetry"),): 1,
    }
