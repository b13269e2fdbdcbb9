-- Job control: pause and resume, priorities, a start time, dependencies
-- on other jobs, named groups with their own limits, and a halt policy.
ALTER TABLE jobs ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN start_at INTEGER;                 -- ns; NULL: at once
ALTER TABLE jobs ADD COLUMN grp TEXT NOT NULL DEFAULT '';      -- '' is the default group
ALTER TABLE jobs ADD COLUMN halt TEXT NOT NULL DEFAULT '';     -- parallel's --halt, as given
ALTER TABLE jobs ADD COLUMN after_mode INTEGER NOT NULL DEFAULT 0; -- 0 none, 1 after success, 2 after any end

-- The jobs a job waits for (--after, --after-any).
CREATE TABLE job_deps (
    job_id INTEGER NOT NULL,
    dep_id INTEGER NOT NULL,
    PRIMARY KEY (job_id, dep_id)
) WITHOUT ROWID;

-- Limits of named groups; a group with no row has none.
CREATE TABLE groups (
    name     TEXT PRIMARY KEY,
    max_jobs INTEGER NOT NULL DEFAULT 0,  -- 0: the daemon's --max-jobs
    workers  INTEGER NOT NULL DEFAULT 0   -- 0: no limit beyond each job's own
) WITHOUT ROWID;

-- The scheduler's pass: the next unfinished jobs by priority, then age.
CREATE INDEX jobs_runnable ON jobs (priority DESC, id) WHERE finished_at IS NULL;

-- pcd kill: the runner stops a running task asked for: 1 fails it, 2 puts
-- it back to pending.
ALTER TABLE running ADD COLUMN kill INTEGER NOT NULL DEFAULT 0;

-- The deliveries given up on, by sink, for /metrics: few, and found
-- without reading the delivered ones.
CREATE INDEX deliveries_dead ON deliveries (sink) WHERE state = 'dead';
