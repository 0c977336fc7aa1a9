"""Large pages rendered once for the whole deployment, kept in the store, streamed from there.

In-process, with the threshold lowered so that a list of a few thousand names is "large":
its answers must be byte for byte those of the same list held in memory (headers, ETags,
bodies, 304s), whichever path (warm, routes) and however the body goes (pathsend,
streamed). zstd aside: a stored body is compressed as it is rendered, in pieces, so its
frame (and Content-Length) differs from the one-shot one; what it decodes to may not.
A second worker serves the list without rendering; a rendering the store lost is made again.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import asyncpg
import zstandard

from mypypi2.config import StorageConfig
from mypypi2.queries import page_renderings
from mypypi2.queries.page_renderings import Rendering
from tests.integration.test_answer_paths import ROUTED, Answer, header, request
from tests.local_upstream import LocalUpstream, UpstreamProject
from tests.support.apps import PathsendAsBody
from tests.support.cache import RunningCache, StartCache
from tests.support.files import s3_client

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
LIST = "/pypi/simple/"
NAMES = [f"Project_{i:04d}.Tools" for i in range(3000)]
SMALL = 1024  # bytes: the list's renderings are far larger


def add_names(upstream: LocalUpstream) -> None:
    for name in NAMES:
        upstream.add(UpstreamProject(name))


async def answers(port: int, path: str) -> list[Answer]:
    """Every kind of answer of the list, asked the way clients ask."""
    first = await request(port, "GET", path, {"Accept": JSON_V1})
    etag = header(first, b"etag")
    assert etag is not None
    asked = [
        {"Accept": JSON_V1},
        {"Accept": "text/html"},
        {"Accept": HTML_V1, "Accept-Encoding": "gzip"},
        {"Accept": JSON_V1, "Accept-Encoding": "zstd"},
        {"Accept": JSON_V1, "Accept-Encoding": "gzip", "If-None-Match": etag.decode()},
        {"Accept": "text/html", "If-Modified-Since": header(first, b"last-modified").decode()},  # type: ignore[union-attr]
    ]
    found = [await request(port, "GET", path, headers) for headers in asked]
    found.append(await request(port, "HEAD", path, {"Accept": JSON_V1}))
    return found


def decoded(found: list[Answer]) -> list[Answer]:
    """The answers with zstd bodies decoded and their Content-Length left out."""
    same = []
    for status, headers, body in found:
        if (b"content-encoding", b"zstd") in headers:
            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
            headers = [(name, value) for name, value in headers if name != b"content-length"]
        same.append((status, headers, body))
    return same


async def rendering_rows(dsn: str) -> list[str]:
    db = await asyncpg.connect(dsn)
    try:
        rows = await db.fetch("SELECT storage_key FROM page_renderings ORDER BY storage_key")
    finally:
        await db.close()
    return [row["storage_key"] for row in rows]


def stored_keys(cache: RunningCache) -> list[str]:
    root = Path(cache.config.data_dir) / "files" / ".pages"
    return sorted(str(p.relative_to(root.parent)) for p in root.rglob("*") if p.is_file())


async def test_a_stored_list_answers_as_a_held_one(
    start_cache: StartCache, upstream: LocalUpstream, database: str
) -> None:
    add_names(upstream)
    held = await start_cache()
    expected = await answers(held.port, LIST)
    await held.stop()
    # The held copy's renderings were in memory only.
    assert await rendering_rows(database) == []

    stored = await start_cache(store_pages_above=SMALL, wrap=PathsendAsBody)
    # Another process's answer, a new revision of nothing: the same content, the same bytes.
    streamed = await answers(stored.port, LIST + ROUTED)  # routes: pathsend stand-in
    warm = await answers(stored.port, LIST)  # the warm path

    assert decoded(streamed) == decoded(expected)
    assert decoded(warm) == decoded(expected)
    assert [a[:2] for a in warm if (b"content-encoding", b"zstd") not in a[1]] == [
        a[:2] for a in expected if (b"content-encoding", b"zstd") not in a[1]
    ]
    keys = await rendering_rows(database)
    # Two bodies (JSON, HTML) in three codings; HTML under two media types.
    assert len(keys) == 9 and len(set(keys)) == 6
    assert stored_keys(stored) == sorted(set(keys))
    status, _, body = expected[0]
    assert status == 200
    assert [p["name"] for p in json.loads(body)["projects"]] == NAMES
    assert gzip.decompress(expected[2][2]).count(b"<a href=") == len(NAMES)
    assert zstandard.ZstdDecompressor().decompress(expected[3][2]) == body
    assert [a[0] for a in expected[4:]] == [304, 304, 200]
    assert expected[6][2] == b""  # HEAD


async def test_a_stored_list_is_streamed_without_pathsend(
    start_cache: StartCache, upstream: LocalUpstream
) -> None:
    """hypercorn has no pathsend: the routes stream the stored object, the warm path passes."""
    add_names(upstream)
    cache = await start_cache(store_pages_above=SMALL)

    plain = await request(cache.port, "GET", LIST, {"Accept": JSON_V1})
    routed = await request(cache.port, "GET", LIST + ROUTED, {"Accept": JSON_V1})

    assert plain == routed
    assert header(plain, b"content-length") == str(len(plain[2])).encode()
    assert [p["name"] for p in json.loads(plain[2])["projects"]] == NAMES


async def test_a_list_stored_in_s3_is_streamed_from_the_bucket(
    start_cache: StartCache, upstream: LocalUpstream, s3_storage: StorageConfig, database: str
) -> None:
    """Redirects or not, a page is always answered by us: S3 objects are streamed through."""
    add_names(upstream)
    held = await start_cache()
    expected = await answers(held.port, LIST)
    await held.stop()

    stored = await start_cache(store_pages_above=SMALL, storage=s3_storage)

    assert decoded(await answers(stored.port, LIST)) == decoded(expected)
    keys = await rendering_rows(database)
    listed = s3_client(s3_storage).list_objects_v2(Bucket=s3_storage.bucket, Prefix="mirror/")
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(f"mirror/{k}" for k in set(keys))


async def test_one_rendering_serves_every_worker(
    start_cache: StartCache, upstream: LocalUpstream, database: str
) -> None:
    add_names(upstream)
    first = await start_cache(store_pages_above=SMALL)
    second = await start_cache(store_pages_above=SMALL)
    answer = await request(first.port, "GET", LIST, {"Accept": JSON_V1})
    keys = await rendering_rows(database)
    made = {key: (Path(first.config.data_dir) / "files" / key).stat().st_mtime_ns for key in keys}

    # The second worker reads the state the first saved: no upstream request, no rendering.
    assert await request(second.port, "GET", LIST, {"Accept": JSON_V1}) == answer
    assert upstream.hits["/simple/"] == 1
    assert await rendering_rows(database) == keys
    for key, mtime in made.items():
        assert (Path(first.config.data_dir) / "files" / key).stat().st_mtime_ns == mtime


async def test_a_rendering_lost_by_the_store_is_made_again(
    start_cache: StartCache, upstream: LocalUpstream, database: str
) -> None:
    add_names(upstream)
    cache = await start_cache(store_pages_above=SMALL)
    answer = await request(cache.port, "GET", LIST, {"Accept": JSON_V1})
    for key in await rendering_rows(database):
        (Path(cache.config.data_dir) / "files" / key).unlink(missing_ok=True)

    lost = await request(cache.port, "GET", LIST, {"Accept": JSON_V1})
    again = await request(cache.port, "GET", LIST, {"Accept": JSON_V1})

    assert (lost[0], header(lost, b"retry-after")) == (503, b"1")
    assert again == answer
    assert upstream.hits["/simple/"] == 1  # made from the stored rows, not fetched again


async def test_renderings_of_older_contents_go_a_while_after_they_are_superseded(
    database: str,
) -> None:
    def rows(content: bytes) -> list[Rendering]:
        return [Rendering("text/html", "", f".pages/pypi/_list/{content.hex()}/1", 10, '"e"')]

    day = dt.timedelta(days=1)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    db = await asyncpg.connect(database)
    try:
        for content, made in ((b"a", t0), (b"b", t0 + day), (b"c", t0 + 2 * day)):
            await page_renderings.save(db, "pypi", "", content, "/p/", rows(content), made)

        # "a" was superseded a day after it was made, "b" a day later still.
        kept = await page_renderings.delete_superseded(db, "pypi", "", b"c", t0 + day)
        gone = await page_renderings.delete_superseded(db, "pypi", "", b"c", t0 + 1.5 * day)

        assert kept == []
        assert gone == [rows(b"a")[0].storage_key]
        left = await db.fetch("SELECT content_hash FROM page_renderings ORDER BY made_at")
        assert [row["content_hash"] for row in left] == [b"b", b"c"]
    finally:
        await db.close()
