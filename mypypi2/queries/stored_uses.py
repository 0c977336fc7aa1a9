"""Last uses of stored objects, what the eviction sweep reads of the store, and its lock."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from mypypi2.queries import Executor
from mypypi2.queries.files import FORGET_STORED

# One flush of a worker's batch. Keys arrive sorted, so concurrent flushes of overlapping
# batches lock their rows in the same order and never deadlock. A time older than the one
# recorded (another worker's, flushed later) changes nothing.
RECORD_USES = """
INSERT INTO stored_uses AS u (stored_key, used_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[])
ON CONFLICT (stored_key) DO UPDATE SET used_at = EXCLUDED.used_at
WHERE u.used_at < EXCLUDED.used_at
"""

# Every stored object with its last use: its newest recorded use, else when it was stored
# (a file just stored counts as used then). An object is busy while a download of one of
# its rows is under way.
SELECT_STORED_OBJECTS = """
SELECT f.stored_key AS key, p.repository, max(f.stored_size) AS size,
       GREATEST(max(f.stored_at), max(u.used_at)) AS last_used,
       bool_or(d.file_id IS NOT NULL) AS busy
FROM files f
JOIN projects p ON p.id = f.project_id
LEFT JOIN stored_uses u ON u.stored_key = f.stored_key
LEFT JOIN file_downloads d ON d.file_id = f.id AND d.state IN ('claimed', 'running')
WHERE f.stored_key IS NOT NULL
GROUP BY f.stored_key, p.repository
"""

# The rows let go of evicted objects ($1), checked again under the row locks: a use
# flushed since the plan was made (at or after the grace cutoff $2), or a download that
# started, keeps the object. Metadata bodies stay. Returns what was let go, for the
# notification and the deletion.
CLEAR_EVICTED = f"""
WITH doomed AS (
    SELECT f.id, f.stored_key, p.repository, p.name
    FROM files f
    JOIN projects p ON p.id = f.project_id
    WHERE f.stored_key = ANY($1::text[])
      AND (f.stored_at IS NULL OR f.stored_at < $2)
      AND NOT EXISTS (
          SELECT 1 FROM stored_uses u WHERE u.stored_key = f.stored_key AND u.used_at >= $2
      )
      AND NOT EXISTS (
          SELECT 1 FROM file_downloads d
          WHERE d.file_id = f.id AND d.state IN ('claimed', 'running')
      )
    FOR UPDATE OF f
)
UPDATE files
SET {FORGET_STORED}
FROM doomed
WHERE files.id = doomed.id
RETURNING doomed.id, doomed.stored_key, doomed.repository, doomed.name
"""

# While their bytes are being deleted, the evicted files look like downloads under way
# (the claim rows of queries/files.py, attempt $2, a spool path that never exists): a
# request meanwhile follows this "download" instead of starting one, and once it is done
# (RELEASE_EVICTED) it finds the file unstored and downloads it afresh. Without this, a
# download finishing meanwhile would store the same content-addressed key, and the deletion
# would then take its bytes. A sweeper that dies leaves claims that go stale like any.
CLAIM_EVICTED = """
INSERT INTO file_downloads AS d (file_id, attempt, spool_path, expected_size, state,
                                 started_at, heartbeat_at)
SELECT id, $2, $3, NULL, 'claimed', clock_timestamp(), clock_timestamp()
FROM unnest($1::bigint[]) AS id
ON CONFLICT (file_id) DO UPDATE
SET attempt = EXCLUDED.attempt, spool_path = EXCLUDED.spool_path, expected_size = NULL,
    state = 'claimed', started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at
WHERE d.state NOT IN ('claimed', 'running')
"""

RELEASE_EVICTED = "UPDATE file_downloads SET state = 'done' WHERE attempt = $1"

# Of the keys let go ($1), those no row holds any more (another row may share an object):
# only their bytes may go. Their use rows go with them.
FORGET_UNREFERENCED = """
WITH unreferenced AS (
    SELECT DISTINCT key FROM unnest($1::text[]) AS key
    WHERE NOT EXISTS (SELECT 1 FROM files WHERE stored_key = key)
), forgotten AS (
    DELETE FROM stored_uses WHERE stored_key IN (SELECT key FROM unreferenced)
)
SELECT key FROM unreferenced
"""

# Uses of objects nobody holds any more (purged, lost): kept out of the table's growth.
DELETE_ORPHAN_USES = """
DELETE FROM stored_uses u
WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.stored_key = u.stored_key)
"""

# One sweeper at a time across every worker and replica: a session-level advisory lock,
# tried (never waited for) on a connection opened for the one sweep and closed after it,
# so it is held only while sweeping and released by PostgreSQL if the sweeper dies.
SWEEP_LOCK = 0x6D79_7079_7069_3267  # "mypypi2g"; no other advisory lock in the schema
TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"


class StoredObject(msgspec.Struct, frozen=True):
    key: str
    repository: str
    size: int
    last_used: float  # epoch seconds; 0 for a row that never said when it was stored
    busy: bool  # being downloaded


class Cleared(msgspec.Struct, frozen=True):
    file_id: int
    key: str
    repository: str
    project: str


async def record_uses(db: Executor, uses: dict[str, float]) -> None:
    """Record last uses (epoch seconds by storage key); older ones than recorded are ignored."""
    keys = sorted(uses)
    times = [dt.datetime.fromtimestamp(uses[key], dt.UTC) for key in keys]
    await db.execute(RECORD_USES, keys, times)


async def stored_objects(db: Executor) -> list[StoredObject]:
    rows = await db.fetch(SELECT_STORED_OBJECTS)
    return [
        StoredObject(
            row["key"],
            row["repository"],
            row["size"] or 0,
            row["last_used"].timestamp() if row["last_used"] is not None else 0.0,
            row["busy"],
        )
        for row in rows
    ]


async def clear_evicted(db: Executor, keys: list[str], unused_since: float) -> list[Cleared]:
    """Let go of the objects `keys` unless used at or after `unused_since` (epoch seconds)."""
    cutoff = dt.datetime.fromtimestamp(unused_since, dt.UTC)
    rows = await db.fetch(CLEAR_EVICTED, keys, cutoff)
    return [Cleared(row["id"], row["stored_key"], row["repository"], row["name"]) for row in rows]


async def claim_evicted(
    db: Executor, file_ids: list[int], attempt: uuid.UUID, spool_path: str
) -> None:
    await db.execute(CLAIM_EVICTED, file_ids, attempt, spool_path)


async def release_evicted(db: Executor, attempt: uuid.UUID) -> None:
    await db.execute(RELEASE_EVICTED, attempt)


async def forget_unreferenced(db: Executor, keys: list[str]) -> list[str]:
    rows = await db.fetch(FORGET_UNREFERENCED, keys)
    return [row["key"] for row in rows]


async def delete_orphan_uses(db: Executor) -> None:
    await db.execute(DELETE_ORPHAN_USES)


async def try_sweep_lock(db: Executor) -> bool:
    locked: bool = await db.fetchval(TRY_LOCK, SWEEP_LOCK)
    return locked


async def release_sweep_lock(db: Executor) -> None:
    await db.execute(UNLOCK, SWEEP_LOCK)
