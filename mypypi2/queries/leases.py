"""Page refresh leases: how workers and replicas agree on one upstream request per page.

A lease row per page (`page_refreshes`), claimed with one statement and renewed while its
holder works (page_refresh.py), so that nobody holds a database connection across an
upstream request. A failed refresh leaves its failure in the row for a short while, for
every process to answer with instead of asking the upstream again.

Files use the same idea with their own claim row (`file_downloads`, queries/files.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

import msgspec

from mypypi2.errors import UpstreamError, UpstreamNotFound, UpstreamTimeout
from mypypi2.queries import Executor

# Lease times are the database's clock (hosts need not agree on the time); failure times
# are the service's, like every freshness time.
SELECT_REFRESH = """
SELECT holder IS NOT NULL AND lease_until > clock_timestamp() AS leased,
       failed_until, failure_kind, failure_url, failure_reason
FROM page_refreshes
WHERE repository = $1 AND name = $2
"""

# Taken when nobody holds a live lease and no recent failure stands. ON CONFLICT ... WHERE
# makes the check and the claim one atomic step: of N concurrent claimers, one gets a row.
CLAIM = """
INSERT INTO page_refreshes AS r (repository, name, holder, lease_until)
VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4))
ON CONFLICT (repository, name) DO UPDATE
SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until, failed_until = NULL,
    failure_kind = NULL, failure_url = NULL, failure_reason = NULL
WHERE (r.holder IS NULL OR r.lease_until <= clock_timestamp())
  AND (r.failed_until IS NULL OR r.failed_until <= $5)
RETURNING holder
"""

RENEW = """
UPDATE page_refreshes SET lease_until = clock_timestamp() + make_interval(secs => $4)
WHERE repository = $1 AND name = $2 AND holder = $3
"""

# The page is saved: nothing is left to remember.
END_LEASE = "DELETE FROM page_refreshes WHERE repository = $1 AND name = $2 AND holder = $3"

RECORD_FAILURE = """
UPDATE page_refreshes
SET holder = NULL, lease_until = NULL, failed_until = $4, failure_kind = $5,
    failure_url = $6, failure_reason = $7
WHERE repository = $1 AND name = $2 AND holder = $3
"""

# Bounded, and skipping rows others are writing: run on the way, never a sweep.
DELETE_OLD = """
DELETE FROM page_refreshes AS r
USING (
    SELECT repository, name FROM page_refreshes
    WHERE (holder IS NULL AND failed_until < $1)
       OR lease_until < clock_timestamp() - interval '1 hour'
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) AS old
WHERE r.repository = old.repository AND r.name = old.name
"""

# A purge asks for a fresh attempt now, whatever failed before.
DELETE_FAILURES = """
DELETE FROM page_refreshes
WHERE repository = $1 AND holder IS NULL AND ($2::text[] IS NULL OR name = ANY($2::text[]))
"""


FailureKind = Literal["error", "timeout", "not-found"]


class Failure(msgspec.Struct, frozen=True):
    """What the last refresh of a page ran into, standing until `until`."""

    until: dt.datetime
    kind: FailureKind
    url: str
    reason: str

    @classmethod
    def of(cls, exc: UpstreamError, until: dt.datetime) -> Failure:
        if isinstance(exc, UpstreamNotFound):
            kind: FailureKind = "not-found"
        else:
            kind = "timeout" if isinstance(exc, UpstreamTimeout) else "error"
        return cls(until, kind, exc.url, exc.reason)

    def error(self) -> UpstreamError:
        """The error this failure stands for, as the refresh that met it raised it."""
        if self.kind == "not-found":
            return UpstreamNotFound(self.url)
        if self.kind == "timeout":
            return UpstreamTimeout(self.url, self.reason)
        return UpstreamError(self.url, self.reason)


class Refresh(msgspec.Struct, frozen=True):
    leased: bool  # somebody is asking the upstream right now
    failure: Failure | None


async def get_refresh(db: Executor, repository: str, name: str) -> Refresh | None:
    row = await db.fetchrow(SELECT_REFRESH, repository, name)
    if row is None:
        return None
    failure = None
    if row["failed_until"] is not None:
        failure = Failure(
            row["failed_until"], row["failure_kind"], row["failure_url"], row["failure_reason"]
        )
    return Refresh(leased=row["leased"], failure=failure)


async def claim(
    db: Executor,
    repository: str,
    name: str,
    holder: uuid.UUID,
    seconds: float,
    now: dt.datetime,
) -> bool:
    """Take the page's lease for `seconds`, unless it is held or a failure after `now`
    stands; whether we hold it now."""
    return await db.fetchval(CLAIM, repository, name, holder, seconds, now) is not None


async def renew(
    db: Executor, repository: str, name: str, holder: uuid.UUID, seconds: float
) -> None:
    await db.execute(RENEW, repository, name, holder, seconds)


async def end_lease(db: Executor, repository: str, name: str, holder: uuid.UUID) -> None:
    await db.execute(END_LEASE, repository, name, holder)


async def record_failure(
    db: Executor, repository: str, name: str, holder: uuid.UUID, failure: Failure
) -> None:
    """End the lease, leaving `failure` for everyone until `failure.until`."""
    await db.execute(
        RECORD_FAILURE,
        repository,
        name,
        holder,
        failure.until,
        failure.kind,
        failure.url,
        failure.reason,
    )


async def delete_old(db: Executor, before: dt.datetime, limit: int) -> None:
    """Forget up to `limit` failures that ended before `before`, and abandoned leases."""
    await db.execute(DELETE_OLD, before, limit)


async def delete_failures(db: Executor, repository: str, names: list[str] | None) -> None:
    """Forget the failures of some pages (all of the repository's when `names` is None)."""
    await db.execute(DELETE_FAILURES, repository, names)
