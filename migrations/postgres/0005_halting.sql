-- The reason a runner halted a job (--halt), written as the policy is
-- met, before the job's tasks are cancelled: every daemon running the job
-- starts no task of it from then on.
ALTER TABLE jobs ADD COLUMN halting text;
