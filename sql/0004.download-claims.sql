-- Downloads are coordinated by a claim on this row instead of a session advisory lock, so
-- that no pooled connection is held while the bytes travel (a slow upstream would otherwise
-- pin one connection per download, and a few of them starve every other request):
-- * attempt: which download this is. Followers wait for the attempt they joined and never
--   take an older attempt's `failed` for the verdict on a newer one;
-- * heartbeat_at: renewed every few seconds by the leader (database clock, so hosts need
--   not agree on the time); a claim not renewed for the lease is free to take;
-- * state 'claimed': a leader owns the download but the upstream has not answered yet.
-- depends: 0003.freshness-state

ALTER TABLE file_downloads ADD COLUMN attempt uuid NOT NULL DEFAULT gen_random_uuid();
-- Rows written under advisory locks have no heartbeat: free to claim at once.
ALTER TABLE file_downloads ADD COLUMN heartbeat_at timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE file_downloads ALTER COLUMN heartbeat_at DROP DEFAULT;
ALTER TABLE file_downloads ALTER COLUMN attempt DROP DEFAULT;
ALTER TABLE file_downloads DROP CONSTRAINT file_downloads_state_check;
ALTER TABLE file_downloads ADD CONSTRAINT file_downloads_state_check
    CHECK (state IN ('claimed', 'running', 'done', 'failed'));
