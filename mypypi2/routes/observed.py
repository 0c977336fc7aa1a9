"""The outermost middleware: one `observe.RequestRecord` per HTTP request.

It names the request (repository, kind and project from the path, the installer from the
User-Agent, a request id), holds the record in `observe.current` while the app answers,
learns the status and counts the body bytes from what the app sends, adds `X-Request-Id`
to every response, and hands the finished record to the worker's sinks. The warm path runs
inside it, so all of this must stay a few dict and string operations.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mypypi2 import observe
from mypypi2.files import METADATA_SUFFIX
from mypypi2.observe import Installer, Observer, Outcome, RequestKind, RequestRecord

REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID = 128
# pip and uv send "pip/24.0 {linehaul JSON}" and "uv/0.5.0 {...}"; poetry "poetry/1.8.3".
_INSTALLERS: dict[str, Installer] = {"pip": "pip", "uv": "uv", "poetry": "poetry"}


def installer_of(user_agent: str | None) -> Installer:
    """The installer a User-Agent names first, by its product token."""
    if not user_agent:
        return "other"
    product = user_agent.partition("/")[0].strip().lower()
    return _INSTALLERS.get(product, "other")


def sane_request_id(value: bytes | None) -> str | None:
    """An incoming X-Request-Id worth keeping: 1 to 128 visible ASCII characters (no
    spaces, so that it stays one field of the access line); else None."""
    if value is None or not 0 < len(value) <= MAX_REQUEST_ID:
        return None
    text = value.decode("latin-1")
    if text.isascii() and text.isprintable() and " " not in text:
        return text
    return None


class RequestIds:
    """Ids unique across workers and replicas: a random prefix per worker, then a count."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex() + "-"
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):x}"


def outcome_of(status: int) -> Outcome:
    """How a request nobody described was answered, from its status."""
    if status == 404:
        return "not-found"
    if status >= 500:
        return "error"
    return "hit"


class Observed:
    def __init__(self, app: ASGIApp, observer: Observer, repositories: Collection[str]) -> None:
        self._app = app
        self._observer = observer
        self._repositories = frozenset(repositories)
        self._ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        user_agent = incoming_id = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value
            elif name == REQUEST_ID_HEADER:
                incoming_id = value
        request_id = sane_request_id(incoming_id) or self._ids.next()
        path: str = scope["path"]
        repository, project, kind = target_of(path, self._repositories)
        query: bytes = scope["query_string"]
        client = scope.get("client")
        record = RequestRecord(
            request_id,
            scope["method"],
            path,
            query.decode("latin-1") if query else "",
            client[0] if client else None,
            repository,
            project,
            kind,
            installer_of(None if user_agent is None else user_agent.decode("latin-1")),
            started,
        )
        id_header = (REQUEST_ID_HEADER, request_id.encode())
        start_headers: list[tuple[bytes, bytes]] = []

        async def observed_send(message: Message) -> None:
            nonlocal start_headers
            kind = message["type"]
            if kind == "http.response.body":
                record.bytes_sent += len(message.get("body", b""))
            elif kind == "http.response.start":
                record.status = message["status"]
                start_headers = [*message.get("headers", ()), id_header]
                message = {**message, "headers": start_headers}
            elif kind == "http.response.pathsend":
                record.bytes_sent += _content_length(start_headers)
            await send(message)

        token = observe.current.set(record)
        try:
            await self._app(scope, receive, observed_send)
        finally:
            observe.current.reset(token)
            record.seconds = time.perf_counter() - started
            if record.status == 0:
                record.status = 500  # what the server answers for an app that failed
            status = record.status
            # A 404 or a failure is that, whatever a use case said on the way.
            if record.outcome is None or status == 404 or status >= 500:
                record.outcome = outcome_of(status)
            self._observer.request(record)


def target_of(
    path: str, repositories: frozenset[str]
) -> tuple[str | None, str | None, RequestKind]:
    """Repository, project and kind of a request, from its path alone. Only configured
    repositories are named: no path can add a label value to the metrics."""
    parts = path.split("/", 4)
    if len(parts) < 3 or parts[1] not in repositories:
        return None, None, "other"
    if parts[2] == "simple":
        if len(parts) == 3 or not parts[3] or parts[3] in ("v1+json", "v1+html"):
            if len(parts) == 5 and parts[4].strip("/"):
                return parts[1], parts[4].strip("/"), "page"
            return parts[1], None, "list"
        return parts[1], parts[3], "page"
    if parts[2] == "files" and len(parts) == 5:
        return parts[1], parts[3], "metadata" if path.endswith(METADATA_SUFFIX) else "file"
    return parts[1], None, "other"


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return 0
