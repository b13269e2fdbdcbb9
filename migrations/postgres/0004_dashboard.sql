-- Tasks finished per 10 seconds, for the dashboard's throughput chart.
-- Each runner counts its committed results in memory and adds them here
-- about once a second; rows older than a week are deleted as it does.
CREATE TABLE throughput (
    bucket    bigint PRIMARY KEY,            -- unix seconds, a multiple of 10
    succeeded bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0      -- failed or cancelled
);

-- The failed tasks of a job, first on its page, without reading every
-- task: only failures write to it.
CREATE INDEX results_failed ON results (job_id, seq) WHERE state = 'failed';
