"""What happened while answering, for the metrics, the access log and the status page.

Each client request gets one `RequestRecord`, made by the outermost middleware
(routes/observed.py) and held in a context variable while the request runs: the use cases
say how they answered (`answered_as`, `joined`) without knowing who listens. Upstream
requests are reported as one `UpstreamRecord` each, by the upstream client. Sinks (one per
consumer) receive the finished records through the worker's `Observer`; they run on every
request, so they must only tally in memory and do their I/O elsewhere.

A coalesced fill (upstream/coalesce.py) runs in a task of its own, started in the context
of the request that started it: what it says with `answered_as` goes to the fill, and every
request that awaited it, the first one included, takes the fill's answer once the await
returns. Background work no request waits for sets `current` to None first.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Literal, Protocol

# What a request was for: a project list, a project page, a distribution file, its
# PEP 658 metadata, or anything else (probes, metrics, errors outside a repository).
RequestKind = Literal["list", "page", "file", "metadata", "other"]
# How it was answered: from what we held ("hit"), after an upstream 200 ("miss"), after an
# upstream 304 ("revalidated"), from what we held because the upstream or the database
# failed ("stale"), a 404 ("not-found"), or a failure ("error").
Outcome = Literal["hit", "miss", "stale", "revalidated", "not-found", "error"]
# Why a stale answer was given.
StaleReason = Literal["upstream", "database"]
# What one upstream request came to.
UpstreamResult = Literal[
    "200", "304", "404", "timeout", "connect-error", "5xx", "malformed", "other"
]
# The installer a client identified itself as (User-Agent).
Installer = Literal["pip", "uv", "poetry", "other"]


class RequestRecord:
    __slots__ = (
        "bytes_sent",
        "client",
        "coalesced",
        "installer",
        "kind",
        "method",
        "outcome",
        "path",
        "project",
        "query",
        "repository",
        "request_id",
        "seconds",
        "stale_reason",
        "started",
        "status",
    )

    def __init__(
        self,
        request_id: str,
        method: str,
        path: str,
        query: str,
        client: str | None,
        repository: str | None,
        project: str | None,
        kind: RequestKind,
        installer: Installer,
        started: float,
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path  # as the server decoded it
        self.query = query  # the raw query string, "" when none
        self.client = client  # the peer's address (a proxy's, behind one)
        self.repository = repository  # None outside a configured repository's URLs
        self.project = project  # the name as requested (None for lists and others)
        self.kind: RequestKind = kind
        self.installer: Installer = installer
        self.started = started  # time.perf_counter() at arrival
        self.outcome: Outcome | None = None  # set by the use cases, else from the status
        self.stale_reason: StaleReason | None = None  # with outcome "stale"
        self.coalesced = False  # it joined a fill (page, file, metadata) already in flight
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


class Observer:
    """One worker's sinks, and the facts of that worker that belong to no one request."""

    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        # Files being downloaded from each repository's upstream right now.
        self.downloads_in_flight: dict[str, int] = {}
        # Downloads (files, metadata) refused because their bytes were not the page's.
        self.verification_failures: dict[str, int] = {}

    def add(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def request(self, record: RequestRecord) -> None:
        for sink in self._sinks:
            sink.request(record)

    def upstream(self, record: UpstreamRecord) -> None:
        for sink in self._sinks:
            sink.upstream(record)

    def download_started(self, repository: str) -> None:
        self.downloads_in_flight[repository] = self.downloads_in_flight.get(repository, 0) + 1

    def download_ended(self, repository: str) -> None:
        self.downloads_in_flight[repository] -= 1

    def verification_failed(self, repository: str) -> None:
        failures = self.verification_failures
        failures[repository] = failures.get(repository, 0) + 1


class Fill:
    """How a coalesced fill answered, for every request that awaited it."""

    __slots__ = ("coalesced", "outcome", "stale_reason")

    def __init__(self) -> None:
        self.outcome: Outcome | None = None
        self.stale_reason: StaleReason | None = None
        self.coalesced = False  # the fill itself waited for another process's


current: ContextVar[RequestRecord | None] = ContextVar("mypypi2_request", default=None)
# The fill the running task is (set in the fill's own task, so never seen by a request).
filling: ContextVar[Fill | None] = ContextVar("mypypi2_fill", default=None)


def answered_as(outcome: Outcome, stale_reason: StaleReason | None = None) -> None:
    """Say how the request (or the fill) being answered was answered; the last word wins.
    Call it from the request's own task or the fill's."""
    target: RequestRecord | Fill | None = filling.get() or current.get()
    if target is not None:
        target.outcome = outcome
        target.stale_reason = stale_reason


def joined() -> None:
    """The request (or fill) being answered waits for a fill already in flight."""
    target: RequestRecord | Fill | None = filling.get() or current.get()
    if target is not None:
        target.coalesced = True


def answered_by(fill: Fill) -> None:
    """The request (or an enclosing fill) awaited `fill`: it answered as the fill did."""
    target: RequestRecord | Fill | None = filling.get() or current.get()
    if target is None:
        return
    if fill.outcome is not None:
        target.outcome = fill.outcome
        target.stale_reason = fill.stale_reason
    if fill.coalesced:
        target.coalesced = True
