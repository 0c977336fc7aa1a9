ALTER TABLE projects DROP COLUMN missing_count;
