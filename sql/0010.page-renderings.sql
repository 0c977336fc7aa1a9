-- Renderings of large pages (the project list of a big index, pages of thousands of files),
-- made once per content for the whole deployment by whichever worker needs them first and
-- kept in the store, under keys in `.pages/`, which no stored file's key can start with (a
-- repository name starts with a letter or digit). Every worker then serves the bytes from
-- the store and holds only these few values; PostgreSQL says which object is which form.
-- depends: 0007.stored-uses

CREATE TABLE page_renderings (
    repository    text        NOT NULL,
    name          text        NOT NULL,  -- '' for the project list
    content_hash  bytea       NOT NULL,  -- of the stored page these bytes render
    prefix        text        NOT NULL,  -- the URL prefix the rendering's links start with
    media_type    text        NOT NULL,
    encoding      text        NOT NULL,  -- '' for the identity
    storage_key   text        NOT NULL,
    size          bigint      NOT NULL,
    etag          text        NOT NULL,  -- of the identity form, as a worker computes it
    made_at       timestamptz NOT NULL,
    PRIMARY KEY (repository, name, content_hash, prefix, media_type, encoding)
);
