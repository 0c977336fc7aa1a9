DELETE FROM file_downloads WHERE state = 'claimed';
ALTER TABLE file_downloads DROP CONSTRAINT file_downloads_state_check;
ALTER TABLE file_downloads ADD CONSTRAINT file_downloads_state_check
    CHECK (state IN ('running', 'done', 'failed'));
ALTER TABLE file_downloads DROP COLUMN heartbeat_at;
ALTER TABLE file_downloads DROP COLUMN attempt;
