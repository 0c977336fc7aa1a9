"""The project list at the scale of the public index, through `mypypi2 serve` with 2 workers.

700,000 names come cold from the upstream, are parsed, stored and rendered once, and served
by both workers in both formats and every coding; then each worker holds the list and the
2,000-file page warm, and its RSS must stay under the 150 MB the issue asks for.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import aiohttp
import zstandard

from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.process import Launch, clean_environ, write_config

JSON_V1 = "application/vnd.pypi.simple.v1+json"
NAMES = [f"Proj_{i:06d}.Tools" if i % 3 else f"proj-{i:06d}" for i in range(700_000)]
RSS_LIMIT_MB = 150
HUGE = "huge-project"


def _workers(leader: int) -> list[int]:
    """The processes `leader` started (granian's workers), from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == leader:
            children.append(int(stat.parent.name))
    return children


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def _get(
    session: aiohttp.ClientSession, url: str, accept: str, coding: str = "identity"
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Accept": accept, "Accept-Encoding": coding}
    async with session.get(url, headers=headers, auto_decompress=False) as response:
        headers = {name.lower(): value for name, value in response.headers.items()}
        return response.status, headers, await response.read()


def _html_names(body: bytes) -> list[str]:
    return [
        line.rpartition('/">')[2].removesuffix("</a><br />")
        for line in body.decode().splitlines()
        if line.startswith("<a href=")
    ]


async def test_the_full_list_cold_then_warm_within_memory(
    launch: Launch, upstream: LocalUpstream, database: str, tmp_path: Path
) -> None:
    document = {"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in NAMES]}
    upstream.fail("/simple/", Fault(body=json.dumps(document).encode(), content_type=JSON_V1))
    files = [UpstreamFile(f"huge_project-{n}.0-py3-none-any.whl") for n in range(2000)]
    upstream.add(UpstreamProject(HUGE, files))
    write_config(
        tmp_path,
        {
            "data-dir": str(tmp_path / "data"),
            "database": {"url": database},
            "repositories": [{"name": "pypi", "upstream": upstream.url}],
        },
    )
    server = await launch(tmp_path, clean_environ(), "--workers", "2")
    url = f"{server.url}/pypi/simple/"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        status, headers, body = await _get(session, url, JSON_V1)
        assert status == 200
        names = [p["name"] for p in json.loads(body)["projects"]]
        assert len(names) == len(NAMES)
        assert (names[0], names[1], names[-1]) == (NAMES[0], NAMES[1], NAMES[-1])

        # Both workers serve every form (parallel requests reach both), and the page.
        asked = [("text/html", c) for c in ("identity", "gzip", "zstd")] * 4
        asked += [(JSON_V1, c) for c in ("gzip", "zstd")] * 4
        answers = await asyncio.gather(*(_get(session, url, *a) for a in asked))
        page = f"{server.url}/pypi/simple/{HUGE}/"
        pages = await asyncio.gather(*(_get(session, page, JSON_V1) for _ in range(8)))

    assert upstream.hits["/simple/"] == 1
    assert {a[0] for a in answers} | {p[0] for p in pages} == {200}
    assert len(json.loads(pages[0][2])["files"]) == 2000
    html = answers[0][2]
    assert _html_names(html)[:2] == NAMES[:2] and len(_html_names(html)) == len(NAMES)
    assert b'<a href="/pypi/simple/proj-000001-tools/">Proj_000001.Tools</a>' in html
    assert answers[0][1]["content-length"] == str(len(html))
    assert gzip.decompress(answers[1][2]) == html
    assert zstandard.ZstdDecompressor().decompress(answers[2][2], len(html)) == html
    json_gzip, json_zstd = answers[12], answers[13]
    assert gzip.decompress(json_gzip[2]) == body
    assert zstandard.ZstdDecompressor().decompress(json_zstd[2], len(body)) == body
    assert json_gzip[1]["etag"] == headers["etag"][:-1] + '-gzip"'

    workers = _workers(server.process.pid)
    assert len(workers) == 2
    rss = [_rss_mb(pid) for pid in workers]
    assert max(rss) < RSS_LIMIT_MB, rss
