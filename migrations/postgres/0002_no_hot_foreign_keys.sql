-- The foreign keys from tasks and callbacks to jobs cost, for every row
-- written, a check that takes a KEY SHARE lock on the job's row; the
-- group commit that writes the callbacks also updates that row (its
-- counters), and a row both locked and updated by one transaction needs a
-- multixact. A million tasks cost a million checks at submit and a
-- million multixact members as they complete. pcd writes a job's tasks
-- and callbacks in the transactions that create and update the job, and
-- deletes them before the job (prune), so the keys checked nothing that
-- the code does not already keep; the crash suite's invariants check it.
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_job_id_fkey;
ALTER TABLE callbacks DROP CONSTRAINT IF EXISTS callbacks_job_id_fkey;
