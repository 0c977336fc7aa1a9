-- Cross-host followers stream a download from its leader instead of waiting for the commit:
-- * relay_url: where the leader's replica serves the bytes of this attempt to the others
--   (GET /-/relay/...); NULL when it relays to nobody (no cluster secret, no address);
-- * verified: every byte of the attempt is in the leader's spool and matches the page, the
--   commit to the store (an upload, for S3) still to come. Relays end their streams there.
--   A flag beside the state rather than a state of its own: the download is still running
--   (its claim stands) for everything that asks.
-- depends: 0007.stored-uses

ALTER TABLE file_downloads ADD COLUMN relay_url text;
ALTER TABLE file_downloads ADD COLUMN verified boolean NOT NULL DEFAULT false;
