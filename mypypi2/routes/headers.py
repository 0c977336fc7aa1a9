"""The one answer of each page and file request, for the warm path and the routes alike.

warm.py answers from worker memory what simple.py and files.py answer the slow way; a client
must not be able to tell which one did. So neither writes a header: a page's answer comes
from its `Snapshot` (headers built once per revision, encoding and staleness), a stored
file's and a metadata file's from here, built once per object this worker holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response

from mypypi2.files import Metadata
from mypypi2.lru import LRU
from mypypi2.negotiate import choose_encoding
from mypypi2.routes.conditional import page_not_modified
from mypypi2.snapshot import RawHeaders, Snapshot
from mypypi2.storage import StoredFile

# A filename's content never changes (the index forbids re-uploads, and we keep serving the
# bytes we stored first), so clients and proxies may keep a file forever.
IMMUTABLE = "public, max-age=31536000, immutable"
OCTETS = "application/octet-stream"
# As many objects as a worker remembers by default (Files' cache_entries): past that, headers
# are built again for the least recently asked for, which costs a little, never a wrong header.
_REMEMBERED = 16384


def etag_of(sha256: str) -> str:
    """The ETag of bytes with this digest, in every answer that carries them: a file or
    metadata body pending, stored or redirected to is validated the same way."""
    return f'"{sha256}"'


async def page_answer(
    snapshot: Snapshot,
    media_type: str,
    accept_encoding: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
) -> tuple[int, RawHeaders, bytes]:
    """Status, headers and body of a GET of a page in `media_type`."""
    representation = snapshot.representation(media_type)
    encoding = None
    if representation.worth_compressing():
        encoding = choose_encoding(accept_encoding)
    prepared = snapshot.ready(media_type, encoding) or await snapshot.prepared(media_type, encoding)
    if (if_none_match is not None or if_modified_since is not None) and page_not_modified(
        representation, snapshot.changed_at, if_none_match, if_modified_since
    ):
        return 304, prepared.not_modified_headers, b""
    return 200, prepared.headers, prepared.body


class RawResponse(Response):
    """A response whose headers were built once (for the snapshot, the stored file), not
    per request."""

    def __init__(self, status_code: int, raw_headers: RawHeaders, body: bytes = b"") -> None:
        self.status_code = status_code
        self.body = body
        self.raw_headers = raw_headers
        self.background = None


@dataclass(frozen=True, slots=True)
class FileHeaders:
    """The headers of one file's bytes: a stored file, a metadata file, a download."""

    # What every answer about these bytes carries: a 304, a redirect, a range, a 416.
    validators: RawHeaders
    # The whole body, 200 (and its HEAD).
    whole: RawHeaders


def file_headers(
    sha256: str | None, size: int | None, last_modified: str | None, *, ranges: bool
) -> FileHeaders:
    """The headers of a file's bytes, stored or still arriving (then the digest and size
    are what the page said, if it did)."""
    validators = [(b"cache-control", IMMUTABLE.encode())]
    if sha256 is not None:
        validators.insert(0, (b"etag", etag_of(sha256).encode()))
    if last_modified is not None:
        validators.append((b"last-modified", last_modified.encode()))
    whole = [*validators, (b"content-type", OCTETS.encode())]
    if ranges:  # of a stored file: metadata is small, a file still arriving is sent whole
        whole.append((b"accept-ranges", b"bytes"))
    if size is not None:
        whole.append((b"content-length", str(size).encode()))
    return FileHeaders(validators, whole)


# Keyed by what names the object (cheap to hash), holding the object itself: an entry is
# used only for the very object it was built for, so a file stored again, purged or lost
# never gets another one's headers.
_stored: LRU[str, tuple[StoredFile, FileHeaders]] = LRU(_REMEMBERED)
_metadata: LRU[str, tuple[Metadata, FileHeaders]] = LRU(_REMEMBERED)


def stored_headers(stored: StoredFile) -> FileHeaders:
    entry = _stored.get(stored.key)
    if entry is not None and entry[0] is stored:
        return entry[1]
    headers = file_headers(stored.sha256, stored.size, stored.last_modified, ranges=True)
    _stored.put(stored.key, (stored, headers))
    return headers


def metadata_headers(metadata: Metadata) -> FileHeaders:
    entry = _metadata.get(metadata.sha256)
    if entry is not None and entry[0] is metadata:
        return entry[1]
    headers = file_headers(metadata.sha256, len(metadata.body), None, ranges=False)
    _metadata.put(metadata.sha256, (metadata, headers))
    return headers
