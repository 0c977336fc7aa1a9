"""What a worker keeps of a stored page: its renderings, encoded and wrapped in headers once.

A snapshot belongs to one revision of one page. Its representations (JSON, HTML) are
rendered on first use, their compressed forms computed on first use too, and so are the
response headers for each, so a warm request costs a few dictionary lookups, whatever the
page size or the client's encoding. A large page's representations are not held at all:
they are objects of the store (shared_renderings.py), and the snapshot knows only where
each form is, its size and its ETag; the answer is the same, its body a `StoredBody`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import format_datetime

import zstandard

# The codings a representation is compressed with: those negotiate.py may choose.
from mypypi2.negotiate import CODINGS as ENCODINGS

# Below this, compressing saves less than its headers cost.
MIN_COMPRESSED_SIZE = 1024
# Compressing a larger body (a project list runs to tens of MB) would stall the loop.
COMPRESS_IN_THREAD_ABOVE = 256 * 1024
ZSTD_FAST_ABOVE = 8 * 1024 * 1024
# Values of X-Mypypi2-Stale: who could not confirm the copy served.
STALE_UPSTREAM = "upstream-unavailable"
STALE_DATABASE = "database-unavailable"


def names_any(if_none_match: str, etags: Iterable[str]) -> bool:
    """Whether an If-None-Match value names one of `etags`, or is `*` (weak comparison, as
    RFC 9110 section 13.1.2 asks for GET)."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or not tags.isdisjoint(etags)


def compress(encoding: str, body: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=6, mtime=0)
    # Level 10 takes a second per 50 MB; level 3 a tenth of that, still smaller than gzip.
    level = 3 if len(body) > ZSTD_FAST_ABOVE else 10
    return zstandard.ZstdCompressor(level=level).compress(body)


def representation_etag(media_type: str, body: bytes) -> str:
    # Each media type is its own representation with its own validator (RFC 9110).
    return f'"{hashlib.blake2b(media_type.encode() + body, digest_size=16).hexdigest()}"'


@dataclass(frozen=True, slots=True)
class StoredBody:
    """A body kept in the store, not in memory: what the answer streams from."""

    page: tuple[str, str]  # the snapshot's key, to forget it when the object is lost
    key: str
    size: int
    path: str | None  # on local disk: what a server offering pathsend sends, zero-copy


Body = bytes | StoredBody


@dataclass(eq=False)
class Representation:
    """One media type of one page revision; `body` None: every form is in `stored`."""

    body: bytes | None
    etag: str  # strong, of the identity encoding
    size: int = 0  # of the identity encoding (the body's length when held)
    _encoded: dict[str, bytes] = field(default_factory=dict)
    stored: dict[str | None, StoredBody] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.body is not None:
            self.size = len(self.body)

    def etag_for(self, encoding: str | None) -> str:
        # A compressed body is a different representation, so it gets its own validator.
        return self.etag if encoding is None else f'{self.etag[:-1]}-{encoding}"'

    def matches(self, if_none_match: str) -> bool:
        """Whether If-None-Match names this representation in any encoding."""
        return names_any(if_none_match, (self.etag_for(e) for e in (None, *ENCODINGS)))

    def worth_compressing(self) -> bool:
        return self.size >= MIN_COMPRESSED_SIZE

    def held_bytes(self) -> int:
        return (self.size if self.body is not None else 0) + sum(map(len, self._encoded.values()))

    async def encoded(self, encoding: str | None) -> bytes:
        """The held body in `encoding` (a stored one's forms are in `stored`)."""
        assert self.body is not None
        if encoding is None:
            return self.body
        body = self._encoded.get(encoding)
        if body is None:
            if self.size > COMPRESS_IN_THREAD_ABOVE:
                body = await asyncio.to_thread(compress, encoding, self.body)
            else:
                body = compress(encoding, self.body)
            self._encoded[encoding] = body
        return body


RawHeaders = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Prepared:
    """One representation in one encoding, ready to send: a 200 and its 304."""

    body: Body
    headers: RawHeaders
    not_modified_headers: RawHeaders


@dataclass(eq=False, slots=True)
class Snapshot:
    """One stored revision of a page as this worker serves it."""

    found: bool
    revision: int
    checked_at: float  # when the upstream last confirmed it (epoch seconds)
    fresh_until: float  # serve without asking anyone until then
    changed_at: dt.datetime
    last_serial: int | None
    max_age: int  # Cache-Control max-age for clients
    # Why it is served past its freshness (STALE_UPSTREAM, STALE_DATABASE), or None.
    stale: str | None
    _render: Callable[[str], bytes]
    _representations: dict[str, Representation] = field(default_factory=dict)
    _prepared: dict[tuple[str, str | None, str | None], Prepared] = field(default_factory=dict)
    # Called when a rendering or a compressed form is added: the cache weighs it again.
    on_growth: Callable[[], None] | None = None

    def held_bytes(self) -> int:
        """The bodies this snapshot holds in memory (stored ones are not held)."""
        return sum(r.held_bytes() for r in self._representations.values())

    def ready(self, media_type: str, encoding: str | None) -> Prepared | None:
        """The response `prepared` made before, without awaiting anything (the warm path's
        common case: one coroutine less per request); None when it has not yet."""
        return self._prepared.get((media_type, encoding, self.stale))

    async def prepared(self, media_type: str, encoding: str | None) -> Prepared:
        """The response for `media_type`, compressed with `encoding` (None: identity)."""
        key = (media_type, encoding, self.stale)
        found = self._prepared.get(key)
        if found is None:
            representation = self.representation(media_type)
            held = representation.held_bytes()
            body: Body
            if representation.body is None:
                body = representation.stored[encoding]
            else:
                body = await representation.encoded(encoding)
            common = self._headers(representation.etag_for(encoding))
            size = body.size if isinstance(body, StoredBody) else len(body)
            content = [
                (b"content-type", _content_type(media_type)),
                (b"content-length", str(size).encode()),
            ]
            if encoding is not None:
                content.append((b"content-encoding", encoding.encode()))
            found = Prepared(body, common + content, common)
            self._prepared[key] = found
            if representation.held_bytes() != held:
                self._grown()
        return found

    def _grown(self) -> None:
        if self.on_growth is not None:
            self.on_growth()

    def _headers(self, etag: str) -> RawHeaders:
        # A stale copy must not be kept by clients: they come back for the fresh one.
        max_age = 0 if self.stale is not None else self.max_age
        headers = [
            (b"etag", etag.encode()),
            # Compressed or not, every page answer depends on Accept-Encoding too.
            (b"vary", b"Accept, Accept-Encoding"),
            (b"cache-control", f"max-age={max_age}, public".encode()),
            (b"last-modified", format_datetime(self.changed_at, usegmt=True).encode()),
        ]
        if self.last_serial is not None:
            headers.append((b"x-pypi-last-serial", str(self.last_serial).encode()))
        if self.stale is not None:
            # RFC 9111 dropped the Warning header; a plain one says who could not confirm
            # this copy.
            headers.append((b"x-mypypi2-stale", self.stale.encode()))
        return headers

    def representation(self, media_type: str) -> Representation:
        found = self._representations.get(media_type)
        if found is None:
            body = self._render(media_type)
            found = Representation(body, representation_etag(media_type, body))
            self._representations[media_type] = found
            self._grown()
        return found

    def keep_stored(self, media_type: str, etag: str, forms: dict[str | None, StoredBody]) -> None:
        """`media_type` is rendered in the store, in each coding of `forms`."""
        size = forms[None].size
        self._representations[media_type] = Representation(None, etag, size, stored=forms)


def _content_type(media_type: str) -> bytes:
    # uv compares the part before ";" exactly; HTML says its charset, JSON is always UTF-8.
    if media_type.endswith("+json"):
        return media_type.encode()
    return f"{media_type}; charset=utf-8".encode()
