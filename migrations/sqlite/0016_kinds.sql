-- The kinds of a job's tasks, a JSON array of distinct names: a runner
-- takes only the jobs whose every kind it knows. waiting says why a job
-- waits for another runner (a kind this one does not know).
ALTER TABLE jobs ADD COLUMN kinds TEXT;
ALTER TABLE jobs ADD COLUMN waiting TEXT;
UPDATE jobs SET kinds = (SELECT json_group_array(kind) FROM
	(SELECT DISTINCT kind FROM tasks WHERE tasks.job_id = jobs.id ORDER BY kind))
WHERE finished_at IS NULL;
