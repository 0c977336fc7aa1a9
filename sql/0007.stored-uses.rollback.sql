DROP INDEX files_by_stored_key;
DROP TABLE stored_uses;
