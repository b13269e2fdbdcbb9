-- pcd's schema on PostgreSQL. Times are Unix nanoseconds (bigint), as on
-- SQLite, so that both stores read and write the same values.

CREATE TABLE jobs (
    id           bigserial PRIMARY KEY,          -- submission order
    uuid         text    NOT NULL UNIQUE,
    name         text    NOT NULL DEFAULT '',
    state        text    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    sealed       boolean NOT NULL DEFAULT false,
    staging      boolean NOT NULL DEFAULT false, -- a chunked submit not yet whole
    pruning      boolean NOT NULL DEFAULT false,
    round        integer NOT NULL DEFAULT 0,     -- bumped when a finished job runs again
    workers      integer NOT NULL CHECK (workers > 0),
    queue_size   integer NOT NULL CHECK (queue_size > 0),
    total        bigint  NOT NULL DEFAULT 0,
    succeeded    bigint  NOT NULL DEFAULT 0,
    failed       bigint  NOT NULL DEFAULT 0,
    cancelled    bigint  NOT NULL DEFAULT 0,
    elapsed_ns   bigint  NOT NULL DEFAULT 0,
    created_at   bigint  NOT NULL,
    started_at   bigint,
    finished_at  bigint,
    key          text    UNIQUE,
    sinks        bytea,
    done_through bigint  NOT NULL DEFAULT 0
);
CREATE INDEX jobs_unfinished ON jobs (id) WHERE finished_at IS NULL;
CREATE INDEX jobs_sinks_finished ON jobs (finished_at) WHERE sinks IS NOT NULL;

CREATE TABLE tasks (
    job_id          bigint  NOT NULL REFERENCES jobs (id),
    seq             bigint  NOT NULL,            -- 1-based order within the job
    uuid            text    NOT NULL,
    kind            text    NOT NULL,
    payload         bytea   NOT NULL,            -- JSON, byte for byte as submitted
    attempts        integer NOT NULL DEFAULT 0,
    interrupts      integer NOT NULL DEFAULT 0,
    error           text,
    max_attempts    integer NOT NULL DEFAULT 1,
    backoff_base_ns bigint  NOT NULL DEFAULT 0,
    backoff_cap_ns  bigint  NOT NULL DEFAULT 0,
    timeout_ns      bigint  NOT NULL DEFAULT 0,
    not_before      bigint,                      -- waiting out a backoff until then
    PRIMARY KEY (job_id, seq)
);
CREATE UNIQUE INDEX tasks_uuid ON tasks (uuid text_pattern_ops);
CREATE INDEX tasks_waiting ON tasks (job_id, not_before) WHERE not_before IS NOT NULL;

CREATE TABLE results (
    job_id      bigint NOT NULL,
    seq         bigint NOT NULL,
    state       text   NOT NULL CHECK (state IN ('succeeded', 'failed', 'cancelled')),
    attempts    integer NOT NULL,
    result      bytea,                           -- JSON
    error       text,
    time_ns     bigint,
    started_at  bigint,
    finished_at bigint NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- A runner's claim on a task: taken when its producer reads the task,
-- started_at set when the task is durably running.
CREATE TABLE running (
    job_id     bigint NOT NULL,
    seq        bigint NOT NULL,
    runner_id  bigint NOT NULL,
    claimed_at bigint NOT NULL,
    started_at bigint,
    pgid       integer,
    pstart     bigint,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX running_runner ON running (runner_id);

CREATE TABLE attempts (
    job_id      bigint  NOT NULL,
    seq         bigint  NOT NULL,
    attempt     integer NOT NULL,
    state       text    NOT NULL,
    error       text,
    time_ns     bigint  NOT NULL,
    started_at  bigint  NOT NULL,
    finished_at bigint  NOT NULL,
    PRIMARY KEY (job_id, seq, attempt)
);

-- Callback ids are drawn under the transaction-level advisory lock that
-- every writer of callbacks takes last, just before it commits: they are
-- in commit order, so a reader that tails by id never skips one.
CREATE SEQUENCE callbacks_id;
CREATE TABLE callbacks (
    id         bigint  PRIMARY KEY DEFAULT nextval('callbacks_id'),
    event      text    NOT NULL CHECK (event IN ('task', 'job')),
    job_id     bigint  NOT NULL REFERENCES jobs (id),
    task_seq   bigint,
    round      integer NOT NULL DEFAULT 0,
    message    bytea   NOT NULL,                 -- JSON
    result_at  integer,                          -- where the task's result goes back in
    runner_id  bigint  NOT NULL DEFAULT 0,       -- the runner that committed it (0: none, such as pcd cancel)
    created_at bigint  NOT NULL,
    CHECK ((event = 'task') = (task_seq IS NOT NULL))
);
ALTER SEQUENCE callbacks_id OWNED BY callbacks.id;
CREATE INDEX callbacks_job ON callbacks (job_id, id);
CREATE UNIQUE INDEX callbacks_one_per_task ON callbacks (job_id, task_seq, round) WHERE event = 'task';
CREATE UNIQUE INDEX callbacks_one_per_job ON callbacks (job_id, round) WHERE event = 'job';

-- Each runner releases the callbacks it commits (to its log, its
-- output) in id order: per job and runner, the newest it committed and
-- the newest it released. Callbacks above released_id of a runner that is
-- gone are released by another.
CREATE TABLE releases (
    job_id       bigint NOT NULL,
    runner_id    bigint NOT NULL,
    committed_id bigint NOT NULL DEFAULT 0,
    released_id  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, runner_id)
);
CREATE INDEX releases_pending ON releases (job_id) WHERE committed_id > released_id;

CREATE TABLE sink_cursors (
    sink    text   PRIMARY KEY,
    last_id bigint NOT NULL DEFAULT 0
);

CREATE TABLE deliveries (
    callback_id  bigint  NOT NULL REFERENCES callbacks (id),
    sink         text    NOT NULL,
    state        text    NOT NULL CHECK (state IN ('retrying', 'delivered', 'dead')),
    attempts     integer NOT NULL,
    last_error   text,
    delivered_at bigint,
    updated_at   bigint  NOT NULL,
    PRIMARY KEY (callback_id, sink)
);

-- The runners (daemons, pcd run) working this database, each alive while
-- its heartbeat is fresh.
CREATE TABLE runners (
    id           bigserial PRIMARY KEY,
    role         text    NOT NULL,
    host         text    NOT NULL,
    pid          integer NOT NULL,
    version      text    NOT NULL DEFAULT '',
    started_at   bigint  NOT NULL,
    heartbeat_at bigint  NOT NULL,
    lease_ns     bigint  NOT NULL,               -- gone once heartbeat_at + lease_ns has passed
    stopped_at   bigint
);

-- Which runner delivers a sink's callbacks, until when: one at a time, so
-- that a sink gets them in id order.
CREATE TABLE sink_leases (
    sink      text   PRIMARY KEY,
    runner_id bigint NOT NULL,
    until     bigint NOT NULL
);
