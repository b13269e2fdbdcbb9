package engine

import (
	"context"
	"time"

	"github.com/pcd-dev/pcd/engine/sink"
	"github.com/pcd-dev/pcd/store"
)

// PruneResult is what Prune did.
type PruneResult struct {
	Jobs     int   // jobs removed
	Rows     int64 // rows removed, all tables
	Kept     int   // finished jobs kept: a sink has not delivered their callbacks
	Vacuumed bool  // the file was rewritten once to turn on incremental vacuum
	// SpoolErrors counts the removed jobs whose spool files could not be
	// removed.
	SpoolErrors int
	Before      int64 // the file's size before, bytes (with its WAL)
	After       int64 // and after
}

// prune removes jobs that finished before before, with everything of
// theirs, then gives the space back to the file system. A job with a
// callback that a sink (the runner's output, a hook, a webhook) has not
// delivered yet is kept, unless force. It works in short transactions: a
// runner goes on meanwhile. A database made before pcd gave space back
// is rewritten once (VACUUM) only if vacuum: that holds the write lock
// for as long as it takes, which a daemon's background prune must not.
//
// Each removed job's spool files in spoolDir (see SpoolPath) go too.
func prune(ctx context.Context, db store.Store, spoolDir string, before time.Time, force, vacuum bool) (PruneResult, error) {
	res := PruneResult{Before: db.Size()}
	var after int64
	for {
		jobs, err := db.FinishedBefore(ctx, before, after, 100)
		if err != nil {
			return res, err
		}
		if len(jobs) == 0 {
			break
		}
		for _, j := range jobs {
			after = j.ID
			if !force {
				left, err := undelivered(ctx, db, j)
				if err != nil {
					return res, err
				}
				if left > 0 {
					res.Kept++
					continue
				}
			}
			n, err := db.DeleteJob(ctx, j.ID)
			res.Rows += n
			if err != nil {
				return res, err
			}
			res.Jobs++
			if err := RemoveSpool(spoolDir, j.UUID); err != nil {
				res.SpoolErrors++
			}
		}
	}
	if res.Jobs > 0 {
		vacuumed, err := db.Reclaim(ctx, vacuum)
		res.Vacuumed = vacuumed
		if err != nil {
			return res, err
		}
	}
	res.After = db.Size()
	return res, nil
}

// Undelivered counts a job's callbacks that some sink has yet to deliver:
// the runner's output, the job's own hooks and webhooks, and the daemon's
// sinks that the database knows of.
func undelivered(ctx context.Context, db store.Store, job store.Job) (int, error) {
	cbs, err := db.Callbacks(ctx, job.ID, 0, false)
	if err != nil || len(cbs) == 0 {
		return 0, err
	}
	n, err := sink.Pending(ctx, db, job)
	if err != nil {
		return 0, err
	}
	cursors, err := db.SinkCursors(ctx)
	if err != nil {
		return 0, err
	}
	released, err := db.JobReleased(ctx, job.ID)
	if err != nil {
		return 0, err
	}
	if !released {
		n++
	}
	for name, cursor := range cursors {
		event, ok := DaemonSinkEvent(name)
		if !ok {
			continue
		}
		for _, cb := range cbs {
			if cb.ID > cursor && (event == "" || cb.Event == event) {
				n++
			}
		}
	}
	return n, nil
}
