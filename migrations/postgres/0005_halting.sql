-- The reason a runner halted a job (--halt), written as the policy is
-- met, before the job's tasks are cancelled: every daemon running the job
-- starts no task of it from then on.
ALTER TABLE jobs ADD COLUMN halting text;

-- The interruptions a task had when its job was last retried (pcd retry):
-- the limit on interruptions in a row counts from there, while
-- interrupts keeps the whole history for display.
ALTER TABLE tasks ADD COLUMN interrupts_base integer NOT NULL DEFAULT 0;
