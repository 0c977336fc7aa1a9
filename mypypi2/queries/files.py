"""Distribution files: lookup by URL parts, storage state, .metadata bodies, downloads."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from mypypi2.queries import Executor


class FileRow(msgspec.Struct, frozen=True):
    id: int
    project_id: int
    filename: str
    upstream_url: str
    hashes: dict[str, str]
    size: int | None
    core_metadata: dict[str, str] | None
    stored_key: str | None
    stored_size: int | None
    stored_sha256: str | None
    stored_at: dt.datetime | None


class DownloadRow(msgspec.Struct, frozen=True):
    """One attempt at downloading a file, as its leader last recorded it."""

    attempt: uuid.UUID
    spool_path: str
    expected_size: int | None
    state: str  # claimed (upstream not answered yet), running, done, failed
    stale: bool  # the leader has not renewed its claim within the lease: it is gone
    relay_url: str | None  # where the leader's replica relays the bytes to other hosts
    verified: bool  # every byte is in the leader's spool, verified (the commit to come)


# A FileRow's columns (of `files f`), named after its fields: a column is added in one place.
# (Composed once, of constant names; values only ever travel as $n parameters.)
_FILE_COLUMNS = ", ".join(f"f.{name}" for name in FileRow.__struct_fields__)

SELECT_FILE = f"""
SELECT {_FILE_COLUMNS}
FROM files f
JOIN projects p ON p.id = f.project_id
WHERE p.repository = $1 AND p.name = $2 AND f.filename = $3
  AND (f.listed OR f.stored_key IS NOT NULL)
"""

SELECT_FILE_BY_ID = f"SELECT {_FILE_COLUMNS} FROM files f WHERE f.id = $1"

# What a row lets go of when its object does (lost, purged, evicted).
FORGET_STORED = "stored_key = NULL, stored_size = NULL, stored_sha256 = NULL, stored_at = NULL"

# Only while the row still describes the bytes that were verified ($6, $7): a page saved
# during the download with other hashes (the file was re-published) must not end up
# pointing at the old bytes. Storing a file tells the page its size (PEP 700) when the
# upstream did not: the revision bump makes every worker re-render it.
MARK_STORED = """
WITH stored AS (
    UPDATE files
    SET stored_key = $2, stored_size = $3, stored_sha256 = $4, stored_at = $5
    WHERE id = $1 AND hashes = $6::jsonb AND size IS NOT DISTINCT FROM $7
    RETURNING project_id, size
), bumped AS (
    UPDATE projects SET revision = revision + 1, changed_at = $5
    WHERE id = (SELECT project_id FROM stored WHERE size IS NULL)
)
SELECT count(*) FROM stored
"""

SELECT_KEY_IN_USE = "SELECT EXISTS (SELECT 1 FROM files WHERE stored_key = $1)"

# The store lost an object (a cleanup job, a bucket lifecycle rule): the row lets go of it,
# so the file is fetched again. Its page is refetched in full too (`purged`): the row may
# keep the hashes of bytes the upstream no longer has (see projects.UPSERT_FILES), which
# only a full page save replaces.
CLEAR_LOST = f"""
WITH lost AS (
    UPDATE files
    SET {FORGET_STORED}
    WHERE id = $1 AND stored_key = $2
    RETURNING project_id
)
UPDATE projects SET purged = true, etag = NULL, last_modified = NULL
WHERE id = (SELECT project_id FROM lost)
"""

# A purge: the rows forget their stored objects (returned, for the caller to delete).
CLEAR_STORED = f"""
WITH doomed AS (
    SELECT f.id, f.stored_key
    FROM files f
    JOIN projects p ON p.id = f.project_id
    WHERE p.repository = $1 AND ($2::text[] IS NULL OR p.name = ANY($2::text[]))
      AND (f.stored_key IS NOT NULL OR f.metadata_body IS NOT NULL)
    FOR UPDATE OF f
)
UPDATE files
SET {FORGET_STORED}, metadata_body = NULL
FROM doomed
WHERE files.id = doomed.id
RETURNING doomed.stored_key
"""

SELECT_METADATA = "SELECT metadata_body FROM files WHERE id = $1"

# Only while the page still advertises the hash the body was verified against ($3).
UPDATE_METADATA = """
UPDATE files SET metadata_body = $2 WHERE id = $1 AND core_metadata = $3::jsonb
"""

# Take the download of a file unless a live leader holds it: no row yet, the last attempt
# ended, or its leader stopped renewing the claim ($4 seconds). Returns a row only when the
# claim is ours, with the spool path of the attempt it replaces (garbage if that leader
# died on this host). $5: where this replica relays the download to others (or NULL).
CLAIM_DOWNLOAD = """
WITH previous AS (
    SELECT spool_path FROM file_downloads WHERE file_id = $1
), claimed AS (
    INSERT INTO file_downloads AS d (file_id, attempt, spool_path, expected_size, state,
                                     started_at, heartbeat_at, relay_url)
    VALUES ($1, $2, $3, NULL, 'claimed', clock_timestamp(), clock_timestamp(), $5)
    ON CONFLICT (file_id) DO UPDATE
    SET attempt = EXCLUDED.attempt, spool_path = EXCLUDED.spool_path, expected_size = NULL,
        state = 'claimed', started_at = EXCLUDED.started_at,
        heartbeat_at = EXCLUDED.heartbeat_at, relay_url = EXCLUDED.relay_url, verified = false
    WHERE d.state NOT IN ('claimed', 'running')
       OR d.heartbeat_at < clock_timestamp() - make_interval(secs => $4)
    RETURNING attempt
)
SELECT (SELECT spool_path FROM previous) AS previous_spool FROM claimed
"""

# The claim's owner says it is alive; no row updated means the claim was taken over.
RENEW_CLAIM = """
UPDATE file_downloads SET heartbeat_at = clock_timestamp()
WHERE file_id = $1 AND attempt = $2
"""

# The upstream answered: followers may start reading the spool.
UPDATE_DOWNLOAD_RUNNING = """
UPDATE file_downloads SET state = 'running', expected_size = $3, heartbeat_at = clock_timestamp()
WHERE file_id = $1 AND attempt = $2
"""

UPDATE_DOWNLOAD_STATE = "UPDATE file_downloads SET state = $3 WHERE file_id = $1 AND attempt = $2"

# Every byte is in the spool and verified: relays may end their streams.
UPDATE_DOWNLOAD_VERIFIED = """
UPDATE file_downloads SET verified = true WHERE file_id = $1 AND attempt = $2
"""

SELECT_DOWNLOAD = """
SELECT attempt, spool_path, expected_size, state,
       heartbeat_at < clock_timestamp() - make_interval(secs => $2) AS stale,
       relay_url, verified
FROM file_downloads WHERE file_id = $1
"""


async def get(db: Executor, repository: str, project: str, filename: str) -> FileRow | None:
    row = await db.fetchrow(SELECT_FILE, repository, project, filename)
    return FileRow(**row) if row is not None else None


async def get_by_id(db: Executor, file_id: int) -> FileRow | None:
    row = await db.fetchrow(SELECT_FILE_BY_ID, file_id)
    return FileRow(**row) if row is not None else None


async def mark_stored(
    db: Executor,
    row: FileRow,
    key: str,
    size: int,
    sha256: str,
    now: dt.datetime,
) -> bool:
    """Record the verified bytes of `row` as stored; False when the page changed meanwhile."""
    count: int = await db.fetchval(
        MARK_STORED, row.id, key, size, sha256, now, row.hashes, row.size
    )
    return count == 1


async def key_in_use(db: Executor, key: str) -> bool:
    in_use: bool = await db.fetchval(SELECT_KEY_IN_USE, key)
    return in_use


async def clear_lost(db: Executor, file_id: int, key: str) -> None:
    await db.execute(CLEAR_LOST, file_id, key)


async def get_metadata(db: Executor, file_id: int) -> bytes | None:
    body: bytes | None = await db.fetchval(SELECT_METADATA, file_id)
    return body


async def save_metadata(
    db: Executor, file_id: int, body: bytes, verified_against: dict[str, str]
) -> bool:
    """Keep a verified metadata body; False when the page advertises another one now."""
    status: str = await db.execute(UPDATE_METADATA, file_id, body, verified_against)
    return status == "UPDATE 1"


class Claim(msgspec.Struct, frozen=True):
    previous_spool: str | None


async def claim_download(
    db: Executor,
    file_id: int,
    attempt: uuid.UUID,
    spool_path: str,
    lease_seconds: float,
    relay_url: str | None = None,
) -> Claim | None:
    """Become the one downloader of a file; None when a live leader has it."""
    row = await db.fetchrow(CLAIM_DOWNLOAD, file_id, attempt, spool_path, lease_seconds, relay_url)
    return Claim(row["previous_spool"]) if row is not None else None


async def renew_claim(db: Executor, file_id: int, attempt: uuid.UUID) -> bool:
    status: str = await db.execute(RENEW_CLAIM, file_id, attempt)
    return status == "UPDATE 1"


async def set_download_running(
    db: Executor, file_id: int, attempt: uuid.UUID, expected_size: int | None
) -> None:
    await db.execute(UPDATE_DOWNLOAD_RUNNING, file_id, attempt, expected_size)


async def set_download_state(db: Executor, file_id: int, attempt: uuid.UUID, state: str) -> None:
    await db.execute(UPDATE_DOWNLOAD_STATE, file_id, attempt, state)


async def set_download_verified(db: Executor, file_id: int, attempt: uuid.UUID) -> None:
    await db.execute(UPDATE_DOWNLOAD_VERIFIED, file_id, attempt)


async def get_download(db: Executor, file_id: int, lease_seconds: float) -> DownloadRow | None:
    row = await db.fetchrow(SELECT_DOWNLOAD, file_id, lease_seconds)
    return DownloadRow(**row) if row is not None else None


async def clear_stored(db: Executor, repository: str, names: list[str] | None) -> list[str]:
    """Forget the stored files of some projects (all when `names` is None); their keys."""
    rows = await db.fetch(CLEAR_STORED, repository, names)
    return [row["stored_key"] for row in rows if row["stored_key"] is not None]
