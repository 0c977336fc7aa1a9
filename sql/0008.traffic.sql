-- What the service did, for the status page (/-/status): traffic per repository and
-- minute, use per project and hour, and what the upstream last said. Every worker of every
-- replica tallies in memory and adds its tallies here every few seconds (one statement per
-- table), so the page shows the whole deployment whichever worker renders it. Rows older
-- than two days are pruned by the workers.
-- depends: 0007.stored-uses

-- Counters add up across workers: a row is the sum of every worker's flushes for its minute.
CREATE TABLE traffic_minutes (
    repository         text             NOT NULL,
    minute             timestamptz      NOT NULL,  -- the start of the minute
    requests           bigint           NOT NULL,
    hits               bigint           NOT NULL,  -- answered from what was held
    revalidated        bigint           NOT NULL,  -- held, confirmed by an upstream 304
    misses             bigint           NOT NULL,  -- fetched from the upstream
    stale              bigint           NOT NULL,  -- held, served while the upstream failed
    not_found          bigint           NOT NULL,
    errors             bigint           NOT NULL,
    bytes_served       bigint           NOT NULL,  -- body bytes sent to clients
    bytes_fetched      bigint           NOT NULL,  -- body bytes received from the upstream
    upstream_requests  bigint           NOT NULL,
    upstream_failures  bigint           NOT NULL,  -- timeouts, connection errors, 5xx, ...
    upstream_seconds   double precision NOT NULL,  -- summed: mean latency = / requests
    PRIMARY KEY (repository, minute)
);

-- Only requests answered with content count, so that asking for made-up names does not
-- grow the table.
CREATE TABLE traffic_projects (
    repository    text        NOT NULL,
    project       text        NOT NULL,  -- PEP 503 normalized
    hour          timestamptz NOT NULL,
    requests      bigint      NOT NULL,
    bytes_served  bigint      NOT NULL,
    PRIMARY KEY (repository, hour, project)
);

-- The last failed upstream requests of each repository (a few per worker and flush).
CREATE TABLE upstream_errors (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository  text        NOT NULL,
    at          timestamptz NOT NULL,
    kind        text        NOT NULL,  -- list, page, file, metadata
    result      text        NOT NULL,  -- timeout, connect-error, 5xx, malformed, other
    error       text                   -- the reason in one line, as the client saw it
);

CREATE INDEX upstream_errors_latest ON upstream_errors (repository, at DESC);

-- When each repository's upstream last answered as it should (200, 304 or 404).
CREATE TABLE upstream_successes (
    repository  text        PRIMARY KEY,
    at          timestamptz NOT NULL
);
