"""The one answer of each page and file request, for the warm path and the routes alike.

warm.py answers from worker memory what simple.py and files.py answer the slow way; a client
must not be able to tell which one did. So neither writes a header: a page's answer comes
from its `Snapshot` (headers built once per revision, encoding and staleness), a stored
file's and a metadata file's from the `FileHeaders` they carry (file_headers.py, built once
per object this worker holds). A large page's body is a `StoredBody`: both paths send it
from the store, zero-copy where the file is local and the server offers pathsend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from mypypi2.negotiate import choose_encoding
from mypypi2.routes.conditional import page_not_modified
from mypypi2.snapshot import Body, RawHeaders, Snapshot


async def page_answer(
    snapshot: Snapshot,
    media_type: str,
    accept_encoding: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
) -> tuple[int, RawHeaders, Body]:
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


class StreamedResponse(Response):
    """A large page's stored body, sent chunk by chunk (its headers say its length)."""

    def __init__(
        self, status_code: int, raw_headers: RawHeaders, chunks: AsyncIterator[bytes]
    ) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.background = None
        self._chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if scope["method"] != "HEAD":
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


class PathResponse(Response):
    """A large page's stored body as a local file, sent by the server itself (pathsend)."""

    def __init__(self, status_code: int, raw_headers: RawHeaders, path: str) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.background = None
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.pathsend", "path": self._path})
