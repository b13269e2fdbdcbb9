package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/pcd-dev/pcd/store"
)

const taskColumns = `t.seq, t.uuid, t.kind, t.payload, t.attempts, t.interrupts,
	t.max_attempts, t.backoff_base_ns, t.backoff_cap_ns, t.timeout_ns, t.not_before`

// unfinished is the condition on a task t that it has no result yet.
const unfinished = `NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq)`

func scanTask(s scanner, t *store.Task) error {
	var base, capNS, timeout int64
	var notBefore sql.NullInt64
	if err := s.Scan(&t.Seq, &t.UUID, &t.Kind, &t.Payload, &t.Attempts, &t.Interrupts,
		&t.Retry.MaxAttempts, &base, &capNS, &timeout, &notBefore); err != nil {
		return err
	}
	t.Retry.BackoffBase, t.Retry.BackoffCap, t.Retry.Timeout = time.Duration(base), time.Duration(capNS), time.Duration(timeout)
	if notBefore.Valid {
		t.NotBefore = time.Unix(0, notBefore.Int64)
	}
	return nil
}

// PendingTasks returns up to limit unfinished tasks of a job with seq after
// afterSeq, in seq order, leaving out those waiting out a backoff until
// after due. Paging by key keeps every page as cheap as the first.
func (db *DB) PendingTasks(ctx context.Context, jobID, afterSeq int64, limit int, due time.Time) ([]store.Task, error) {
	return queryPending(ctx, db.rc, jobID, afterSeq, limit, due.UnixNano())
}

func pendingTx(ctx context.Context, tx *sql.Tx, jobID, afterSeq int64, limit int) ([]store.Task, error) {
	return queryPending(ctx, tx, jobID, afterSeq, limit, math.MaxInt64)
}

// DueTasks returns up to limit of a job's tasks whose backoff ended by
// now, soonest due first: a page, whatever the number waiting, read from
// the index on (job_id, not_before).
func (db *DB) DueTasks(ctx context.Context, jobID int64, now time.Time, limit int) ([]store.Task, error) {
	rows, err := db.rc.QueryContext(ctx, `SELECT `+taskColumns+` FROM tasks t
		WHERE t.job_id = ? AND t.not_before IS NOT NULL AND t.not_before <= ? AND `+unfinished+`
		ORDER BY t.not_before LIMIT ?`, jobID, now.UnixNano(), limit)
	if err != nil {
		return nil, fmt.Errorf("due tasks of job %d: %w", jobID, err)
	}
	defer rows.Close()
	var tasks []store.Task
	for rows.Next() {
		t := store.Task{JobID: jobID}
		if err := scanTask(rows, &t); err != nil {
			return nil, fmt.Errorf("due tasks of job %d: %w", jobID, err)
		}
		tasks = append(tasks, t)
	}
	return tasks, rows.Err()
}

// NextDue reports the earliest due time of a job's tasks that wait out a
// backoff; ok is false when none waits. One index probe.
func (db *DB) NextDue(ctx context.Context, jobID int64) (due time.Time, ok bool, err error) {
	var notBefore int64
	err = db.rc.QueryRowContext(ctx, `SELECT t.not_before FROM tasks t
		WHERE t.job_id = ? AND t.not_before IS NOT NULL AND `+unfinished+` ORDER BY t.not_before LIMIT 1`, jobID).Scan(&notBefore)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("waiting tasks of job %d: %w", jobID, err)
	}
	return time.Unix(0, notBefore), true, nil
}

// MinWaitingSeq is the lowest seq of a job's tasks that wait out a
// backoff, or 0 if none waits. It reads every waiting task: a runner asks
// once, when it starts.
func (db *DB) MinWaitingSeq(ctx context.Context, jobID int64) (int64, error) {
	var seq int64
	err := db.rc.QueryRowContext(ctx, `SELECT coalesce(min(t.seq), 0) FROM tasks t
		WHERE t.job_id = ? AND t.not_before IS NOT NULL AND `+unfinished, jobID).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("waiting tasks of job %d: %w", jobID, err)
	}
	return seq, nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func queryPending(ctx context.Context, q querier, jobID, afterSeq int64, limit int, due int64) ([]store.Task, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+taskColumns+` FROM tasks t
		WHERE t.job_id = ? AND t.seq > ? AND (t.not_before IS NULL OR t.not_before <= ?) AND `+unfinished+`
		ORDER BY t.seq LIMIT ?`,
		jobID, afterSeq, due, limit)
	if err != nil {
		return nil, fmt.Errorf("pending tasks of job %d: %w", jobID, err)
	}
	defer rows.Close()
	// A page of a small job is a task or two: room for a thousand would
	// be most of what a daemon draining such jobs allocates.
	tasks := make([]store.Task, 0, min(limit, 64))
	for rows.Next() {
		t := store.Task{JobID: jobID}
		if err := scanTask(rows, &t); err != nil {
			return nil, fmt.Errorf("pending tasks of job %d: %w", jobID, err)
		}
		tasks = append(tasks, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pending tasks of job %d: %w", jobID, err)
	}
	return tasks, nil
}

// Tasks lists a job's tasks in seq order.
func (db *DB) Tasks(ctx context.Context, jobID int64) ([]store.TaskRow, error) {
	return db.TasksInState(ctx, jobID, "", 0, -1)
}

// TasksInState lists a job's tasks in seq order after afterSeq, only those
// in state unless it is empty, at most limit (negative for all).
func (db *DB) TasksInState(ctx context.Context, jobID int64, state store.State, afterSeq int64, limit int) ([]store.TaskRow, error) {
	q := `SELECT * FROM (SELECT t.seq, t.uuid, t.kind, t.payload, coalesce(r.attempts, t.attempts), t.interrupts,
			CASE WHEN r.state IS NOT NULL THEN r.state WHEN u.seq IS NOT NULL THEN 'running' ELSE 'pending' END AS state,
			r.result, CASE WHEN r.state IS NULL THEN t.error ELSE r.error END, r.time_ns, coalesce(r.started_at, u.started_at), r.finished_at
		FROM tasks t
		LEFT JOIN results r ON r.job_id = t.job_id AND r.seq = t.seq
		LEFT JOIN running u ON u.job_id = t.job_id AND u.seq = t.seq
		WHERE t.job_id = ? AND t.seq > ?)`
	args := []any{jobID, afterSeq}
	switch {
	case state.Final():
		// From the results, not every task: the failed of a million
		// tasks are a few rows of the results_failed index.
		q = `SELECT t.seq, t.uuid, t.kind, t.payload, coalesce(r.attempts, t.attempts), t.interrupts, r.state,
				r.result, r.error, r.time_ns, r.started_at, r.finished_at
			FROM results r JOIN tasks t ON t.job_id = r.job_id AND t.seq = r.seq
			WHERE r.job_id = ? AND r.seq > ? AND r.state = ? ORDER BY r.seq LIMIT ?`
		args = append(args, string(state))
	case state != "":
		q += " WHERE state = ?"
		args = append(args, string(state))
	}
	if !state.Final() {
		q += " ORDER BY seq LIMIT ?"
	}
	rows, err := db.rc.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("tasks of job %d: %w", jobID, err)
	}
	defer rows.Close()
	var out []store.TaskRow
	for rows.Next() {
		var (
			t                         = store.TaskRow{Task: store.Task{JobID: jobID}}
			result, errText           sql.NullString
			timeNS, started, finished sql.NullInt64
		)
		if err := rows.Scan(&t.Seq, &t.UUID, &t.Kind, &t.Payload, &t.Attempts, &t.Interrupts, &t.State,
			&result, &errText, &timeNS, &started, &finished); err != nil {
			return nil, fmt.Errorf("tasks of job %d: %w", jobID, err)
		}
		if result.Valid {
			t.Result = []byte(result.String)
		}
		t.Error = errText.String
		t.Time = time.Duration(timeNS.Int64)
		if started.Valid {
			t.StartedAt = time.Unix(0, started.Int64)
		}
		if finished.Valid {
			t.FinishedAt = time.Unix(0, finished.Int64)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tasks of job %d: %w", jobID, err)
	}
	return out, nil
}

// FindTask finds a task by its uuid or a unique prefix of it.
func (db *DB) FindTask(ctx context.Context, ref string) (store.TaskRow, error) {
	type key struct{ job, seq int64 }
	keys, ref, err := findByPrefix(ctx, db, "task", ref, func(s scanner) (k key, err error) {
		return k, s.Scan(&k.job, &k.seq)
	}, "SELECT job_id, seq FROM tasks WHERE uuid >= ? AND uuid < ? ORDER BY uuid LIMIT 2")
	if err != nil {
		return store.TaskRow{}, err
	}
	if len(keys) == 2 {
		return store.TaskRow{}, fmt.Errorf("task %s: %w: several tasks' ids start so (those of one job share their first 16 characters); give more, or JOB_ID N", ref, store.ErrAmbiguous)
	}
	found, err := db.TasksInState(ctx, keys[0].job, "", keys[0].seq-1, 1)
	if err != nil {
		return store.TaskRow{}, err
	}
	if len(found) == 0 {
		return store.TaskRow{}, fmt.Errorf("task %s: %w", ref, store.ErrNotFound)
	}
	return found[0], nil
}

// Attempts lists a job's recorded attempts, by task and attempt.
func (db *DB) Attempts(ctx context.Context, jobID int64) ([]store.Attempt, error) {
	rows, err := db.rc.QueryContext(ctx, `SELECT seq, attempt, state, coalesce(error, ''), time_ns, started_at, finished_at
		FROM attempts WHERE job_id = ? ORDER BY seq, attempt`, jobID)
	if err != nil {
		return nil, fmt.Errorf("attempts of job %d: %w", jobID, err)
	}
	defer rows.Close()
	var out []store.Attempt
	for rows.Next() {
		var a store.Attempt
		var took, started, finished int64
		if err := rows.Scan(&a.Seq, &a.Attempt, &a.State, &a.Error, &took, &started, &finished); err != nil {
			return nil, fmt.Errorf("attempts of job %d: %w", jobID, err)
		}
		a.Time, a.StartedAt, a.FinishedAt = time.Duration(took), time.Unix(0, started), time.Unix(0, finished)
		out = append(out, a)
	}
	return out, rows.Err()
}
