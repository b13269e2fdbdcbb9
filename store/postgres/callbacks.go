package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/internal/resultref"
)

// callbackColumns read a callbacks row (as c) for scanCallback, with its
// task's result when the message refers to it.
const callbackColumns = `c.id, c.event, c.job_id, coalesce(c.task_seq, 0), c.round, c.message, c.created_at, c.result_at,
	CASE WHEN c.result_at IS NULL THEN NULL
	ELSE (SELECT r.result FROM results r WHERE r.job_id = c.job_id AND r.seq = c.task_seq) END`

func scanCallback(row pgx.Row) (store.Callback, error) {
	var (
		c        store.Callback
		event    string
		created  int64
		resultAt *int32
		result   []byte
	)
	if err := row.Scan(&c.ID, &event, &c.JobID, &c.TaskSeq, &c.Round, &c.Message, &created, &resultAt, &result); err != nil {
		return store.Callback{}, err
	}
	c.Event = event
	c.CreatedAt = time.Unix(0, created)
	if resultAt != nil {
		msg, err := resultref.Join(c.Message, int(*resultAt), result)
		if err != nil {
			return store.Callback{}, fmt.Errorf("callback %d: %w", c.ID, err)
		}
		c.Message = msg
	}
	return c, nil
}

func queryCallbacks(ctx context.Context, q querier, sql string, args ...any) ([]store.Callback, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	var out []store.Callback
	for rows.Next() {
		cb, err := scanCallback(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, cb)
	}
	return out, classify(rows.Err())
}

// Callbacks lists a job's callback records with id after afterID, in id
// order; unreleasedOnly keeps those not released yet that are this
// runner's to release: its own, and those of runners that are gone (a
// live runner releases its own).
func (db *DB) Callbacks(ctx context.Context, jobID, afterID int64, unreleasedOnly bool) ([]store.Callback, error) {
	q := "SELECT " + callbackColumns + " FROM callbacks c WHERE c.job_id = $1 AND c.id > $2 ORDER BY c.id"
	args := []any{jobID, afterID}
	if unreleasedOnly {
		q = "SELECT " + callbackColumns + ` FROM callbacks c JOIN releases r ON r.job_id = c.job_id AND r.runner_id = c.runner_id
			WHERE c.job_id = $1 AND c.id > $2 AND c.id > r.released_id AND r.committed_id > r.released_id AND ` + releasable + `
			ORDER BY c.id`
		args = append(args, time.Now().UnixNano(), db.runners.id())
	}
	out, err := queryCallbacks(ctx, db.pool, q, args...)
	if err != nil {
		return nil, fmt.Errorf("callbacks of job %d: %w", jobID, err)
	}
	return out, nil
}

// releasable is the condition on a releases row r that this runner ($4)
// releases its callbacks: they are its own, or their runner is gone ($3
// is now).
const releasable = `(r.runner_id = $4 OR NOT EXISTS (SELECT 1 FROM runners g
	WHERE g.id = r.runner_id AND g.stopped_at IS NULL AND g.heartbeat_at + g.lease_ns >= $3))`

// CallbacksAfter returns up to limit callback records with id after
// afterID, in id order, of the given jobs (all if none are given). Ids are
// drawn in commit order (lockCallbacks), so a reader that resumes from
// the last id it saw misses none.
func (db *DB) CallbacksAfter(ctx context.Context, afterID int64, jobIDs []int64, limit int) ([]store.Callback, error) {
	q := "SELECT " + callbackColumns + " FROM callbacks c WHERE c.id > $1"
	args := []any{afterID, limit}
	if len(jobIDs) > 0 {
		q += " AND c.job_id = ANY($3)"
		args = append(args, jobIDs)
	}
	out, err := queryCallbacks(ctx, db.pool, q+" ORDER BY c.id LIMIT $2", args...)
	if err != nil {
		return nil, fmt.Errorf("callbacks after %d: %w", afterID, err)
	}
	return out, nil
}

// LastCallbackID is the newest committed callback record's id, 0 if none.
func (db *DB) LastCallbackID(ctx context.Context) (int64, error) {
	var id int64
	if err := db.pool.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM callbacks").Scan(&id); err != nil {
		return 0, fmt.Errorf("last callback: %w", classify(err))
	}
	return id, nil
}

// UnreleasedJobs lists the jobs with callback records not released yet
// that are this runner's to release (Callbacks), oldest first.
func (db *DB) UnreleasedJobs(ctx context.Context) ([]int64, error) {
	rows, err := db.pool.Query(ctx, `SELECT DISTINCT r.job_id FROM releases r
		WHERE r.committed_id > r.released_id AND `+strings.ReplaceAll(strings.ReplaceAll(releasable, "$3", "$1"), "$4", "$2")+`
		ORDER BY r.job_id`, time.Now().UnixNano(), db.runners.id())
	if err != nil {
		return nil, fmt.Errorf("unreleased callbacks: %w", classify(err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("unreleased callbacks: %w", classify(err))
	}
	return ids, nil
}

// MarkReleased records that a job's callbacks up to span.To are released,
// for each runner that committed some of those from span.From on.
func (db *DB) MarkReleased(ctx context.Context, jobID int64, span store.Span) error {
	err := db.tx(ctx, func(tx pgx.Tx) error { return db.markReleased(ctx, tx, jobID, span) })
	if err != nil {
		return fmt.Errorf("mark callbacks of job %d released: %w", jobID, err)
	}
	return nil
}

// MarkAllReleased records marks of this runner's own callbacks, in one
// transaction.
func (db *DB) MarkAllReleased(ctx context.Context, marks []store.Mark) error {
	if len(marks) == 0 {
		return nil
	}
	err := db.tx(ctx, func(tx pgx.Tx) error {
		for _, m := range marks {
			if err := db.markReleased(ctx, tx, m.JobID, store.Span{To: m.To}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark callbacks released: %w", err)
	}
	return nil
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// markReleased moves the release cursors of a job. Without span.From the
// callbacks are this runner's own (the marks of its group commits); with
// it, each runner that committed callbacks in the span gets its cursor
// moved to its newest there (a runner releasing a gone one's).
func (db *DB) markReleased(ctx context.Context, q execer, jobID int64, span store.Span) error {
	if span.To <= 0 {
		return nil
	}
	if span.From <= 0 {
		_, err := q.Exec(ctx, `INSERT INTO releases (job_id, runner_id, released_id) VALUES ($1, $2, $3)
			ON CONFLICT (job_id, runner_id) DO UPDATE SET released_id = greatest(releases.released_id, EXCLUDED.released_id)`,
			jobID, db.runners.id(), span.To)
		return err
	}
	_, err := q.Exec(ctx, `INSERT INTO releases (job_id, runner_id, released_id)
		SELECT job_id, runner_id, max(id) FROM callbacks WHERE job_id = $1 AND id >= $2 AND id <= $3 GROUP BY job_id, runner_id
		ON CONFLICT (job_id, runner_id) DO UPDATE SET released_id = greatest(releases.released_id, EXCLUDED.released_id)`,
		jobID, span.From, span.To)
	return err
}

// JobReleased reports whether every callback of a job is released.
func (db *DB) JobReleased(ctx context.Context, jobID int64) (bool, error) {
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM releases r WHERE r.job_id = $1 AND r.committed_id > r.released_id)`,
		jobID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("job %d released: %w", jobID, classify(err))
	}
	return ok, nil
}

// CountCallbacks counts the callbacks after afterID of a job (of every
// job if jobID is 0), of one event ("" for both).
func (db *DB) CountCallbacks(ctx context.Context, jobID, afterID int64, event string) (int64, error) {
	// One statement per case, so that each uses its index: the primary
	// key's range for every job, callbacks_job for one.
	q, args := "SELECT count(*) FROM callbacks WHERE id > $1", []any{afterID}
	if jobID != 0 {
		args = append(args, jobID)
		q += fmt.Sprintf(" AND job_id = $%d", len(args))
	}
	if event != "" {
		args = append(args, event)
		q += fmt.Sprintf(" AND event = $%d", len(args))
	}
	var n int64
	if err := db.pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count callbacks: %w", classify(err))
	}
	return n, nil
}
