package engine

import (
	"context"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// cancelJob cancels a job's unfinished tasks, each with its task callback,
// and completes the job as cancelled, in one transaction, then wakes the
// database's runner: one running the job stops its tasks.
func cancelJob(ctx context.Context, db store.Store, jobID int64) (store.Job, error) {
	return cancelJobBecause(ctx, db, jobID, "")
}

// cancelJobBecause cancels a job as cancelJob does, with the reason in
// its job callback ("reason"), and in its tasks' errors.
func cancelJobBecause(ctx context.Context, db store.Store, jobID int64, reason string) (store.Job, error) {
	job, err := db.Job(ctx, jobID)
	if err != nil {
		return store.Job{}, err
	}
	taskErr := "cancelled"
	if reason != "" {
		taskErr = "cancelled: " + reason
	}
	done, err := db.CancelJob(ctx, jobID,
		func(t store.Task) ([]byte, error) {
			return taskEvent(job.UUID, t, store.Cancelled, 0, nil, taskErr).MarshalJSON()
		},
		func(j store.Job) ([]byte, error) {
			ev := jobEvent(j)
			ev.Job.Reason = reason
			return ev.MarshalJSON()
		})
	if err == nil {
		_ = db.Wake()
	}
	return done, err
}

// waitStopped waits until the runner of a cancelled job has stopped it:
// its running tasks are stopped, no new one starts, and the job's
// callbacks are released. Call it after cancelJob when the job was
// running under a live runner. It returns when ctx ends.
func waitStopped(ctx context.Context, db store.Store, jobID int64) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		done, err := db.JobReleased(ctx, jobID)
		if err != nil || done {
			return err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
