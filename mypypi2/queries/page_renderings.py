"""Which stored objects hold the renderings of a large page (sql/0010.page-renderings.sql)."""

from __future__ import annotations

import datetime as dt

import msgspec

from mypypi2.queries import Executor

SELECT_RENDERINGS = """
SELECT media_type, encoding, storage_key, size, etag
FROM page_renderings
WHERE repository = $1 AND name = $2 AND content_hash = $3 AND prefix = $4
"""

# Two workers may render the same content at once: the same bytes under the same keys, so
# whichever row is there first stands.
INSERT_RENDERINGS = """
INSERT INTO page_renderings (repository, name, content_hash, prefix, media_type, encoding,
                             storage_key, size, etag, made_at)
SELECT $1, $2, $3, $4, media_type, encoding, storage_key, size, etag, $5
FROM json_to_recordset($6::json) AS r (
    media_type text, encoding text, storage_key text, size bigint, etag text
)
ON CONFLICT DO NOTHING
"""

# Renderings of the page's other contents superseded (a newer content's made) before $4: a
# worker serves an older revision only until it reads the page's state again, well within
# that time. Every row of one content shares its made_at (one INSERT).
DELETE_SUPERSEDED = """
DELETE FROM page_renderings AS r
USING (
    SELECT content_hash, prefix,
           lead(made_at) OVER (PARTITION BY prefix ORDER BY made_at) AS superseded_at
    FROM (
        SELECT DISTINCT content_hash, prefix, made_at
        FROM page_renderings
        WHERE repository = $1 AND name = $2
    ) AS contents
) AS old
WHERE r.repository = $1 AND r.name = $2 AND r.content_hash <> $3
  AND (r.content_hash, r.prefix) = (old.content_hash, old.prefix)
  AND old.superseded_at < $4
RETURNING r.storage_key
"""

# The store lost one of a content's objects: the next worker to need the page renders all
# of them again.
DELETE_CONTENT_OF_KEY = """
DELETE FROM page_renderings AS r
USING page_renderings AS lost
WHERE lost.storage_key = $1
  AND (r.repository, r.name, r.content_hash, r.prefix)
      = (lost.repository, lost.name, lost.content_hash, lost.prefix)
"""


class Rendering(msgspec.Struct, frozen=True):
    """One form (media type, coding) of a page's content, as a stored object."""

    media_type: str
    encoding: str  # "" for the identity
    storage_key: str
    size: int
    etag: str  # of the identity form of `media_type`


_ROWS = msgspec.json.Encoder()


async def get(
    db: Executor, repository: str, name: str, content_hash: bytes, prefix: str
) -> list[Rendering]:
    rows = await db.fetch(SELECT_RENDERINGS, repository, name, content_hash, prefix)
    return [Rendering(**row) for row in rows]


async def save(
    db: Executor,
    repository: str,
    name: str,
    content_hash: bytes,
    prefix: str,
    renderings: list[Rendering],
    now: dt.datetime,
) -> None:
    document = _ROWS.encode(renderings).decode()
    await db.execute(INSERT_RENDERINGS, repository, name, content_hash, prefix, now, document)


async def delete_superseded(
    db: Executor, repository: str, name: str, content_hash: bytes, superseded_before: dt.datetime
) -> list[str]:
    """Forget the renderings of the page's older contents; their storage keys."""
    rows = await db.fetch(DELETE_SUPERSEDED, repository, name, content_hash, superseded_before)
    return [row["storage_key"] for row in rows]


async def delete_key(db: Executor, storage_key: str) -> None:
    """Forget the renderings of the content `storage_key` is one form of."""
    await db.execute(DELETE_CONTENT_OF_KEY, storage_key)
