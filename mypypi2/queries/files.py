"""Distribution files: lookup by URL parts, storage state, .metadata bodies, downloads."""

from __future__ import annotations

import datetime as dt

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


class DownloadRow(msgspec.Struct, frozen=True):
    spool_path: str
    expected_size: int | None
    state: str


SELECT_FILE = """
SELECT f.id, f.project_id, f.filename, f.upstream_url, f.hashes, f.size, f.core_metadata,
       f.stored_key, f.stored_size, f.stored_sha256
FROM files f
JOIN projects p ON p.id = f.project_id
WHERE p.repository = $1 AND p.name = $2 AND f.filename = $3
  AND (f.listed OR f.stored_key IS NOT NULL)
"""

SELECT_FILE_BY_ID = """
SELECT id, project_id, filename, upstream_url, hashes, size, core_metadata,
       stored_key, stored_size, stored_sha256
FROM files
WHERE id = $1
"""

# Storing a file tells the page its size (PEP 700) when the upstream did not: the revision
# bump makes every worker re-render it. A page that had the size already is left alone.
MARK_STORED = """
WITH stored AS (
    UPDATE files
    SET stored_key = $2, stored_size = $3, stored_sha256 = $4, stored_at = $5
    WHERE id = $1
    RETURNING project_id, size
)
UPDATE projects SET revision = revision + 1, changed_at = $5
WHERE id = (SELECT project_id FROM stored WHERE size IS NULL)
"""

# A purge: the rows forget their stored objects (returned, for the caller to delete).
CLEAR_STORED = """
WITH doomed AS (
    SELECT f.id, f.stored_key
    FROM files f
    JOIN projects p ON p.id = f.project_id
    WHERE p.repository = $1 AND ($2::text[] IS NULL OR p.name = ANY($2::text[]))
      AND (f.stored_key IS NOT NULL OR f.metadata_body IS NOT NULL)
    FOR UPDATE OF f
)
UPDATE files
SET stored_key = NULL, stored_size = NULL, stored_sha256 = NULL, stored_at = NULL,
    metadata_body = NULL
FROM doomed
WHERE files.id = doomed.id
RETURNING doomed.stored_key
"""

SELECT_METADATA = "SELECT metadata_body FROM files WHERE id = $1"

UPDATE_METADATA = "UPDATE files SET metadata_body = $2 WHERE id = $1"

UPSERT_DOWNLOAD = """
INSERT INTO file_downloads (file_id, spool_path, expected_size, state, started_at)
VALUES ($1, $2, $3, 'running', $4)
ON CONFLICT (file_id) DO UPDATE
SET spool_path = $2, expected_size = $3, state = 'running', started_at = $4
"""

UPDATE_DOWNLOAD_STATE = "UPDATE file_downloads SET state = $2 WHERE file_id = $1"

SELECT_DOWNLOAD = """
SELECT spool_path, expected_size, state FROM file_downloads WHERE file_id = $1
"""


async def get(db: Executor, repository: str, project: str, filename: str) -> FileRow | None:
    row = await db.fetchrow(SELECT_FILE, repository, project, filename)
    return FileRow(**row) if row is not None else None


async def get_by_id(db: Executor, file_id: int) -> FileRow | None:
    row = await db.fetchrow(SELECT_FILE_BY_ID, file_id)
    return FileRow(**row) if row is not None else None


async def mark_stored(
    db: Executor, file_id: int, key: str, size: int, sha256: str, now: dt.datetime
) -> None:
    await db.execute(MARK_STORED, file_id, key, size, sha256, now)


async def get_metadata(db: Executor, file_id: int) -> bytes | None:
    body: bytes | None = await db.fetchval(SELECT_METADATA, file_id)
    return body


async def save_metadata(db: Executor, file_id: int, body: bytes) -> None:
    await db.execute(UPDATE_METADATA, file_id, body)


async def start_download(
    db: Executor, file_id: int, spool_path: str, expected_size: int | None, now: dt.datetime
) -> None:
    await db.execute(UPSERT_DOWNLOAD, file_id, spool_path, expected_size, now)


async def set_download_state(db: Executor, file_id: int, state: str) -> None:
    await db.execute(UPDATE_DOWNLOAD_STATE, file_id, state)


async def get_download(db: Executor, file_id: int) -> DownloadRow | None:
    row = await db.fetchrow(SELECT_DOWNLOAD, file_id)
    return DownloadRow(**row) if row is not None else None


async def clear_stored(db: Executor, repository: str, names: list[str] | None) -> list[str]:
    """Forget the stored files of some projects (all when `names` is None); their keys."""
    rows = await db.fetch(CLEAR_STORED, repository, names)
    return [row["stored_key"] for row in rows if row["stored_key"] is not None]
