-- The kinds of a job's tasks, a JSON array of distinct names: a runner
-- takes only the jobs whose every kind it knows. waiting says why a job
-- waits for another runner (a kind this one does not know).
ALTER TABLE jobs ADD COLUMN kinds jsonb;
ALTER TABLE jobs ADD COLUMN waiting text;
UPDATE jobs SET kinds = (SELECT coalesce(jsonb_agg(DISTINCT kind ORDER BY kind), '[]'::jsonb)
	FROM tasks WHERE tasks.job_id = jobs.id)
WHERE finished_at IS NULL;
