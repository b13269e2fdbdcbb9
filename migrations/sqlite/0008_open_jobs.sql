-- Jobs still being streamed (not sealed), for the runner's check that
-- their submitter is alive: found without scanning every unfinished job.
CREATE INDEX jobs_open ON jobs (id) WHERE sealed = 0 AND finished_at IS NULL;

-- Jobs with sinks of their own that are unfinished or finished lately,
-- for the deliverers a daemon keeps running.
CREATE INDEX jobs_sinks_finished ON jobs (finished_at) WHERE sinks IS NOT NULL;
