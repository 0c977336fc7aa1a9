-- The canonical store of every page we pull through. PostgreSQL is the shared truth for
-- all workers and replicas; per-worker caches only hold renderings of these rows.
-- depends:

-- One row per (repository, project) ever asked for, including upstream 404s (negative cache).
CREATE TABLE projects (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository      text        NOT NULL,
    name            text        NOT NULL,  -- PEP 503 normalized
    found           boolean     NOT NULL,  -- false: the upstream answered 404
    status          text,                  -- PEP 792 project status, as the upstream gave it
    status_reason   text,
    versions        text[]      NOT NULL DEFAULT '{}',
    last_serial     bigint,                -- X-PyPI-Last-Serial / meta._last-serial
    etag            text,                  -- upstream validators, for conditional requests
    last_modified   text,
    content_hash    bytea,                 -- digest of the parsed upstream page
    -- Bumped on every change of content, so a worker can tell whether its rendering is current.
    revision        bigint      NOT NULL DEFAULT 1,
    changed_at      timestamptz NOT NULL,  -- when the content last changed (Last-Modified)
    checked_at      timestamptz NOT NULL,  -- when the upstream last confirmed it (freshness)
    UNIQUE (repository, name)
);

-- One row per distribution file a page has ever listed. Rows outlive their listing
-- (listed = false) so that stored files keep their storage state if the upstream drops them.
CREATE TABLE files (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id       bigint      NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    filename         text        NOT NULL,
    listed           boolean     NOT NULL DEFAULT true,
    position         integer     NOT NULL,  -- upstream order on the page
    upstream_url     text        NOT NULL,
    hashes           jsonb       NOT NULL DEFAULT '{}',
    requires_python  text,
    yanked           text,                  -- NULL: not yanked; '': yanked without reason
    core_metadata    jsonb,                 -- NULL: no .metadata; {} or {"sha256": ...}
    size             bigint,                -- 64-bit: files over 4 GiB exist
    upload_time      timestamptz,
    provenance       text,
    gpg_sig          boolean,
    -- Storage state: set once the bytes are verified and committed to the store.
    stored_key       text,
    stored_size      bigint,
    stored_sha256    text,
    stored_at        timestamptz,
    metadata_body    bytea,                 -- PEP 658 .metadata, small enough to keep here
    UNIQUE (project_id, filename)
);

CREATE INDEX files_listed_by_project ON files (project_id, position) WHERE listed;

-- The project list of each repository (/{repo}/simple/), one row per repository: it is
-- always written and read whole.
CREATE TABLE project_lists (
    repository      text        PRIMARY KEY,
    names           text[]      NOT NULL,
    last_serial     bigint,
    etag            text,
    last_modified   text,
    content_hash    bytea,
    revision        bigint      NOT NULL DEFAULT 1,
    changed_at      timestamptz NOT NULL,
    checked_at      timestamptz NOT NULL
);
