ALTER TABLE file_downloads DROP COLUMN verified;
ALTER TABLE file_downloads DROP COLUMN relay_url;
