"""What a worker keeps of a stored page: its renderings, each encoded once.

A snapshot belongs to one revision of one page. Its representations (JSON, HTML) are
rendered on first use and their compressed forms computed on first use too, so a warm
request costs a dictionary lookup, whatever the page size or the client's encoding.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import zstandard

# Below this, compressing saves less than its headers cost.
MIN_COMPRESSED_SIZE = 1024
# Compressing a larger body (a project list runs to tens of MB) would stall the loop.
COMPRESS_IN_THREAD_ABOVE = 256 * 1024
ENCODINGS = ("zstd", "gzip")


def _compress(encoding: str, body: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=6, mtime=0)
    return zstandard.ZstdCompressor(level=10).compress(body)


@dataclass(eq=False)
class Representation:
    """One media type of one page revision."""

    body: bytes
    etag: str  # strong, of the identity encoding
    _encoded: dict[str, bytes] = field(default_factory=dict)

    def etag_for(self, encoding: str | None) -> str:
        # A compressed body is a different representation, so it gets its own validator.
        return self.etag if encoding is None else f'{self.etag[:-1]}-{encoding}"'

    def matches(self, if_none_match: str) -> bool:
        """Whether If-None-Match names this representation in any encoding."""
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or any(self.etag_for(e) in tags for e in (None, *ENCODINGS))

    def worth_compressing(self) -> bool:
        return len(self.body) >= MIN_COMPRESSED_SIZE

    async def encoded(self, encoding: str | None) -> bytes:
        if encoding is None:
            return self.body
        body = self._encoded.get(encoding)
        if body is None:
            if len(self.body) > COMPRESS_IN_THREAD_ABOVE:
                body = await asyncio.to_thread(_compress, encoding, self.body)
            else:
                body = _compress(encoding, self.body)
            self._encoded[encoding] = body
        return body


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
    stale: bool  # served past its freshness because the upstream failed
    _render: Callable[[str], bytes]
    _representations: dict[str, Representation] = field(default_factory=dict)

    def representation(self, media_type: str) -> Representation:
        found = self._representations.get(media_type)
        if found is None:
            body = self._render(media_type)
            # Each media type is its own representation with its own validator (RFC 9110).
            digest = hashlib.blake2b(media_type.encode() + body, digest_size=16).hexdigest()
            found = Representation(body, f'"{digest}"')
            self._representations[media_type] = found
        return found


class SnapshotCache:
    """Least-recently-used snapshots of this worker; never the truth, only a shortcut."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], Snapshot] = OrderedDict()

    def get(self, key: tuple[str, str]) -> Snapshot | None:
        snapshot = self._entries.get(key)
        if snapshot is not None:
            self._entries.move_to_end(key)
        return snapshot

    def put(self, key: tuple[str, str], snapshot: Snapshot) -> None:
        self._entries[key] = snapshot
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def drop(self, repository: str, names: list[str] | None) -> None:
        """Forget a repository's snapshots (all of them when `names` is None)."""
        doomed = [
            key
            for key in self._entries
            if key[0] == repository and (names is None or key[1] in names)
        ]
        for key in doomed:
            del self._entries[key]
