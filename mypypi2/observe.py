"""What happened while answering, for the metrics, the access log and the status page.

Each client request gets one `RequestRecord`, made by the outermost middleware and held in
a context variable while the request runs: the use cases say how they answered
(`answered_as`) without knowing who listens. Upstream requests are reported as one
`UpstreamRecord` each. Sinks (one per consumer) receive the finished records; they run on
every request, so they must only tally in memory and do their I/O elsewhere.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Literal, Protocol

# What a request was for: a project list, a project page, a distribution file, its
# PEP 658 metadata, or anything else (probes, status, errors outside a repository).
RequestKind = Literal["list", "page", "file", "metadata", "other"]
# How it was answered: from what we held ("hit"), after an upstream 200 ("miss"), after an
# upstream 304 ("revalidated"), from what we held because the upstream or the database
# failed ("stale"), a 404 ("not-found"), or a failure ("error").
Outcome = Literal["hit", "miss", "stale", "revalidated", "not-found", "error"]
# What one upstream request came to.
UpstreamResult = Literal[
    "200", "304", "404", "timeout", "connect-error", "5xx", "malformed", "other"
]
# The installer a client identified itself as (User-Agent).
Installer = Literal["pip", "uv", "poetry", "other"]


class RequestRecord:
    __slots__ = (
        "bytes_sent",
        "installer",
        "kind",
        "method",
        "outcome",
        "path",
        "project",
        "repository",
        "request_id",
        "seconds",
        "started",
        "status",
    )

    def __init__(
        self,
        request_id: str,
        method: str,
        path: str,
        repository: str | None,
        project: str | None,
        kind: RequestKind,
        installer: Installer,
        started: float,
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.repository = repository  # None outside a repository's URLs
        self.project = project  # the name as requested (None for lists and others)
        self.kind: RequestKind = kind
        self.installer: Installer = installer
        self.started = started  # time.perf_counter() at arrival
        self.outcome: Outcome | None = None  # set by the use cases, else from the status
        self.status = 0
        self.bytes_sent = 0  # body bytes sent to the client
        self.seconds = 0.0  # until the last body byte was handed to the server


class UpstreamRecord:
    __slots__ = ("bytes_received", "error", "kind", "repository", "result", "seconds")

    def __init__(
        self,
        repository: str,
        kind: RequestKind,
        result: UpstreamResult,
        seconds: float,
        bytes_received: int,
        error: str | None = None,
    ) -> None:
        self.repository = repository
        self.kind: RequestKind = kind
        self.result: UpstreamResult = result
        self.seconds = seconds
        self.bytes_received = bytes_received  # body bytes as received (before decoding)
        self.error = error  # why it failed, in one line, for the status page


class Sink(Protocol):
    def request(self, record: RequestRecord) -> None: ...

    def upstream(self, record: UpstreamRecord) -> None: ...


current: ContextVar[RequestRecord | None] = ContextVar("mypypi2_request", default=None)


def answered_as(outcome: Outcome) -> None:
    """Say how the request being answered was answered (the last word wins). Call it from
    the request's own task: a task it started (a coalesced fill) holds the context of the
    request that started it, not of every request waiting on it."""
    record = current.get()
    if record is not None:
        record.outcome = outcome
