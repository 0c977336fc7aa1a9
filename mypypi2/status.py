"""The status report (/-/status): per repository its traffic over the last hour and day,
its upstream's health, its storage and its top projects, from PostgreSQL (every worker's and
replica's tallies, see traffic.py), so any worker gives the same answer."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from mypypi2.clock import Clock
from mypypi2.config import Config
from mypypi2.db import Database
from mypypi2.queries import storage_usage, traffic
from mypypi2.queries.traffic import COUNTERS, MinuteCounts, ProjectUse, UpstreamFailure
from mypypi2.traffic import FAILURES_KEPT

TOP_PROJECTS = 10
HOUR_BUCKETS = 60  # of a minute
DAY_BUCKETS = 24  # of an hour


class Counts(msgspec.Struct, kw_only=True):
    """Traffic in a span of time: the requests answered, how, and the bytes moved."""

    start: dt.datetime
    requests: int = 0
    hits: int = 0
    revalidated: int = 0
    misses: int = 0
    stale: int = 0
    not_found: int = 0
    errors: int = 0
    bytes_served: int = 0
    bytes_fetched: int = 0
    upstream_requests: int = 0
    upstream_failures: int = 0
    upstream_seconds: float = 0.0

    @property
    def from_cache(self) -> int:
        return self.hits + self.revalidated + self.stale

    def add(self, other: MinuteCounts | Counts) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Window(msgspec.Struct, kw_only=True):
    """The last hour (a bucket a minute) or day (a bucket an hour), the current one last."""

    start: dt.datetime
    bucket_seconds: int
    totals: Counts
    # Of the requests answered with content, the share answered from what was held (hits,
    # revalidations and stale answers) rather than fetched; null before any such request.
    hit_ratio: float | None
    buckets: list[Counts]


class Upstream(msgspec.Struct, kw_only=True):
    url: str  # without credentials or query
    # "ok": its last request succeeded; "failing": its last request failed (of the failures
    # kept for two days); "unknown": never asked.
    state: Literal["ok", "failing", "unknown"]
    last_success: dt.datetime | None
    last_failure: dt.datetime | None
    failures: list[UpstreamFailure]  # the latest, newest first


class Storage(msgspec.Struct, kw_only=True):
    files: int
    bytes: int
    max_bytes: int | None  # the configured cap


class RepositoryStatus(msgspec.Struct, kw_only=True):
    name: str
    last_hour: Window
    last_day: Window
    upstream: Upstream
    storage: Storage
    top_projects: list[ProjectUse]  # of the last day, the most requested first


class Status(msgspec.Struct, kw_only=True):
    generated_at: dt.datetime
    repositories: list[RepositoryStatus]
    storage: Storage  # the whole store (a file held by two repositories counts twice)


class StatusReport:
    def __init__(self, database: Database, config: Config, *, clock: Clock = time.time) -> None:
        self._database = database
        self._config = config
        self._clock = clock

    async def gather(self) -> Status:
        now = self._clock()
        hour_start = (int(now // 60) - HOUR_BUCKETS + 1) * 60
        day_start = (int(now // 3600) - DAY_BUCKETS + 1) * 3600
        since = _utc(day_start)
        # One snapshot for all the reads: a flush landing between two of them must not make
        # the traffic and the top projects disagree.
        async with (
            self._database.connection() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            minutes = await traffic.minutes_since(connection, since)
            top = await traffic.top_projects(connection, since, TOP_PROJECTS)
            failures = await traffic.last_failures(connection, FAILURES_KEPT)
            successes = await traffic.last_successes(connection)
            stored = await storage_usage.stored_by_repository(connection)
        repositories = []
        for repository in self._config.repositories:
            name = repository.name
            own = [m for m in minutes if m.repository == name]
            held = stored.get(name, storage_usage.Stored(0, 0))
            repositories.append(
                RepositoryStatus(
                    name=name,
                    last_hour=_window(own, hour_start, 60, HOUR_BUCKETS),
                    last_day=_window(own, day_start, 3600, DAY_BUCKETS),
                    upstream=_upstream(
                        repository.upstream,
                        successes.get(name),
                        [f for f in failures if f.repository == name],
                    ),
                    storage=Storage(
                        files=held.files, bytes=held.bytes, max_bytes=repository.max_bytes
                    ),
                    top_projects=[p for p in top if p.repository == name],
                )
            )
        return Status(
            generated_at=_utc(now),
            repositories=repositories,
            storage=Storage(
                files=sum(r.storage.files for r in repositories),
                bytes=sum(r.storage.bytes for r in repositories),
                max_bytes=self._config.storage.max_bytes,
            ),
        )


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _window(minutes: Iterable[MinuteCounts], start: int, size: int, count: int) -> Window:
    buckets = [Counts(start=_utc(start + i * size)) for i in range(count)]
    totals = Counts(start=_utc(start))
    for counts in minutes:
        index = (int(counts.minute.timestamp()) - start) // size
        if 0 <= index < count:
            buckets[index].add(counts)
            totals.add(counts)
    answered = totals.from_cache + totals.misses
    return Window(
        start=_utc(start),
        bucket_seconds=size,
        totals=totals,
        hit_ratio=totals.from_cache / answered if answered else None,
        buckets=buckets,
    )


def _upstream(
    url: str, last_success: dt.datetime | None, failures: list[UpstreamFailure]
) -> Upstream:
    last_failure = failures[0].at if failures else None
    state: Literal["ok", "failing", "unknown"]
    if last_failure is not None and (last_success is None or last_failure > last_success):
        state = "failing"
    else:
        state = "ok" if last_success is not None else "unknown"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return Upstream(
        url=urlunsplit((parts.scheme, host, parts.path, "", "")),
        state=state,
        last_success=last_success,
        last_failure=last_failure,
        failures=failures,
    )
