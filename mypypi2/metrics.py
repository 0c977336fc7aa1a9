"""Prometheus metrics: this worker's tallies, exposed summed over the replica's workers.

The warm path must not pay for them, so `Metrics` (a Sink) only adds to plain dicts of this
worker as records arrive. About once a second (and before this worker answers a scrape,
and at shutdown) `flush` moves what was added into prometheus_client's values. Under
`mypypi2 serve` those are its multiprocess files, in a directory serve makes fresh for each
start (PROMETHEUS_MULTIPROC_DIR, set before any worker starts): whichever worker answers
`/-/metrics` reports the sum over every worker of the replica, those that died included
for counters, only the living for gauges. An app built in-process (tests, other servers)
without that directory has a registry of its own.

What PostgreSQL knows (stored files and bytes) is read by a worker being scraped, at most
every `STORE_TOTALS_SECONDS`, never on the way of a request.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from mypypi2 import tasks
from mypypi2.db import Database
from mypypi2.errors import DatabaseUnavailable
from mypypi2.observe import Observer, RequestRecord, UpstreamRecord
from mypypi2.queries.store_totals import store_totals

FLUSH_SECONDS = 1.0
STORE_TOTALS_SECONDS = 30.0
REQUEST_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
)  # fmt: skip
UPSTREAM_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
)  # fmt: skip


class _Buckets:
    """Observations of one histogram series, tallied: a count per bucket (the last one is
    +Inf) and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def add(self, other: _Buckets) -> None:
        self.counts = [
            mine + theirs for mine, theirs in zip(self.counts, other.counts, strict=True)
        ]
        self.total += other.total


class _Requests(_Buckets):
    """Requests alike in every label: how many, their durations and their bytes."""

    __slots__ = ("bytes", "count")

    def __init__(self) -> None:
        super().__init__(REQUEST_BUCKETS)
        self.count = 0
        self.bytes = 0


# What makes requests alike: repository ("" outside one), kind, outcome, status,
# installer, coalesced, stale reason. One dict lookup per request tallies them all.
_RequestKey = tuple[str, str, str, int, str, bool, str | None]


class _Upstream(_Buckets):
    __slots__ = ("bytes", "count")

    def __init__(self) -> None:
        super().__init__(UPSTREAM_BUCKETS)
        self.count = 0
        self.bytes = 0


_UpstreamKey = tuple[str, str, str]  # repository, kind, result


class _Series:
    """The metrics (names in the README's "Operating it")."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "mypypi2_requests_total",
            "Client requests, by how they were answered.",
            ["repository", "kind", "outcome", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "mypypi2_request_duration_seconds",
            "Time to answer a client request, to its last byte.",
            ["kind"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.served_bytes = Counter(
            "mypypi2_served_bytes_total",
            "Body bytes sent to clients.",
            ["repository", "kind"],
            registry=registry,
        )
        self.upstream_requests = Counter(
            "mypypi2_upstream_requests_total",
            "Requests to the upstreams, by result.",
            ["repository", "kind", "result"],
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "mypypi2_upstream_duration_seconds",
            "Time an upstream request took, its body included.",
            ["repository", "kind"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.upstream_bytes = Counter(
            "mypypi2_upstream_bytes_total",
            "Body bytes received from the upstreams (as sent, before decoding).",
            ["repository", "kind"],
            registry=registry,
        )
        self.coalesced = Counter(
            "mypypi2_coalesced_waiters_total",
            "Client requests that joined a fetch already in flight (here or in another worker).",
            ["repository", "kind"],
            registry=registry,
        )
        self.downloads_in_flight = Gauge(
            "mypypi2_downloads_in_flight",
            "Files being downloaded from the upstream now.",
            ["repository"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.verification_failures = Counter(
            "mypypi2_verification_failures_total",
            "Downloads refused because their bytes were not those the page announced.",
            ["repository"],
            registry=registry,
        )
        self.stale_served = Counter(
            "mypypi2_stale_served_total",
            "Pages served stale because the upstream or the database failed.",
            ["repository", "reason"],
            registry=registry,
        )
        self.stored_files = Gauge(
            "mypypi2_stored_files",
            "Files in the store (from PostgreSQL, at most 30 s old).",
            ["repository"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.stored_bytes = Gauge(
            "mypypi2_stored_bytes",
            "Bytes of the files in the store (from PostgreSQL, at most 30 s old).",
            ["repository"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.database_connections = Gauge(
            "mypypi2_database_connections",
            "Connections of the database pools, in use or idle.",
            ["state"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.clients = Counter(
            "mypypi2_clients_total",
            "Client requests by the installer their User-Agent names.",
            ["installer"],
            registry=registry,
        )


class Metrics:
    """A Sink tallying this worker's requests; `flush` publishes them."""

    def __init__(
        self,
        observer: Observer,
        database: Database,
        repositories: Iterable[str],
        multiproc_dir: str | None,
    ) -> None:
        self._observer = observer
        self._database = database
        self._repositories = tuple(repositories)
        self._dir = multiproc_dir
        if multiproc_dir is not None and not values.ValueClass._multiprocess:
            # Imported before serve set the directory: every worker would count alone.
            raise RuntimeError("prometheus_client is not in multiprocess mode")
        # In-process: this app's own registry, so two apps in one process never mix.
        self._registry = None if multiproc_dir is not None else CollectorRegistry()
        self._series = _Series(self._registry)
        self._requests: dict[_RequestKey, _Requests] = {}
        self._upstream: dict[_UpstreamKey, _Upstream] = {}
        self._verification_failures: dict[str, int] = {}  # as last flushed
        self._totals_read_at = -float("inf")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_often())

    async def close(self) -> None:
        await tasks.stop(self._task)
        self.flush()

    def request(self, record: RequestRecord) -> None:
        key = (
            record.repository or "",
            record.kind,
            record.outcome or "",
            record.status,
            record.installer,
            record.coalesced,
            record.stale_reason,
        )
        tally = self._requests.get(key)
        if tally is None:
            tally = self._requests[key] = _Requests()
        tally.count += 1
        tally.bytes += record.bytes_sent
        tally.counts[bisect_left(REQUEST_BUCKETS, record.seconds)] += 1
        tally.total += record.seconds

    def upstream(self, record: UpstreamRecord) -> None:
        key = (record.repository, record.kind, record.result)
        tally = self._upstream.get(key)
        if tally is None:
            tally = self._upstream[key] = _Upstream()
        tally.count += 1
        tally.bytes += record.bytes_received
        tally.counts[bisect_left(UPSTREAM_BUCKETS, record.seconds)] += 1
        tally.total += record.seconds

    def flush(self) -> None:
        """Publish what was tallied since the last flush, and this worker's gauges."""
        requests, self._requests = self._requests, {}
        upstream, self._upstream = self._upstream, {}
        series = self._series
        durations: dict[str, _Buckets] = {}
        for key, tally in requests.items():
            repository, kind, outcome, status, installer, coalesced, stale_reason = key
            series.requests.labels(repository, kind, outcome, str(status)).inc(tally.count)
            series.clients.labels(installer).inc(tally.count)
            if tally.bytes:
                series.served_bytes.labels(repository, kind).inc(tally.bytes)
            if coalesced:
                series.coalesced.labels(repository, kind).inc(tally.count)
            if stale_reason is not None and outcome == "stale":
                series.stale_served.labels(repository, stale_reason).inc(tally.count)
            durations.setdefault(kind, _Buckets(REQUEST_BUCKETS)).add(tally)
        for kind, buckets in durations.items():
            _add(series.request_duration.labels(kind), buckets)
        upstream_durations: dict[tuple[str, str], _Buckets] = {}
        for (repository, kind, result), exchanges in upstream.items():
            series.upstream_requests.labels(repository, kind, result).inc(exchanges.count)
            if exchanges.bytes:
                series.upstream_bytes.labels(repository, kind).inc(exchanges.bytes)
            upstream_durations.setdefault((repository, kind), _Buckets(UPSTREAM_BUCKETS)).add(
                exchanges
            )
        for labels, buckets in upstream_durations.items():
            _add(series.upstream_duration.labels(*labels), buckets)
        for repository, failures in self._observer.verification_failures.items():
            new = failures - self._verification_failures.get(repository, 0)
            if new:
                series.verification_failures.labels(repository).inc(new)
                self._verification_failures[repository] = failures
        in_flight = self._observer.downloads_in_flight
        for repository in self._repositories:
            series.downloads_in_flight.labels(repository).set(in_flight.get(repository, 0))
        pool = self._database.pool
        idle = pool.get_idle_size()
        series.database_connections.labels("in_use").set(pool.get_size() - idle)
        series.database_connections.labels("idle").set(idle)

    async def exposition(self) -> bytes:
        """The replica's metrics in the Prometheus text format, this worker's flushed."""
        await self._read_store_totals()
        self.flush()
        if self._registry is not None:
            return generate_latest(self._registry)
        assert self._dir is not None
        _forget_dead_workers(self._dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    async def _read_store_totals(self) -> None:
        now = time.monotonic()
        if now - self._totals_read_at < STORE_TOTALS_SECONDS:
            return
        try:
            totals = {total.repository: total for total in await store_totals(self._database)}
        except DatabaseUnavailable:
            return  # the last values stand; the next scrape tries again
        self._totals_read_at = now
        for repository in self._repositories:
            total = totals.get(repository)
            self._series.stored_files.labels(repository).set(0 if total is None else total.files)
            self._series.stored_bytes.labels(repository).set(0 if total is None else total.bytes)

    async def _flush_often(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()


def _add(histogram: Histogram, buckets: _Buckets) -> None:
    # prometheus_client observes one value at a time, which a second of warm requests would
    # pay for at every flush: add each bucket's count (its buckets are not cumulative) and
    # the sum at once, through the values `observe` itself updates.
    for value, count in zip(histogram._buckets, buckets.counts, strict=True):
        if count:
            value.inc(count)
    histogram._sum.inc(buckets.total)


def _forget_dead_workers(directory: str) -> None:
    """Drop the gauges of workers that died (granian and hypercorn replace them without
    telling us): a dead worker has no downloads in flight and no pool."""
    pids = {
        int(path.stem.rsplit("_", 1)[1])
        for path in Path(directory).glob("gauge_live*_*.db")
        if path.stem.rsplit("_", 1)[1].isdigit()
    }
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, another user's (a reused pid)
