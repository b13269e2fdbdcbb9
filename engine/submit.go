package engine

import (
	"context"
	"fmt"

	"github.com/pcd-dev/pcd/store"
)

// resolveAfter finds the jobs a new job waits for, by id or unique
// prefix.
func resolveAfter(ctx context.Context, db store.Store, refs []string) ([]int64, error) {
	ids := make([]int64, 0, len(refs))
	for _, ref := range refs {
		j, err := db.FindJob(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("after %s: %w", ref, err)
		}
		ids = append(ids, j.ID)
	}
	return ids, nil
}

// submit validates a job as pcd submit does (its settings, and every
// task's kind, payload, payload size and retry settings against reg) and
// creates it whole. A job that does not validate is an ErrBadJob error,
// and nothing is written. With a Key that a job has already, that job is
// returned with store.ErrDuplicate.
func submit(ctx context.Context, db store.Store, reg *Registry, jf JobFile) (store.Job, error) {
	if err := jf.Validate(reg); err != nil {
		return store.Job{}, err
	}
	if err := CheckLimits(jf.Limits); err != nil {
		return store.Job{}, badJob("%w", err)
	}
	nj := jf.NewJob()
	var err error
	if nj.After, err = resolveAfter(ctx, db, jf.After); err != nil {
		return store.Job{}, err
	}
	return db.CreateJob(ctx, nj)
}

// submitTx validates a job as submit does and creates it inside tx, the
// caller's own transaction on db's database (see Client.SubmitTx).
func submitTx(ctx context.Context, db store.Store, tx any, reg *Registry, jf JobFile) (store.Job, error) {
	creator, ok := db.(store.TxCreator)
	if !ok {
		return store.Job{}, fmt.Errorf("submit: the store of %s cannot create a job in the caller's transaction", db.Path())
	}
	if err := jf.Validate(reg); err != nil {
		return store.Job{}, err
	}
	if err := CheckLimits(jf.Limits); err != nil {
		return store.Job{}, badJob("%w", err)
	}
	nj := jf.NewJob()
	if nj.More != nil {
		return store.Job{}, badJob("a job submitted in a transaction must hold its tasks (JobFile.Tasks), not read them from a file")
	}
	var err error
	if nj.After, err = resolveAfter(ctx, db, jf.After); err != nil {
		return store.Job{}, err
	}
	return creator.CreateJobTx(ctx, tx, nj)
}

// retryJob puts a finished job's failed and cancelled tasks back to
// pending, in a new round, and wakes the database's runner.
func retryJob(ctx context.Context, db store.Store, jobID int64) (store.Job, error) {
	job, err := db.RetryJob(ctx, jobID)
	if err == nil {
		_ = db.Wake()
	}
	return job, err
}
