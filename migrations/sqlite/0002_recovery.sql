-- Crash recovery and idempotent submit.

-- Tasks a runner has durably started. At the next start they go back to
-- pending, with the interruption counted; this index finds them without
-- scanning every task.
CREATE INDEX tasks_running ON tasks (job_id, seq) WHERE state = 'running';

-- pcd submit --key K: one job per key.
ALTER TABLE jobs ADD COLUMN key TEXT;
CREATE UNIQUE INDEX jobs_key ON jobs (key) WHERE key IS NOT NULL;
