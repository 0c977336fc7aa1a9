-- Downloads in progress, so that every worker and replica joins the one running download
-- of a file instead of starting its own. The row is owned by whoever holds the file's
-- advisory lock; a crashed owner's row is overwritten by the next one.
-- depends: 0001.initial-schema

CREATE TABLE file_downloads (
    file_id        bigint      PRIMARY KEY REFERENCES files (id) ON DELETE CASCADE,
    spool_path     text        NOT NULL,  -- local file other workers on this host can tail
    expected_size  bigint,
    state          text        NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    started_at     timestamptz NOT NULL
);
