-- When each stored object was last served, for eviction (least recently used first, and
-- unused for longer than a limit). A narrow table of its own rather than a column of
-- `files`: workers write it in batches (one statement per flush), and updating the wide
-- `files` row would rewrite it whole each time. An object with no row was last used when
-- it was stored (`files.stored_at`). Keyed by the storage key, which is what a worker
-- serving a file knows; rows whose object is no longer stored are deleted by the sweep.
-- depends: 0005.page-refreshes

CREATE TABLE stored_uses (
    stored_key  text        PRIMARY KEY,
    used_at     timestamptz NOT NULL  -- the service's clock
);

-- The sweep finds the rows of an object by its key.
CREATE INDEX files_by_stored_key ON files (stored_key) WHERE stored_key IS NOT NULL;
