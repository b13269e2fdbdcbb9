-- A group's limits on what its commands use together, in each daemon:
-- memory in bytes and cpus, 0 for none.
ALTER TABLE groups ADD COLUMN memory INTEGER NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN cpus REAL NOT NULL DEFAULT 0;
