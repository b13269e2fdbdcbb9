package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// ErrNotFound is returned when a job or task does not exist.
var ErrNotFound = errors.New("not found")

// State is the state of a job or a task.
type State string

// The states. Succeeded, Failed and Cancelled are final.
const (
	Pending   State = "pending"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// Final reports whether s is an end state.
func (s State) Final() bool { return s == Succeeded || s == Failed || s == Cancelled }

// Job is a row of the jobs table.
type Job struct {
	ID        int64 // submission order
	UUID      string
	Name      string
	State     State
	Sealed    bool // every task has been added
	Round     int
	Workers   int
	QueueSize int
	Total     int64
	Succeeded int64
	Failed    int64
	Cancelled int64
	// Elapsed is the monotonic run time summed over every process that ran
	// the job, as last saved.
	Elapsed    time.Duration
	CreatedAt  time.Time
	StartedAt  time.Time // zero until first started
	FinishedAt time.Time // zero until finished
}

// Done is the number of tasks in a final state.
func (j Job) Done() int64 { return j.Succeeded + j.Failed + j.Cancelled }

// Finished reports whether the job's completion has committed.
func (j Job) Finished() bool { return !j.FinishedAt.IsZero() }

// NewTask is a task to add to a job.
type NewTask struct {
	Kind    string
	Payload []byte // JSON
}

// NewJob describes a job to create.
type NewJob struct {
	Name      string
	Workers   int
	QueueSize int
	Tasks     []NewTask
}

// CreateJob writes a sealed job and all its tasks in one transaction: the
// job exists whole or not at all.
func (db *DB) CreateJob(ctx context.Context, nj NewJob) (Job, error) {
	if nj.Workers <= 0 || nj.QueueSize <= 0 {
		return Job{}, fmt.Errorf("create job: workers and queue size must be positive")
	}
	// Job ids are random (v4) so that a short prefix names a job; task ids
	// are time-ordered (v7) so that their index grows at the end.
	id, err := uuid.NewRandom()
	if err != nil {
		return Job{}, fmt.Errorf("create job: %w", err)
	}
	job := Job{
		UUID: id.String(), Name: nj.Name, State: Pending, Sealed: true,
		Workers: nj.Workers, QueueSize: nj.QueueSize, Total: int64(len(nj.Tasks)),
		CreatedAt: time.Now(),
	}
	err = db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO jobs (uuid, name, state, sealed, workers, queue_size, total, created_at)
			VALUES (?, ?, 'pending', 1, ?, ?, ?, ?)`,
			job.UUID, job.Name, job.Workers, job.QueueSize, job.Total, job.CreatedAt.UnixNano())
		if err != nil {
			return err
		}
		if job.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		return insertTasks(ctx, tx, job.ID, 1, nj.Tasks)
	})
	if err != nil {
		return Job{}, fmt.Errorf("create job: %w", err)
	}
	return job, nil
}

// insertTasks adds tasks numbered from seq on, with one prepared statement.
func insertTasks(ctx context.Context, tx *sql.Tx, jobID, seq int64, tasks []NewTask) error {
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO tasks (job_id, seq, uuid, kind, payload) VALUES (?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for i, t := range tasks {
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		if _, err := stmt.ExecContext(ctx, jobID, seq+int64(i), id.String(), t.Kind, string(t.Payload)); err != nil {
			return fmt.Errorf("task %d: %w", seq+int64(i), err)
		}
	}
	return nil
}

const jobColumns = `id, uuid, name, state, sealed, round, workers, queue_size, total,
	succeeded, failed, cancelled, elapsed_ns, created_at, started_at, finished_at`

type scanner interface{ Scan(...any) error }

func scanJob(s scanner) (Job, error) {
	var (
		j                 Job
		elapsed, created  int64
		started, finished sql.NullInt64
	)
	err := s.Scan(&j.ID, &j.UUID, &j.Name, &j.State, &j.Sealed, &j.Round, &j.Workers, &j.QueueSize,
		&j.Total, &j.Succeeded, &j.Failed, &j.Cancelled, &elapsed, &created, &started, &finished)
	if err != nil {
		return Job{}, err
	}
	j.Elapsed = time.Duration(elapsed)
	j.CreatedAt = time.Unix(0, created)
	if started.Valid {
		j.StartedAt = time.Unix(0, started.Int64)
	}
	if finished.Valid {
		j.FinishedAt = time.Unix(0, finished.Int64)
	}
	return j, nil
}

// Job reads one job by its number.
func (db *DB) Job(ctx context.Context, id int64) (Job, error) {
	j, err := scanJob(db.r.QueryRowContext(ctx, "SELECT "+jobColumns+" FROM jobs WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Job{}, fmt.Errorf("job %d: %w", id, err)
	}
	return j, nil
}

// UnfinishedJobs lists jobs without a committed completion, oldest first.
func (db *DB) UnfinishedJobs(ctx context.Context) ([]Job, error) {
	rows, err := db.r.QueryContext(ctx, "SELECT "+jobColumns+" FROM jobs WHERE finished_at IS NULL ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("unfinished jobs: %w", err)
	}
	defer rows.Close()
	var jobs []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("unfinished jobs: %w", err)
		}
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("unfinished jobs: %w", err)
	}
	return jobs, nil
}

// StartJob marks an unfinished job running and records when it first started.
func (db *DB) StartJob(ctx context.Context, id int64, now time.Time) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE jobs SET state = 'running', started_at = coalesce(started_at, ?)
			WHERE id = ? AND finished_at IS NULL`, now.UnixNano(), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("start job %d: %w", id, err)
	}
	return nil
}

// SaveElapsed records a job's elapsed time so far.
func (db *DB) SaveElapsed(ctx context.Context, id int64, elapsed time.Duration) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE jobs SET elapsed_ns = ? WHERE id = ? AND finished_at IS NULL", int64(elapsed), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("save elapsed of job %d: %w", id, err)
	}
	return nil
}
