-- What the freshness policy needs beyond checked_at:
-- * missing_count: consecutive upstream 404s for a project we hold; it is given up only
--   after several, never on one flaky answer;
-- * purged: `mypypi2 purge` asked for a refetch. A flag rather than an old checked_at, so
--   a purged page can still be served stale while the upstream is down.
-- depends: 0002.file-downloads

ALTER TABLE projects ADD COLUMN missing_count integer NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN purged boolean NOT NULL DEFAULT false;
ALTER TABLE project_lists ADD COLUMN purged boolean NOT NULL DEFAULT false;
