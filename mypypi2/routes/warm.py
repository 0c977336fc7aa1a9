"""The warm path: requests this worker can answer from memory, without the framework.

A CI fleet mostly asks for pages this worker already rendered and files it already
stored. Those answers need no routing table, request object or database: this ASGI
middleware recognizes them by their exact shape and sends the bytes and headers prepared
once per snapshot or stored file (and the file itself, zero-copy). Anything else,
including every case that needs a redirect, a revalidation, a range or an error, goes on
to the routes in simple.py and files.py, which give the same answers the slow way: both
take each answer from routes/headers.py or the file's own headers, so the two cannot
drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from mypypi2.errors import NotAcceptable
from mypypi2.files import METADATA_SUFFIX, Files
from mypypi2.negotiate import negotiate
from mypypi2.pages import Pages
from mypypi2.routes.headers import page_answer
from mypypi2.snapshot import StoredBody


class WarmPath:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            await self._app(scope, receive, send)
            return
        parts = scope["path"].split("/")
        state = scope["state"]
        answered = False
        if len(parts) == 5 and parts[2] == "simple" and parts[4] == "" and parts[3]:
            answered = await _page(state["pages"], parts[1], parts[3], scope, send)
        elif len(parts) == 4 and parts[2] == "simple" and parts[3] == "":
            answered = await _page(state["pages"], parts[1], "", scope, send)
        elif len(parts) == 5 and parts[2] == "files":
            answered = await _file(state["files"], parts[1], parts[3], parts[4], scope, send)
        if not answered:
            await self._app(scope, receive, send)


def _headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    # ASGI servers give lowercase names (and, granian and hypercorn alike, a list). The first
    # of a repeated field wins, as in the routes' Headers.get: both must read one request alike.
    return dict(reversed(raw))


async def _page(pages: Pages, repository: str, name: str, scope: Scope, send: Send) -> bool:
    headers = _headers(scope["headers"])
    if b"cache-control" in headers:
        return False  # a client asking for revalidation is answered by the route
    # Only canonical names of configured repositories are ever held, so anything else (a
    # redirect, a 404: the route's business) misses here, with no name check of its own.
    snapshot = pages.warm(repository, name)
    if snapshot is None:
        return False
    try:
        media_type = negotiate(_text(headers.get(b"accept")))
    except NotAcceptable:
        return False
    accept_encoding = headers.get(b"accept-encoding")
    if_none_match = headers.get(b"if-none-match")
    if_modified_since = headers.get(b"if-modified-since")
    # Decoded here, not by a helper: a function call per header is a tenth of this path.
    status, response_headers, body = await page_answer(
        snapshot,
        media_type,
        None if accept_encoding is None else accept_encoding.decode("latin-1"),
        None if if_none_match is None else if_none_match.decode("latin-1"),
        None if if_modified_since is None else if_modified_since.decode("latin-1"),
    )
    if isinstance(body, StoredBody):
        # A large page's body in the store: sent zero-copy when it is a local file and the
        # server can, else the route streams it.
        if body.path is None or "http.response.pathsend" not in scope.get("extensions", {}):
            return False
        if not os.path.isfile(body.path):  # noqa: ASYNC240 - lost by the store: the route says so
            return False
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.pathsend", "path": body.path})
        return True
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
    return True


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


async def _file(
    files: Files, repository: str, project: str, filename: str, scope: Scope, send: Send
) -> bool:
    if filename.endswith(METADATA_SUFFIX):
        return await _metadata(files, repository, project, filename, scope, send)
    if "http.response.pathsend" not in scope.get("extensions", {}):
        return False  # no zero-copy from this server: FileResponse streams it
    known = files.warm(repository, project, filename)
    if known is None or known.path is None:
        return False  # not stored, or not on disk (S3: the route redirects or streams through)
    headers = _headers(scope["headers"])
    if b"range" in headers or b"if-none-match" in headers or b"if-modified-since" in headers:
        return False
    # Lost by the store: the route fetches it again. The one system call per request here:
    # a server that offers pathsend opens the file only once this has returned, and answers
    # one it cannot open with a 404 we never hear of (granian 2.x), so only a look before
    # can tell. An inode the page cache holds makes it cheap.
    if not os.path.isfile(known.path):  # noqa: ASYNC240
        return False
    response_headers = known.headers.whole
    await send({"type": "http.response.start", "status": 200, "headers": response_headers})
    await send({"type": "http.response.pathsend", "path": known.path})
    return True


async def _metadata(
    files: Files, repository: str, project: str, filename: str, scope: Scope, send: Send
) -> bool:
    metadata = files.warm_metadata(repository, project, filename.removesuffix(METADATA_SUFFIX))
    if metadata is None or b"if-none-match" in _headers(scope["headers"]):
        return False
    response_headers = metadata.headers.whole
    await send({"type": "http.response.start", "status": 200, "headers": response_headers})
    await send({"type": "http.response.body", "body": metadata.body})
    return True
