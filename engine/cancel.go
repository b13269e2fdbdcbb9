package engine

import (
	"context"

	"github.com/pcd-dev/pcd/store"
)

// CancelJob cancels a job's unfinished tasks, each with its task callback,
// and completes the job as cancelled, in one transaction. A runner running
// the job stops its tasks when it notices. The caller should Wake the
// runner.
func CancelJob(ctx context.Context, db *store.DB, jobID int64) (store.Job, error) {
	job, err := db.Job(ctx, jobID)
	if err != nil {
		return store.Job{}, err
	}
	return db.CancelJob(ctx, jobID,
		func(t store.Task) ([]byte, error) {
			return Event{Type: store.EventTask, JobID: job.UUID, Task: &TaskEvent{
				ID: t.UUID, Number: t.Seq, Kind: t.Kind, State: store.Cancelled, Attempts: t.Attempts, Error: "cancelled",
			}}.MarshalJSON()
		},
		func(j store.Job) ([]byte, error) { return jobEvent(j).MarshalJSON() })
}
