package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/internal/resultref"
)

// callbackColumns read a callbacks row (as c) for scanCallback: with its
// result from the results row when the message refers to it.
const callbackColumns = `c.id, c.event, c.job_id, coalesce(c.task_seq, 0), c.round, c.message, c.created_at, c.result_at,
	CASE WHEN c.result_at IS NULL THEN NULL
	ELSE (SELECT r.result FROM results r WHERE r.job_id = c.job_id AND r.seq = c.task_seq) END`

func scanCallback(s scanner) (store.Callback, error) {
	var (
		c        store.Callback
		created  int64
		resultAt sql.NullInt64
		result   []byte
	)
	if err := s.Scan(&c.ID, &c.Event, &c.JobID, &c.TaskSeq, &c.Round, &c.Message, &created, &resultAt, &result); err != nil {
		return store.Callback{}, err
	}
	c.CreatedAt = time.Unix(0, created)
	if resultAt.Valid {
		msg, err := resultref.Join(c.Message, int(resultAt.Int64), result)
		if err != nil {
			return store.Callback{}, fmt.Errorf("callback %d: %w", c.ID, err)
		}
		c.Message = msg
	}
	return c, nil
}

// Callbacks lists a job's callback records with id after afterID, in id
// order; unreleasedOnly keeps those the runner has not delivered yet.
func (db *DB) Callbacks(ctx context.Context, jobID, afterID int64, unreleasedOnly bool) ([]store.Callback, error) {
	q := "SELECT " + callbackColumns + " FROM callbacks c WHERE c.job_id = ?1 AND c.id > ?2"
	if unreleasedOnly {
		q += " AND c.id > (SELECT released_id FROM jobs WHERE id = ?1)"
	}
	out, err := queryAll(ctx, db.rc, scanCallback, q+" ORDER BY c.id", jobID, afterID)
	if err != nil {
		return nil, fmt.Errorf("callbacks of job %d: %w", jobID, err)
	}
	return out, nil
}

// CallbacksAfter returns up to limit callback records with id after
// afterID, in id order, of the given jobs (all jobs if none are given).
// Readers such as pcd watch resume from the last id they saw.
func (db *DB) CallbacksAfter(ctx context.Context, afterID int64, jobIDs []int64, limit int) ([]store.Callback, error) {
	q := "SELECT " + callbackColumns + " FROM callbacks c WHERE c.id > ?"
	args := []any{afterID}
	if len(jobIDs) > 0 {
		q += " AND c.job_id IN (?" + strings.Repeat(", ?", len(jobIDs)-1) + ")"
		for _, id := range jobIDs {
			args = append(args, id)
		}
	}
	out, err := queryAll(ctx, db.rc, scanCallback, q+" ORDER BY c.id LIMIT ?", append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("callbacks after %d: %w", afterID, err)
	}
	return out, nil
}

// LastCallbackID is the newest committed callback record's id, 0 if none.
func (db *DB) LastCallbackID(ctx context.Context) (int64, error) {
	var id int64
	if err := db.rc.QueryRowContext(ctx, "SELECT coalesce(max(id), 0) FROM callbacks").Scan(&id); err != nil {
		return 0, fmt.Errorf("last callback: %w", err)
	}
	return id, nil
}

// UnreleasedJobs lists the jobs that have callback records the runner
// has not released yet (to its output: the log, stdout), oldest first.
func (db *DB) UnreleasedJobs(ctx context.Context) ([]int64, error) {
	rows, err := db.rc.QueryContext(ctx, `SELECT id FROM jobs j
		WHERE EXISTS (SELECT 1 FROM callbacks c WHERE c.job_id = j.id AND c.id > j.released_id) ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("undelivered callbacks: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("undelivered callbacks: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// MarkReleased records that the runner released a job's callbacks up to
// span.To. It releases them in id order, so that is all of them up to there.
func (db *DB) MarkReleased(ctx context.Context, jobID int64, span store.Span) error {
	if err := db.statementsReady(ctx); err != nil {
		return fmt.Errorf("mark callbacks of job %d delivered: %w", jobID, err)
	}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		return db.markReleased(ctx, tx, jobID, span)
	})
	if err != nil {
		return fmt.Errorf("mark callbacks of job %d delivered: %w", jobID, err)
	}
	return nil
}

// MarkAllReleased is MarkReleased for several jobs, in one transaction.
func (db *DB) MarkAllReleased(ctx context.Context, marks []store.Mark) error {
	if len(marks) == 0 {
		return nil
	}
	if err := db.statementsReady(ctx); err != nil {
		return fmt.Errorf("mark callbacks delivered: %w", err)
	}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		for _, m := range marks {
			if err := db.markReleased(ctx, tx, m.JobID, store.Span{To: m.To}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark callbacks delivered: %w", err)
	}
	return nil
}

func (db *DB) markReleased(ctx context.Context, tx *sql.Tx, jobID int64, span store.Span) error {
	if span.To <= 0 {
		return nil
	}
	_, err := tx.StmtContext(ctx, db.stmts.released).ExecContext(ctx, span.To, jobID)
	return err
}

// JobReleased reports whether the runner has released every callback of a
// job, its job callback included: a runner does that only once it has
// stopped running the job.
func (db *DB) JobReleased(ctx context.Context, jobID int64) (bool, error) {
	var ok bool
	err := db.rc.QueryRowContext(ctx, `SELECT j.released_id >= coalesce((SELECT max(id) FROM callbacks c WHERE c.job_id = j.id), 0)
		FROM jobs j WHERE j.id = ?`, jobID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("job %d released: %w", jobID, err)
	}
	return ok, nil
}

// CountCallbacks counts the callbacks after afterID of a job (of every
// job if jobID is 0), of one event ("" for both).
func (db *DB) CountCallbacks(ctx context.Context, jobID, afterID int64, event string) (int64, error) {
	// One statement per case, so that each uses its index: the primary
	// key's range for every job, callbacks_job for one.
	q, args := "SELECT count(*) FROM callbacks WHERE id > ?", []any{afterID}
	if jobID != 0 {
		args = append(args, jobID)
		q += " AND job_id = ?"
	}
	if event != "" {
		args = append(args, event)
		q += " AND event = ?"
	}
	var n int64
	if err := db.rc.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count callbacks: %w", err)
	}
	return n, nil
}
