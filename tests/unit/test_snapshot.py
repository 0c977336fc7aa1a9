"""A worker's snapshots: encodings of one representation and the LRU of snapshots."""

from __future__ import annotations

import datetime as dt
import gzip
import os

import pytest
import zstandard

from mypypi2 import snapshot
from mypypi2.negotiate import CODINGS as ENCODINGS
from mypypi2.snapshot import Representation, Snapshot

BODY = b'{"meta": {"api-version": "1.1"}, "name": "demo", "files": []}' * 40
ETAG = '"0123456789abcdef"'


def decompress(encoding: str, body: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    # A zstd frame written by a one-shot compress carries its size; a streaming reader
    # does not rely on that.
    return zstandard.ZstdDecompressor().decompressobj().decompress(body)


def make_snapshot(revision: int = 1, render: dict[str, int] | None = None) -> Snapshot:
    calls = render if render is not None else {}

    def render_as(media_type: str) -> bytes:
        calls[media_type] = calls.get(media_type, 0) + 1
        return f"{media_type} revision {revision}".encode()

    return Snapshot(
        found=True,
        revision=revision,
        checked_at=0.0,
        fresh_until=600.0,
        changed_at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        last_serial=None,
        max_age=600,
        stale=None,
        _render=render_as,
    )


# -- Representation ------------------------------------------------------------------------


async def test_identity_is_the_body_itself() -> None:
    representation = Representation(BODY, ETAG)

    assert await representation.encoded(None) is BODY


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_encoded_round_trips_and_is_smaller(encoding: str) -> None:
    representation = Representation(BODY, ETAG)

    encoded = await representation.encoded(encoding)

    assert encoded != BODY
    assert len(encoded) < len(BODY)
    assert decompress(encoding, encoded) == BODY


@pytest.mark.parametrize(
    ("encoding", "magic"), [("gzip", b"\x1f\x8b"), ("zstd", b"\x28\xb5\x2f\xfd")]
)
async def test_encoded_body_is_in_the_named_format(encoding: str, magic: bytes) -> None:
    encoded = await Representation(BODY, ETAG).encoded(encoding)

    assert encoded.startswith(magic)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_encoded_is_computed_once(encoding: str) -> None:
    representation = Representation(BODY, ETAG)

    first = await representation.encoded(encoding)
    second = await representation.encoded(encoding)

    assert second is first


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_large_body_is_compressed_in_a_thread_and_round_trips(encoding: str) -> None:
    # Incompressible and over the threshold, so the thread path runs on real work.
    body = os.urandom(snapshot.COMPRESS_IN_THREAD_ABOVE + 1)
    representation = Representation(body, ETAG)

    assert decompress(encoding, await representation.encoded(encoding)) == body


def test_gzip_is_reproducible() -> None:
    # mtime=0: the same body always gives the same bytes, whichever worker compresses it.
    assert snapshot.compress("gzip", BODY) == snapshot.compress("gzip", BODY)


def test_etag_per_encoding() -> None:
    representation = Representation(BODY, ETAG)

    tags = {encoding: representation.etag_for(encoding) for encoding in (None, *ENCODINGS)}

    assert tags == {
        None: ETAG,
        "gzip": '"0123456789abcdef-gzip"',
        "zstd": '"0123456789abcdef-zstd"',
    }


@pytest.mark.parametrize("encoding", [None, *ENCODINGS])
def test_matches_any_encoding_of_the_representation(encoding: str | None) -> None:
    representation = Representation(BODY, ETAG)

    assert representation.matches(representation.etag_for(encoding))
    assert representation.matches(f"W/{representation.etag_for(encoding)}")
    assert representation.matches(f'"other", {representation.etag_for(encoding)} , "x"')


@pytest.mark.parametrize("header", ["*", " * ", '"other", *'])
def test_matches_star(header: str) -> None:
    assert Representation(BODY, ETAG).matches(header)


@pytest.mark.parametrize(
    "header",
    [
        '"other"',
        '"0123456789abcdef-br"',  # a coding we never send
        "0123456789abcdef",  # unquoted: not an entity-tag
        '"0123456789abcde"',
        '"0123456789abcdef-gzip-zstd"',
        '"0123456789abcdef" "x"',  # two tags without a comma are one bad tag
    ],
)
def test_does_not_match_other_tags(header: str) -> None:
    assert not Representation(BODY, ETAG).matches(header)


def test_matches_does_not_confuse_representations() -> None:
    json_like = Representation(BODY, '"aaaa"')
    html_like = Representation(BODY, '"bbbb"')

    for encoding in (None, *ENCODINGS):
        assert not html_like.matches(json_like.etag_for(encoding))


@pytest.mark.parametrize(
    ("size", "expected"),
    [(0, False), (snapshot.MIN_COMPRESSED_SIZE - 1, False), (snapshot.MIN_COMPRESSED_SIZE, True)],
)
def test_worth_compressing_from_the_threshold(size: int, expected: bool) -> None:
    assert Representation(b"x" * size, ETAG).worth_compressing() is expected


# -- Snapshot --------------------------------------------------------------------------------


def test_representation_is_rendered_once_per_media_type() -> None:
    calls: dict[str, int] = {}
    page = make_snapshot(render=calls)

    json_first = page.representation("application/vnd.pypi.simple.v1+json")
    json_again = page.representation("application/vnd.pypi.simple.v1+json")
    html = page.representation("text/html")

    assert json_again is json_first
    assert calls == {"application/vnd.pypi.simple.v1+json": 1, "text/html": 1}
    assert json_first.etag != html.etag
    assert json_first.body == b"application/vnd.pypi.simple.v1+json revision 1"


def test_etag_is_strong_quoted_and_stable_across_workers() -> None:
    one = make_snapshot().representation("text/html").etag
    other = make_snapshot().representation("text/html").etag

    assert one == other
    assert one.startswith('"') and one.endswith('"') and not one.startswith("W/")


def test_same_bytes_under_two_media_types_get_two_etags() -> None:
    page = Snapshot(
        found=True,
        revision=1,
        checked_at=0.0,
        fresh_until=0.0,
        changed_at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        last_serial=None,
        max_age=0,
        stale=None,
        _render=lambda _media_type: b"<html></html>",
    )

    assert (
        page.representation("text/html").etag
        != page.representation("application/vnd.pypi.simple.v1+html").etag
    )


def test_new_content_gets_a_new_etag() -> None:
    assert (
        make_snapshot(revision=1).representation("text/html").etag
        != make_snapshot(revision=2).representation("text/html").etag
    )


async def test_held_bytes_count_what_the_snapshot_holds_and_growth_is_told() -> None:
    page = make_snapshot()
    grown: list[int] = []
    page.on_growth = lambda: grown.append(page.held_bytes())

    await page.prepared("application/vnd.pypi.simple.v1+json", None)
    await page.prepared("application/vnd.pypi.simple.v1+json", None)  # nothing new
    prepared = await page.prepared("application/vnd.pypi.simple.v1+json", "gzip")

    body = page.representation("application/vnd.pypi.simple.v1+json").body
    assert isinstance(prepared.body, bytes) and body is not None
    assert grown == [len(body), len(body) + len(prepared.body)]


async def test_a_stored_representation_holds_nothing_and_keeps_its_headers() -> None:
    page = make_snapshot()
    stored = {
        None: snapshot.StoredBody(("pypi", ""), ".pages/k/0", 5000, "/store/.pages/k/0"),
        "gzip": snapshot.StoredBody(("pypi", ""), ".pages/k/0.gz", 700, None),
    }
    page.keep_stored("text/html", ETAG, stored)

    identity = await page.prepared("text/html", None)
    gzipped = await page.prepared("text/html", "gzip")

    assert page.held_bytes() == 0
    assert (identity.body, gzipped.body) == (stored[None], stored["gzip"])
    assert (b"content-length", b"5000") in identity.headers
    assert (b"content-length", b"700") in gzipped.headers
    assert (b"etag", b'"0123456789abcdef-gzip"') in gzipped.headers
    assert page.representation("text/html").worth_compressing()
