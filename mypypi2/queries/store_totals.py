"""What the store holds, per repository: for the metrics (read at most every 30 s)."""

from __future__ import annotations

import msgspec

from mypypi2.queries import Executor

# Through the partial index on stored files (files_by_stored_key): unstored rows are skipped.
SELECT_STORE_TOTALS = """
SELECT p.repository, count(*) AS files, coalesce(sum(f.stored_size), 0)::bigint AS bytes
FROM files f
JOIN projects p ON p.id = f.project_id
WHERE f.stored_key IS NOT NULL
GROUP BY p.repository
"""


class StoreTotal(msgspec.Struct, frozen=True):
    repository: str
    files: int
    bytes: int


async def store_totals(db: Executor) -> list[StoreTotal]:
    rows = await db.fetch(SELECT_STORE_TOTALS)
    return [StoreTotal(row["repository"], row["files"], row["bytes"]) for row in rows]
