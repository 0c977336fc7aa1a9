-- Consecutive upstream 404s for a project we hold: it is given up only after several,
-- never on one flaky answer.
-- depends: 0002.file-downloads

ALTER TABLE projects ADD COLUMN missing_count integer NOT NULL DEFAULT 0;
