"""What the store holds per repository, as its rows say (for the status page)."""

from __future__ import annotations

import msgspec

from mypypi2.queries import Executor

# A content-addressed object can back several rows of a repository: it counts once there,
# and once in each repository holding it, as the eviction's caps count it (eviction.py).
SELECT_STORED_BY_REPOSITORY = """
SELECT repository, count(*) AS files, sum(size)::bigint AS bytes
FROM (
    SELECT p.repository, f.stored_key, max(f.stored_size) AS size
    FROM files f
    JOIN projects p ON p.id = f.project_id
    WHERE f.stored_key IS NOT NULL
    GROUP BY p.repository, f.stored_key
) AS objects
GROUP BY repository
"""


class Stored(msgspec.Struct, frozen=True):
    files: int
    bytes: int


async def stored_by_repository(db: Executor) -> dict[str, Stored]:
    rows = await db.fetch(SELECT_STORED_BY_REPOSITORY)
    return {row["repository"]: Stored(row["files"], row["bytes"] or 0) for row in rows}
