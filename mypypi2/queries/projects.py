"""The projects table and the files a project page lists."""

from __future__ import annotations

import datetime as dt
import logging

import msgspec

from mypypi2.models import FileEntry, ProjectPage, Validators
from mypypi2.queries import STATE_COLUMNS, Executor, PageState
from mypypi2.queries.notifications import Purged, notify_purged

log = logging.getLogger(__name__)

_FILES_JSON = msgspec.json.Encoder()

SELECT_STATE = f"""
SELECT found, {STATE_COLUMNS}
FROM projects
WHERE repository = $1 AND name = $2
"""

SELECT_PROJECT = """
SELECT id, status, status_reason, versions, last_serial
FROM projects
WHERE repository = $1 AND name = $2 AND found
"""

# Named as FileEntry's fields. A stored file's size is the one we verified when the page
# gave none.
SELECT_LISTED_FILES = """
SELECT filename, upstream_url AS url, hashes, requires_python, yanked, core_metadata,
       COALESCE(size, stored_size) AS size, upload_time, provenance, gpg_sig
FROM files
WHERE project_id = $1 AND listed
ORDER BY position
"""

# A content change bumps the revision, which tells every worker its rendering is outdated.
UPSERT_FOUND = """
INSERT INTO projects AS p (repository, name, found, status, status_reason, versions,
                           last_serial, etag, last_modified, content_hash, changed_at,
                           checked_at)
VALUES ($1, $2, true, $3, $4, $5, $6, $7, $8, $9, $10, $10)
ON CONFLICT (repository, name) DO UPDATE
SET found = true, status = $3, status_reason = $4, versions = $5, last_serial = $6,
    etag = $7, last_modified = $8, content_hash = $9, changed_at = $10, checked_at = $10,
    missing_count = 0, purged = false, revision = p.revision + 1
RETURNING id
"""

# Files the page no longer lists keep their row (and storage state) but leave the page.
UNLIST_FILES_NOT_IN = """
UPDATE files SET listed = false
WHERE project_id = $1 AND listed AND NOT (filename = ANY($2::text[]))
"""

# A stored file keeps what the page said of it when it was stored. When the upstream
# re-publishes a filename with other bytes (other hashes or size), the row keeps the old
# hashes, size, upload time and provenance, so that our page keeps describing the verified
# bytes our file URL serves: a filename's content never changes for our clients (we told
# them so: `immutable`), lock files made through us keep installing, and an upstream that
# replaces a file behind a published hash cannot push it to hash-checking clients. Its old
# .metadata stays when we hold it; when we don't, the upstream's now describes other bytes,
# so the page stops advertising one. `mypypi2 purge --files` takes the new bytes.
# A file not stored follows the upstream, and its kept .metadata body goes when the page's
# metadata hash changes. Returns the rows that kept old bytes or lost a metadata body.
UPSERT_FILES = """
WITH incoming AS (
    -- $2: the page's FileEntry list as one JSON document (msgspec's encoding, field names
    -- as keys), in the page's order.
    SELECT *, ordinality - 1 AS position
    FROM ROWS FROM (json_to_recordset($2::json) AS (
        filename text, url text, hashes jsonb, requires_python text, yanked text,
        core_metadata jsonb, size bigint, upload_time timestamptz, provenance text,
        gpg_sig boolean
    )) WITH ORDINALITY
), had_metadata AS (
    SELECT filename FROM files WHERE project_id = $1 AND metadata_body IS NOT NULL
), saved AS (
    INSERT INTO files AS f (project_id, filename, listed, position, upstream_url, hashes,
                            requires_python, yanked, core_metadata, size, upload_time,
                            provenance, gpg_sig)
    SELECT $1, filename, true, position, url, hashes, requires_python, yanked, core_metadata,
           size, upload_time, provenance, gpg_sig
    FROM incoming
    ON CONFLICT (project_id, filename) DO UPDATE
    SET listed = true, position = EXCLUDED.position, upstream_url = EXCLUDED.upstream_url,
        requires_python = EXCLUDED.requires_python, yanked = EXCLUDED.yanked,
        (hashes, size, upload_time, provenance, gpg_sig, core_metadata, metadata_body) = (
            SELECT
                CASE WHEN k.kept THEN f.hashes ELSE EXCLUDED.hashes END,
                CASE WHEN k.kept THEN f.size ELSE EXCLUDED.size END,
                CASE WHEN k.kept THEN f.upload_time ELSE EXCLUDED.upload_time END,
                CASE WHEN k.kept THEN f.provenance ELSE EXCLUDED.provenance END,
                CASE WHEN k.kept THEN f.gpg_sig ELSE EXCLUDED.gpg_sig END,
                CASE
                    WHEN NOT k.kept THEN EXCLUDED.core_metadata
                    WHEN f.metadata_body IS NOT NULL OR k.same_metadata THEN f.core_metadata
                END,
                CASE WHEN k.kept OR k.same_metadata THEN f.metadata_body END
            FROM (
                SELECT
                    COALESCE(f.stored_key IS NOT NULL AND (
                        EXCLUDED.hashes->>'sha256' <> f.stored_sha256
                        OR EXCLUDED.size <> f.stored_size
                        OR EXISTS (
                            SELECT FROM jsonb_each_text(EXCLUDED.hashes) AS new
                            JOIN jsonb_each_text(f.hashes) AS old USING (key)
                            WHERE new.value <> old.value
                        )
                    ), false) AS kept,
                    f.core_metadata IS NOT DISTINCT FROM EXCLUDED.core_metadata
                        AS same_metadata
            ) AS k
        )
    RETURNING filename, hashes, size, metadata_body IS NULL AS no_metadata
)
SELECT saved.filename,
       (saved.hashes, saved.size) IS DISTINCT FROM (incoming.hashes, incoming.size)
           AS kept_old_bytes,
       saved.no_metadata AND had_metadata.filename IS NOT NULL AS dropped_metadata
FROM saved
JOIN incoming USING (filename)
LEFT JOIN had_metadata USING (filename)
WHERE (saved.hashes, saved.size) IS DISTINCT FROM (incoming.hashes, incoming.size)
   OR (saved.no_metadata AND had_metadata.filename IS NOT NULL)
"""

# An upstream 404: remembered as a row so a fleet asking again is answered from here.
UPSERT_NOT_FOUND = """
INSERT INTO projects AS p (repository, name, found, changed_at, checked_at)
VALUES ($1, $2, false, $3, $3)
ON CONFLICT (repository, name) DO UPDATE
SET found = false, changed_at = $3, checked_at = $3, etag = NULL, last_modified = NULL,
    content_hash = NULL, missing_count = 0, purged = false, revision = p.revision + 1
"""

# The upstream confirmed what we hold: only freshness and validators move.
UPDATE_CHECKED = """
UPDATE projects SET checked_at = $3, etag = $4, last_modified = $5,
                    last_serial = COALESCE($6, last_serial), missing_count = 0,
                    purged = false
WHERE repository = $1 AND name = $2
"""

# A purge: the next request asks the upstream again, unconditionally (no validators).
MARK_STALE = """
UPDATE projects SET purged = true, etag = NULL, last_modified = NULL
WHERE repository = $1 AND ($2::text[] IS NULL OR name = ANY($2::text[]))
"""

# One more upstream 404 for a page we hold; the caller decides when enough is enough.
INCREMENT_MISSING = """
UPDATE projects SET missing_count = missing_count + 1
WHERE repository = $1 AND name = $2
RETURNING missing_count
"""

# Rows of projects the upstream does not have, past any use: a scan of random names must
# not grow the table forever. A row with file rows (a project we once held) is kept, so
# stored files never lose their row. Bounded, and skipping rows others are writing.
DELETE_EXPIRED_NOT_FOUND = """
DELETE FROM projects AS p
USING (
    SELECT id FROM projects AS o
    WHERE o.repository = $1 AND NOT o.found AND o.checked_at < $2
      AND NOT EXISTS (SELECT 1 FROM files f WHERE f.project_id = o.id)
    ORDER BY o.checked_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
) AS expired
WHERE p.id = expired.id
"""


async def get_state(db: Executor, repository: str, name: str) -> PageState | None:
    row = await db.fetchrow(SELECT_STATE, repository, name)
    return PageState(**row) if row is not None else None


async def get_page(db: Executor, repository: str, name: str) -> ProjectPage | None:
    project = await db.fetchrow(SELECT_PROJECT, repository, name)
    if project is None:
        return None
    rows = await db.fetch(SELECT_LISTED_FILES, project["id"])
    files = tuple(FileEntry(**row) for row in rows)
    return ProjectPage(
        name=name,
        files=files,
        versions=tuple(project["versions"]),
        status=project["status"],
        status_reason=project["status_reason"],
        last_serial=project["last_serial"],
    )


async def save_page(
    db: Executor,
    repository: str,
    page: ProjectPage,
    validators: Validators,
    content_hash: bytes,
    now: dt.datetime,
) -> None:
    """Replace the stored page; run it inside a transaction so readers never see half."""
    project_id = await db.fetchval(
        UPSERT_FOUND,
        repository,
        page.name,
        page.status,
        page.status_reason,
        list(page.versions),
        page.last_serial,
        validators.etag,
        validators.last_modified,
        content_hash,
        now,
    )
    files = page.files
    await db.execute(UNLIST_FILES_NOT_IN, project_id, [f.filename for f in files])
    # One JSON document rather than a parallel array per column: as fast to send and store
    # (measured on pages of 50 and 2,000 files), and a new field is one edit to UPSERT_FILES.
    changed = await db.fetch(UPSERT_FILES, project_id, _FILES_JSON.encode(files).decode())
    for row in changed:
        if row["kept_old_bytes"]:
            log.warning(
                "%s/%s: the upstream re-published %s with other bytes; serving the ones stored",
                repository,
                page.name,
                row["filename"],
            )
    if any(row["dropped_metadata"] for row in changed):
        # Workers keep metadata bodies in memory: make every one of them forget this project's.
        await notify_purged(db, Purged(repository, [page.name], files=True))


async def save_not_found(db: Executor, repository: str, name: str, now: dt.datetime) -> None:
    await db.execute(UPSERT_NOT_FOUND, repository, name, now)


async def mark_checked(
    db: Executor, repository: str, name: str, validators: Validators, now: dt.datetime
) -> None:
    await db.execute(
        UPDATE_CHECKED,
        repository,
        name,
        now,
        validators.etag,
        validators.last_modified,
        validators.last_serial,
    )


async def record_missing(db: Executor, repository: str, name: str) -> int:
    """Record one more upstream 404 for the project; returns how many in a row."""
    count: int = await db.fetchval(INCREMENT_MISSING, repository, name)
    return count


async def mark_stale(db: Executor, repository: str, names: list[str] | None) -> int:
    """Purge pages (all of the repository's when `names` is None); returns how many."""
    status: str = await db.execute(MARK_STALE, repository, names)
    return int(status.split()[-1])


async def delete_expired_not_found(
    db: Executor, repository: str, checked_before: dt.datetime, limit: int
) -> int:
    """Delete up to `limit` not-found rows last checked before `checked_before`; how many."""
    status: str = await db.execute(DELETE_EXPIRED_NOT_FOUND, repository, checked_before, limit)
    return int(status.split()[-1])
