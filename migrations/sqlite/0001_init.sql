-- Jobs, their tasks, and the callback outbox.
--
-- Times ending in _at are wall-clock unix nanoseconds, for display only.
-- Durations ending in _ns come from the monotonic clock.

CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY,        -- submission order
    uuid        TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL DEFAULT '',
    state       TEXT    NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    sealed      INTEGER NOT NULL DEFAULT 0 CHECK (sealed IN (0, 1)),
    round       INTEGER NOT NULL DEFAULT 0, -- bumped when a finished job runs again
    workers     INTEGER NOT NULL CHECK (workers > 0),
    queue_size  INTEGER NOT NULL CHECK (queue_size > 0),
    total       INTEGER NOT NULL DEFAULT 0,
    succeeded   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    cancelled   INTEGER NOT NULL DEFAULT 0,
    elapsed_ns  INTEGER NOT NULL DEFAULT 0, -- summed over every process that ran the job
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER
);

CREATE INDEX jobs_unfinished ON jobs (id) WHERE finished_at IS NULL;

CREATE TABLE tasks (
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    seq         INTEGER NOT NULL,           -- 1-based order within the job
    uuid        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,           -- JSON
    state       TEXT    NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    interrupts  INTEGER NOT NULL DEFAULT 0, -- restarts that cut a run short; not failed attempts
    result      TEXT,                       -- JSON
    error       TEXT,
    time_ns     INTEGER,
    started_at  INTEGER,
    finished_at INTEGER,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE UNIQUE INDEX tasks_uuid ON tasks (uuid);

-- The outbox. A record commits with the state change it reports; delivery
-- happens after, and is at-least-once. Readers resume by id.
CREATE TABLE callbacks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused
    event        TEXT    NOT NULL CHECK (event IN ('task', 'job')),
    job_id       INTEGER NOT NULL REFERENCES jobs (id),
    task_seq     INTEGER,
    round        INTEGER NOT NULL DEFAULT 0,
    message      TEXT    NOT NULL,          -- JSON
    created_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    delivered_at INTEGER,
    last_error   TEXT,
    CHECK ((event = 'task') = (task_seq IS NOT NULL))
);

CREATE INDEX callbacks_job ON callbacks (job_id, id);
-- One task callback per task and one job callback per job, per round.
CREATE UNIQUE INDEX callbacks_one_per_task ON callbacks (job_id, task_seq, round) WHERE event = 'task';
CREATE UNIQUE INDEX callbacks_one_per_job ON callbacks (job_id, round) WHERE event = 'job';
