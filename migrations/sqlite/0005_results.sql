-- A task's row no longer changes as it runs. What happens to it is written
-- as rows of its own, so the hot path of a group commit only INSERTs:
--
--   running   a durable start mark: the task was running when it was written
--   results   the final outcome, at most one per task (the primary key)
--
-- and the runner's own delivery of a job's callbacks is one cursor per job
-- instead of a mark on every callback row.
--
-- Neither new table declares a foreign key to tasks: the check costs a
-- lookup in tasks for every row written, a third of a group commit's time
-- (BenchmarkCompleteTasks: 110k tasks/s with it, 160k without). The store
-- writes them only for tasks it has read, and the crash suite checks that
-- every result has its task.

CREATE TABLE results (
    job_id      INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('succeeded', 'failed', 'cancelled')),
    attempts    INTEGER NOT NULL,           -- attempts spent, the last one included
    result      TEXT,                       -- JSON
    error       TEXT,
    time_ns     INTEGER,
    started_at  INTEGER,
    finished_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE TABLE running (
    job_id     INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

INSERT INTO results (job_id, seq, state, attempts, result, error, time_ns, started_at, finished_at)
    SELECT job_id, seq, state, attempts, result, error, time_ns, started_at, coalesce(finished_at, 0)
    FROM tasks WHERE state IN ('succeeded', 'failed', 'cancelled');
INSERT INTO running (job_id, seq, started_at)
    SELECT job_id, seq, coalesce(started_at, 0) FROM tasks WHERE state = 'running';
-- What is left on a task row: its definition, and the bookkeeping of its
-- failed attempts while it may still retry (attempts, error, not_before).
UPDATE tasks SET error = NULL WHERE state IN ('succeeded', 'failed', 'cancelled');
DROP INDEX tasks_running;
ALTER TABLE tasks DROP COLUMN state;
ALTER TABLE tasks DROP COLUMN result;
ALTER TABLE tasks DROP COLUMN time_ns;
ALTER TABLE tasks DROP COLUMN started_at;
ALTER TABLE tasks DROP COLUMN finished_at;

-- Every callback of the job with an id up to delivered_id has been released
-- to the runner's own output (log, stdout). The runner releases a job's
-- callbacks in id order, so a cursor says as much as a mark per row did.
ALTER TABLE jobs ADD COLUMN delivered_id INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET delivered_id = coalesce(
    (SELECT min(id) - 1 FROM callbacks c WHERE c.job_id = jobs.id AND c.delivered_at IS NULL),
    (SELECT max(id) FROM callbacks c WHERE c.job_id = jobs.id),
    0);
ALTER TABLE callbacks DROP COLUMN attempts;
ALTER TABLE callbacks DROP COLUMN delivered_at;
ALTER TABLE callbacks DROP COLUMN last_error;

-- Every task of the job with a seq up to done_through is final, so a runner
-- that resumes the job reads pending tasks from there on, instead of
-- stepping over every finished one. A lower bound: 0 is always right.
ALTER TABLE jobs ADD COLUMN done_through INTEGER NOT NULL DEFAULT 0;
