"""This worker's traffic, tallied in memory and added to PostgreSQL for the status page.

A Sink (observe.py): every request and upstream request costs a few dict and attribute
increments, no I/O. A task adds the tallies to the shared tables every `FLUSH_SECONDS` in
one transaction (one statement per table), so the status page, whichever worker or
replica renders it, shows the sum of them all, at most a flush interval late.

A flush that fails because the database is away keeps its tallies for the next one; what
is kept is bounded (minutes within the retention, `MAX_PROJECTS` project tallies, the last
`FAILURES_KEPT` failures per repository). A flush PostgreSQL refuses is dropped: retrying
the same batch would fail forever.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Iterable

from mypypi2 import names, tasks
from mypypi2.clock import Clock
from mypypi2.db import Database
from mypypi2.errors import DatabaseUnavailable
from mypypi2.observe import RequestRecord, UpstreamRecord
from mypypi2.queries import traffic
from mypypi2.queries.traffic import COUNTERS, MinuteCounts, ProjectCounts, UpstreamFailure

log = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0
PRUNE_EVERY = 60  # flushes: every ten minutes
RETENTION_SECONDS = 2 * 86400.0  # the status page shows a day
FAILURES_KEPT = 10  # per repository, in memory and on the page
FAILURES_STORED = 50  # per repository, in the table
MAX_PROJECTS = 10_000  # project tallies between two flushes (or while the database is away)
MAX_ERROR_LENGTH = 500
# Upstream answers that say it works (a 404 is an answer too).
_HEALTHY = frozenset({"200", "304", "404"})
# Outcomes that served a project's content, counted per project.
_SERVED = frozenset({"hit", "miss", "stale", "revalidated"})


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


class Traffic:
    def __init__(
        self, database: Database, repositories: Iterable[str], *, clock: Clock = time.time
    ) -> None:
        self._database = database
        # Records of other names (a client's typo of a repository) are not tallied.
        self._repositories = frozenset(repositories)
        self._clock = clock
        self._minutes: dict[tuple[str, int], MinuteCounts] = {}
        self._projects: dict[tuple[str, str, int], ProjectCounts] = {}
        self._failures: dict[str, deque[UpstreamFailure]] = {}
        self._successes: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    # The Sink: on every request.

    def request(self, record: RequestRecord) -> None:
        repository = record.repository
        if repository not in self._repositories:
            return
        now = self._clock()
        counts = self._minute(repository, now)
        counts.requests += 1
        counts.bytes_served += record.bytes_sent
        outcome = record.outcome
        if outcome == "hit":
            counts.hits += 1
        elif outcome == "miss":
            counts.misses += 1
        elif outcome == "revalidated":
            counts.revalidated += 1
        elif outcome == "stale":
            counts.stale += 1
        elif outcome == "not-found":
            counts.not_found += 1
        elif outcome == "error":
            counts.errors += 1
        if record.project is not None and outcome in _SERVED:
            self._project(repository, record.project, now, record.bytes_sent)

    def upstream(self, record: UpstreamRecord) -> None:
        repository = record.repository
        if repository not in self._repositories:
            return
        now = self._clock()
        counts = self._minute(repository, now)
        counts.upstream_requests += 1
        counts.upstream_seconds += record.seconds
        counts.bytes_fetched += record.bytes_received
        if record.result in _HEALTHY:
            self._successes[repository] = now
            return
        counts.upstream_failures += 1
        # NUL is the one character PostgreSQL text refuses.
        error = None if record.error is None else record.error[:MAX_ERROR_LENGTH].replace("\0", "")
        failure = UpstreamFailure(repository, _utc(now), record.kind, record.result, error)
        self._failures_of(repository).append(failure)

    def _minute(self, repository: str, now: float) -> MinuteCounts:
        key = (repository, int(now // 60))
        counts = self._minutes.get(key)
        if counts is None:
            counts = self._minutes[key] = MinuteCounts(repository, _utc(key[1] * 60))
        return counts

    def _project(self, repository: str, requested: str, now: float, sent: int) -> None:
        project = names.canonical_name(requested)
        if project is None:
            return
        key = (repository, project, int(now // 3600))
        counts = self._projects.get(key)
        if counts is None:
            if len(self._projects) >= MAX_PROJECTS:
                return
            counts = self._projects[key] = ProjectCounts(repository, project, _utc(key[2] * 3600))
        counts.requests += 1
        counts.bytes_served += sent

    def _failures_of(self, repository: str) -> deque[UpstreamFailure]:
        failures = self._failures.get(repository)
        if failures is None:
            failures = self._failures[repository] = deque(maxlen=FAILURES_KEPT)
        return failures

    # Flushing, in the background.

    async def flush(self) -> None:
        """Add the tallies to PostgreSQL in one transaction; kept for the next flush when the
        database is away, dropped when it refuses them."""
        minutes, self._minutes = self._minutes, {}
        projects, self._projects = self._projects, {}
        failures, self._failures = self._failures, {}
        successes, self._successes = self._successes, {}
        if not (minutes or projects or failures or successes):
            return
        try:
            async with self._database.transaction() as connection:
                if minutes:
                    await traffic.add_minutes(connection, [minutes[k] for k in sorted(minutes)])
                if projects:
                    await traffic.add_projects(connection, [projects[k] for k in sorted(projects)])
                if failures:
                    flat = [failure for kept in failures.values() for failure in kept]
                    await traffic.insert_failures(connection, flat)
                if successes:
                    times = {repository: _utc(at) for repository, at in successes.items()}
                    await traffic.record_successes(connection, times)
        except DatabaseUnavailable:
            self._keep(minutes, projects, failures, successes)
            raise

    def _keep(
        self,
        minutes: dict[tuple[str, int], MinuteCounts],
        projects: dict[tuple[str, str, int], ProjectCounts],
        failures: dict[str, deque[UpstreamFailure]],
        successes: dict[str, float],
    ) -> None:
        """Merge a batch that could not be written into what was tallied since."""
        oldest = int((self._clock() - RETENTION_SECONDS) // 60)
        for key, kept in minutes.items():
            if key[1] < oldest:
                continue
            counts = self._minutes.setdefault(key, kept)
            if counts is not kept:
                for name in COUNTERS:
                    setattr(counts, name, getattr(counts, name) + getattr(kept, name))
        for project_key, kept_project in projects.items():
            counts_project = self._projects.get(project_key)
            if counts_project is None:
                if len(self._projects) < MAX_PROJECTS:
                    self._projects[project_key] = kept_project
            else:
                counts_project.requests += kept_project.requests
                counts_project.bytes_served += kept_project.bytes_served
        for repository, kept_failures in failures.items():
            newer = self._failures.get(repository, ())
            merged = deque(kept_failures, maxlen=FAILURES_KEPT)
            merged.extend(newer)
            self._failures[repository] = merged
        for repository, at in successes.items():
            self._successes[repository] = max(at, self._successes.get(repository, at))

    async def prune(self) -> None:
        before = _utc(self._clock() - RETENTION_SECONDS)
        async with self._database.transaction() as connection:
            await traffic.prune(connection, before, FAILURES_STORED)

    def start(self, every: float = FLUSH_SECONDS) -> None:
        self._task = asyncio.create_task(self._run(every))

    async def close(self) -> None:
        """Stop flushing, after one last flush of what is pending."""
        await tasks.stop(self._task)
        try:
            await self.flush()
        except Exception as exc:  # shutting down: the status page misses a few seconds
            log.warning("traffic of the last seconds not recorded at shutdown: %s", exc)

    async def _run(self, every: float) -> None:
        flushes = 0
        while True:
            await asyncio.sleep(every)
            try:
                await self.flush()
                if flushes % PRUNE_EVERY == 0:
                    await self.prune()
            except Exception as exc:  # away (kept for next time) or refused (dropped)
                if not self._failing:
                    log.warning("recording traffic for the status page: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.warning("recording traffic for the status page again")
                self._failing = False
            flushes += 1
