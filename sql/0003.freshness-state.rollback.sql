ALTER TABLE project_lists DROP COLUMN purged;
ALTER TABLE projects DROP COLUMN purged;
ALTER TABLE projects DROP COLUMN missing_count;
