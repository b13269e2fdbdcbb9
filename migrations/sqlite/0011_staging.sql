-- A big submit is written in several transactions. Until the last one
-- commits, its job is staging: runners and readers do not see it. One
-- whose submitter died (its submit lock is free) is deleted by the next
-- runner to start.
ALTER TABLE jobs ADD COLUMN staging INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_staging ON jobs (id) WHERE staging = 1;
