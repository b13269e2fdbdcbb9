-- Retries with backoff, per-task timeouts, and a record of every attempt
-- of a task that may retry.

ALTER TABLE tasks ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN backoff_base_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN backoff_cap_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN timeout_ns INTEGER NOT NULL DEFAULT 0;
-- Wall-clock unix ns before which a task waiting out its backoff must not
-- start; NULL for a task that is not waiting.
ALTER TABLE tasks ADD COLUMN not_before INTEGER;

CREATE INDEX tasks_waiting ON tasks (job_id, not_before) WHERE not_before IS NOT NULL;

CREATE TABLE attempts (
    job_id      INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,           -- 1-based
    state       TEXT    NOT NULL,           -- how it ended: succeeded, failed
    error       TEXT,
    time_ns     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq, attempt),
    FOREIGN KEY (job_id, seq) REFERENCES tasks (job_id, seq)
) WITHOUT ROWID;
