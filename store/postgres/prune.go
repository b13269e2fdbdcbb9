package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pcd-dev/pcd/store"
)

// pruneChunk is how many rows of a table one prune transaction deletes.
const pruneChunk = 5000

// FinishedBefore lists up to limit jobs, oldest first, that finished
// before t and have an id above after.
func (db *DB) FinishedBefore(ctx context.Context, t time.Time, after int64, limit int) ([]store.Job, error) {
	jobs, err := queryJobs(ctx, db.pool, "SELECT "+jobColumns+` FROM jobs WHERE finished_at IS NOT NULL AND finished_at < $1 AND id > $2
		ORDER BY id LIMIT $3`, t.UnixNano(), after, limit)
	if err != nil {
		return nil, fmt.Errorf("finished jobs: %w", err)
	}
	return jobs, nil
}

// DeleteJob removes a finished job and everything of it, in transactions
// of at most pruneChunk rows each; it refuses a job that is not finished,
// and returns the rows it deleted.
func (db *DB) DeleteJob(ctx context.Context, jobID int64) (int64, error) {
	var total int64
	step := func(q string, args ...any) (int64, error) {
		var n int64
		err := db.tx(ctx, func(tx pgx.Tx) error {
			var done bool
			if err := tx.QueryRow(ctx, "SELECT finished_at IS NOT NULL FROM jobs WHERE id = $1", jobID).Scan(&done); err != nil {
				return err
			}
			if !done {
				return store.Conflictf("job %d is not finished: it cannot be pruned", jobID)
			}
			tag, err := tx.Exec(ctx, q, args...)
			n = tag.RowsAffected()
			return err
		})
		return n, err
	}
	if _, err := step(`UPDATE jobs SET pruning = true WHERE id = $1`, jobID); err != nil {
		return 0, fmt.Errorf("prune job %d: %w", jobID, err)
	}
	for _, q := range []string{
		`DELETE FROM deliveries WHERE (callback_id, sink) IN (SELECT d.callback_id, d.sink FROM deliveries d
			JOIN callbacks c ON c.id = d.callback_id WHERE c.job_id = $1 LIMIT $2)`,
		`DELETE FROM callbacks WHERE id IN (SELECT id FROM callbacks WHERE job_id = $1 LIMIT $2)`,
		`DELETE FROM attempts WHERE (job_id, seq, attempt) IN (SELECT job_id, seq, attempt FROM attempts WHERE job_id = $1 LIMIT $2)`,
		`DELETE FROM results WHERE (job_id, seq) IN (SELECT job_id, seq FROM results WHERE job_id = $1 LIMIT $2)`,
		`DELETE FROM running WHERE (job_id, seq) IN (SELECT job_id, seq FROM running WHERE job_id = $1 LIMIT $2)`,
		`DELETE FROM tasks WHERE (job_id, seq) IN (SELECT job_id, seq FROM tasks WHERE job_id = $1 LIMIT $2)`,
	} {
		for {
			n, err := step(q, jobID, pruneChunk)
			if err != nil {
				return total, fmt.Errorf("prune job %d: %w", jobID, err)
			}
			total += n
			if n < pruneChunk {
				break
			}
		}
	}
	n, err := step(`DELETE FROM jobs WHERE id = $1`, jobID)
	if err != nil {
		return total, fmt.Errorf("prune job %d: %w", jobID, err)
	}
	return total + n, nil
}

// AddThroughput adds counts of finished tasks to their spans, and deletes
// the counts older than store.ThroughputKept. The spans are taken in
// order, so that runners adding at once never deadlock.
func (db *DB) AddThroughput(ctx context.Context, spans []store.Throughput) error {
	at := make([]int64, len(spans))
	ok := make([]int64, len(spans))
	bad := make([]int64, len(spans))
	for i, sp := range spans {
		at[i], ok[i], bad[i] = sp.At.Unix(), sp.Succeeded, sp.Failed
	}
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO throughput (bucket, succeeded, failed)
			SELECT b, sum(s), sum(f) FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(b, s, f) GROUP BY b ORDER BY b
			ON CONFLICT (bucket) DO UPDATE SET succeeded = throughput.succeeded + excluded.succeeded, failed = throughput.failed + excluded.failed`,
			at, ok, bad); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM throughput WHERE bucket < $1", time.Now().Add(-store.ThroughputKept).Unix())
		return err
	})
	if err != nil {
		return fmt.Errorf("add throughput: %w", classify(err))
	}
	return nil
}

// Throughput reads the counts of finished tasks since a time.
func (db *DB) Throughput(ctx context.Context, since time.Time) ([]store.Throughput, error) {
	rows, err := db.pool.Query(ctx, "SELECT bucket, succeeded, failed FROM throughput WHERE bucket >= $1 ORDER BY bucket", since.Unix())
	if err != nil {
		return nil, fmt.Errorf("throughput: %w", classify(err))
	}
	defer rows.Close()
	var out []store.Throughput
	for rows.Next() {
		var sp store.Throughput
		var at int64
		if err := rows.Scan(&at, &sp.Succeeded, &sp.Failed); err != nil {
			return nil, fmt.Errorf("throughput: %w", classify(err))
		}
		sp.At = time.Unix(at, 0)
		out = append(out, sp)
	}
	return out, classify(rows.Err())
}
