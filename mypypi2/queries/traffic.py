"""Traffic tallies for the status page: what every worker adds, and what the page reads."""

from __future__ import annotations

import datetime as dt

import msgspec

from mypypi2.queries import Executor

_JSON = msgspec.json.Encoder()


class MinuteCounts(msgspec.Struct):
    """One repository's traffic in one minute: a worker's tally, or the sum of all of them."""

    repository: str
    minute: dt.datetime
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


COUNTERS = tuple(f for f in MinuteCounts.__struct_fields__ if f not in ("repository", "minute"))


class ProjectCounts(msgspec.Struct):
    repository: str
    project: str
    hour: dt.datetime
    requests: int = 0
    bytes_served: int = 0


class ProjectUse(msgspec.Struct, frozen=True):
    repository: str
    project: str
    requests: int
    bytes_served: int


class UpstreamFailure(msgspec.Struct, frozen=True):
    repository: str
    at: dt.datetime
    kind: str
    result: str
    error: str | None


# $1: a worker's tallies as one JSON document (msgspec's encoding of MinuteCounts, sorted by
# key, so concurrent flushes lock shared rows in one order and never deadlock). Counters add
# to what the other workers flushed for the same minute.
ADD_MINUTES = """
INSERT INTO traffic_minutes AS t  -- the record's columns are the table's, in its order
SELECT *
FROM json_to_recordset($1::json) AS (
    repository text, minute timestamptz, requests bigint, hits bigint, revalidated bigint,
    misses bigint, stale bigint, not_found bigint, errors bigint, bytes_served bigint,
    bytes_fetched bigint, upstream_requests bigint, upstream_failures bigint,
    upstream_seconds double precision
)
ON CONFLICT (repository, minute) DO UPDATE
SET requests = t.requests + EXCLUDED.requests,
    hits = t.hits + EXCLUDED.hits,
    revalidated = t.revalidated + EXCLUDED.revalidated,
    misses = t.misses + EXCLUDED.misses,
    stale = t.stale + EXCLUDED.stale,
    not_found = t.not_found + EXCLUDED.not_found,
    errors = t.errors + EXCLUDED.errors,
    bytes_served = t.bytes_served + EXCLUDED.bytes_served,
    bytes_fetched = t.bytes_fetched + EXCLUDED.bytes_fetched,
    upstream_requests = t.upstream_requests + EXCLUDED.upstream_requests,
    upstream_failures = t.upstream_failures + EXCLUDED.upstream_failures,
    upstream_seconds = t.upstream_seconds + EXCLUDED.upstream_seconds
"""

# Like ADD_MINUTES, per project and hour.
ADD_PROJECTS = """
INSERT INTO traffic_projects AS t  -- the record's columns are the table's, in its order
SELECT *
FROM json_to_recordset($1::json) AS (
    repository text, project text, hour timestamptz, requests bigint, bytes_served bigint
)
ON CONFLICT (repository, hour, project) DO UPDATE
SET requests = t.requests + EXCLUDED.requests,
    bytes_served = t.bytes_served + EXCLUDED.bytes_served
"""

INSERT_FAILURES = """
INSERT INTO upstream_errors (repository, at, kind, result, error)
SELECT *
FROM json_to_recordset($1::json) AS (
    repository text, at timestamptz, kind text, result text, error text
)
"""

# $1: {"repository": "time", ...}. A time older than the one recorded (another worker's,
# flushed first) changes nothing.
RECORD_SUCCESSES = """
INSERT INTO upstream_successes AS s (repository, at)
SELECT key, value::timestamptz
FROM json_each_text($1::json)
ORDER BY key
ON CONFLICT (repository) DO UPDATE SET at = EXCLUDED.at
WHERE s.at < EXCLUDED.at
"""

SELECT_MINUTES_SINCE = """
SELECT *
FROM traffic_minutes
WHERE minute >= $1
ORDER BY repository, minute
"""

# Each repository's $2 most requested projects since $1 (ties: more bytes, then by name).
SELECT_TOP_PROJECTS = """
SELECT repository, project, requests, bytes_served
FROM (
    SELECT repository, project, sum(requests)::bigint AS requests,
           sum(bytes_served)::bigint AS bytes_served,
           row_number() OVER (
               PARTITION BY repository
               ORDER BY sum(requests) DESC, sum(bytes_served) DESC, project
           ) AS rank
    FROM traffic_projects
    WHERE hour >= $1
    GROUP BY repository, project
) AS ranked
WHERE rank <= $2
ORDER BY repository, rank
"""

# Each repository's $1 latest failures, newest first.
SELECT_LAST_FAILURES = """
SELECT repository, at, kind, result, error
FROM (
    SELECT *, row_number() OVER (PARTITION BY repository ORDER BY at DESC, id DESC) AS rank
    FROM upstream_errors
) AS ranked
WHERE rank <= $1
ORDER BY repository, at DESC, id DESC
"""

SELECT_SUCCESSES = "SELECT repository, at FROM upstream_successes"

DELETE_MINUTES_BEFORE = "DELETE FROM traffic_minutes WHERE minute < $1"
DELETE_PROJECTS_BEFORE = "DELETE FROM traffic_projects WHERE hour < $1"
# Failures before $1, and all but each repository's $2 latest: an upstream that fails every
# request for a day must not grow the table without bound.
DELETE_FAILURES = """
DELETE FROM upstream_errors
WHERE at < $1
   OR id IN (
       SELECT id
       FROM (
           SELECT id, row_number() OVER (PARTITION BY repository ORDER BY at DESC, id DESC)
                  AS rank
           FROM upstream_errors
       ) AS ranked
       WHERE rank > $2
   )
"""


async def add_minutes(db: Executor, counts: list[MinuteCounts]) -> None:
    await db.execute(ADD_MINUTES, _JSON.encode(counts).decode())


async def add_projects(db: Executor, counts: list[ProjectCounts]) -> None:
    await db.execute(ADD_PROJECTS, _JSON.encode(counts).decode())


async def insert_failures(db: Executor, failures: list[UpstreamFailure]) -> None:
    await db.execute(INSERT_FAILURES, _JSON.encode(failures).decode())


async def record_successes(db: Executor, last_success: dict[str, dt.datetime]) -> None:
    await db.execute(RECORD_SUCCESSES, _JSON.encode(last_success).decode())


async def minutes_since(db: Executor, since: dt.datetime) -> list[MinuteCounts]:
    rows = await db.fetch(SELECT_MINUTES_SINCE, since)
    return [MinuteCounts(**dict(row)) for row in rows]


async def top_projects(db: Executor, since: dt.datetime, limit: int) -> list[ProjectUse]:
    rows = await db.fetch(SELECT_TOP_PROJECTS, since, limit)
    return [ProjectUse(**dict(row)) for row in rows]


async def last_failures(db: Executor, per_repository: int) -> list[UpstreamFailure]:
    rows = await db.fetch(SELECT_LAST_FAILURES, per_repository)
    return [UpstreamFailure(**dict(row)) for row in rows]


async def last_successes(db: Executor) -> dict[str, dt.datetime]:
    rows = await db.fetch(SELECT_SUCCESSES)
    return {row["repository"]: row["at"] for row in rows}


async def prune(db: Executor, before: dt.datetime, failures_kept: int) -> None:
    """Forget traffic before `before`, and failures but each repository's latest few."""
    await db.execute(DELETE_MINUTES_BEFORE, before)
    await db.execute(DELETE_PROJECTS_BEFORE, before)
    await db.execute(DELETE_FAILURES, before, failures_kept)
