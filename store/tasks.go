package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Task is a task to run, as the producer reads it.
type Task struct {
	JobID      int64
	Seq        int64
	UUID       string
	Kind       string
	Payload    []byte
	Attempts   int
	Interrupts int
}

// PendingTasks returns up to limit unfinished tasks of a job with seq after
// afterSeq, in seq order. Paging by key keeps every page as cheap as the
// first.
func (db *DB) PendingTasks(ctx context.Context, jobID, afterSeq int64, limit int) ([]Task, error) {
	return queryPending(ctx, db.r, jobID, afterSeq, limit)
}

func pendingTx(ctx context.Context, tx *sql.Tx, jobID, afterSeq int64, limit int) ([]Task, error) {
	return queryPending(ctx, tx, jobID, afterSeq, limit)
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func queryPending(ctx context.Context, q querier, jobID, afterSeq int64, limit int) ([]Task, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, uuid, kind, payload, attempts, interrupts FROM tasks
		WHERE job_id = ? AND seq > ? AND state IN ('pending', 'running') ORDER BY seq LIMIT ?`,
		jobID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("pending tasks of job %d: %w", jobID, err)
	}
	defer rows.Close()
	tasks := make([]Task, 0, limit)
	for rows.Next() {
		t := Task{JobID: jobID}
		if err := rows.Scan(&t.Seq, &t.UUID, &t.Kind, &t.Payload, &t.Attempts, &t.Interrupts); err != nil {
			return nil, fmt.Errorf("pending tasks of job %d: %w", jobID, err)
		}
		tasks = append(tasks, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pending tasks of job %d: %w", jobID, err)
	}
	return tasks, nil
}

// TaskRow is a task with its outcome, for display.
type TaskRow struct {
	Task
	State      State
	Result     []byte
	Error      string
	Time       time.Duration
	StartedAt  time.Time
	FinishedAt time.Time
}

// Tasks lists a job's tasks in seq order.
func (db *DB) Tasks(ctx context.Context, jobID int64) ([]TaskRow, error) {
	return db.TasksInState(ctx, jobID, "", 0, -1)
}

// TasksInState lists a job's tasks in seq order after afterSeq, only those
// in state unless it is empty, at most limit (negative for all).
func (db *DB) TasksInState(ctx context.Context, jobID int64, state State, afterSeq int64, limit int) ([]TaskRow, error) {
	q := `SELECT seq, uuid, kind, payload, attempts, interrupts, state,
		result, error, time_ns, started_at, finished_at FROM tasks WHERE job_id = ? AND seq > ?`
	args := []any{jobID, afterSeq}
	if state != "" {
		q += " AND state = ?"
		args = append(args, string(state))
	}
	rows, err := db.r.QueryContext(ctx, q+" ORDER BY seq LIMIT ?", append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("tasks of job %d: %w", jobID, err)
	}
	defer rows.Close()
	var out []TaskRow
	for rows.Next() {
		var (
			t                         = TaskRow{Task: Task{JobID: jobID}}
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
