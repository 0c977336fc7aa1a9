-- How workers and replicas agree on one upstream request per page without holding a
-- database connection while it runs: the refresher takes a lease (a row, claimed with one
-- statement, renewed while it works); the others poll the page's state until it is saved
-- or the lease runs out. A failed refresh leaves what went wrong here for a short while,
-- so nobody asks the upstream again meanwhile (a malformed page included), and nobody
-- turns it into a 404 either.
-- depends: 0003.freshness-state

CREATE TABLE page_refreshes (
    repository      text        NOT NULL,
    name            text        NOT NULL,  -- '' for the project list
    holder          uuid,                  -- the refresh under way, if any
    lease_until     timestamptz,           -- the database's clock: past it, anyone takes over
    failed_until    timestamptz,           -- the service's clock: until then, no new attempt
    failure_kind    text CHECK (failure_kind IN ('error', 'timeout', 'not-found')),
    failure_url     text,
    failure_reason  text,
    PRIMARY KEY (repository, name)
);

CREATE INDEX page_refreshes_failed ON page_refreshes (failed_until) WHERE holder IS NULL;

-- Not-found rows are deleted once their negative TTL is long past (oldest first).
CREATE INDEX projects_not_found_by_age ON projects (repository, checked_at) WHERE NOT found;
