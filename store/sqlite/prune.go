package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// pruneChunk is how many rows of a table one prune transaction deletes:
// a few milliseconds of the write lock, so that runners and submits wait
// at most that long.
const pruneChunk = 5000

// FinishedBefore lists up to limit jobs, oldest first, that finished
// before t and have an id above after.
func (db *DB) FinishedBefore(ctx context.Context, t time.Time, after int64, limit int) ([]store.Job, error) {
	return db.queryJobs(ctx, "SELECT "+jobColumns+` FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? AND id > ?
		ORDER BY id LIMIT ?`, t.UnixNano(), after, limit)
}

// DeleteJob removes a finished job (or one left staging) and everything of it: its deliveries,
// callbacks, attempts, results, start marks and tasks, then the job. It
// works in transactions of at most pruneChunk rows, so it never holds the
// write lock for long; a job cut short by a crash is still finished, with
// fewer rows, and a second DeleteJob ends the work. It refuses a job that
// is not finished. It returns the rows it deleted.
func (db *DB) DeleteJob(ctx context.Context, jobID int64) (int64, error) {
	var total int64
	step := func(q string, args ...any) (int64, error) {
		var n int64
		err := db.txAt(ctx, "prune", func(tx *sql.Tx) error {
			var done bool
			if err := tx.QueryRowContext(ctx, "SELECT finished_at IS NOT NULL OR staging = 1 FROM jobs WHERE id = ?", jobID).Scan(&done); err != nil {
				return err
			}
			if !done {
				return store.Conflictf("job %d is not finished: it cannot be pruned", jobID)
			}
			res, err := tx.ExecContext(ctx, q, args...)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		return n, err
	}
	// Marked first: pcd retry refuses a job being pruned.
	if _, err := step(`UPDATE jobs SET pruning = 1 WHERE id = ?`, jobID); err != nil {
		return 0, fmt.Errorf("prune job %d: %w", jobID, err)
	}
	// Children before parents: deliveries before their callbacks, and
	// attempts before their tasks. Each statement takes at most
	// pruneChunk rows, and runs again until it takes fewer.
	drain := func(q string) error {
		for {
			n, err := step(q, jobID, pruneChunk)
			if err != nil {
				return fmt.Errorf("prune job %d: %w", jobID, err)
			}
			total += n
			if n < pruneChunk {
				return nil
			}
		}
	}
	for {
		if err := drain(`DELETE FROM deliveries WHERE callback_id IN (SELECT id FROM callbacks WHERE job_id = ?1 ORDER BY id LIMIT ?2)`); err != nil {
			return total, err
		}
		n, err := step(`DELETE FROM callbacks WHERE id IN (SELECT id FROM callbacks WHERE job_id = ?1 ORDER BY id LIMIT ?2)`, jobID, pruneChunk)
		if err != nil {
			return total, fmt.Errorf("prune job %d: %w", jobID, err)
		}
		total += n
		if n < pruneChunk {
			break
		}
	}
	for _, q := range []string{
		`DELETE FROM attempts WHERE (job_id, seq, attempt) IN (SELECT job_id, seq, attempt FROM attempts WHERE job_id = ?1 LIMIT ?2)`,
		`DELETE FROM results WHERE (job_id, seq) IN (SELECT job_id, seq FROM results WHERE job_id = ?1 LIMIT ?2)`,
		`DELETE FROM running WHERE (job_id, seq) IN (SELECT job_id, seq FROM running WHERE job_id = ?1 LIMIT ?2)`,
		`DELETE FROM tasks WHERE (job_id, seq) IN (SELECT job_id, seq FROM tasks WHERE job_id = ?1 LIMIT ?2)`,
	} {
		if err := drain(q); err != nil {
			return total, err
		}
	}
	n, err := step(`DELETE FROM jobs WHERE id = ?`, jobID)
	if err != nil {
		return total, fmt.Errorf("prune job %d: %w", jobID, err)
	}
	return total + n, nil
}

// execWhenFree runs a writing statement outside a transaction, waiting
// for the write lock as a transaction does.
func (db *DB) execWhenFree(ctx context.Context, q string) (sql.Result, error) {
	var res sql.Result
	err := db.whenFree(ctx, func() (err error) {
		res, err = db.w.ExecContext(ctx, q)
		return err
	})
	return res, err
}

// Reclaim gives the free pages back to the file system: an incremental
// vacuum, a bounded number of pages per transaction. A database made
// before auto_vacuum was set has none to give: it is rewritten once with
// VACUUM (vacuumed is then true), which holds the write lock for as long
// as it takes and needs room for a copy of the file: only if vacuum.
func (db *DB) Reclaim(ctx context.Context, vacuum bool) (vacuumed bool, err error) {
	var mode int
	if err := db.w.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&mode); err != nil {
		return false, fmt.Errorf("reclaim: %w", classify(err))
	}
	if mode != 2 { // not INCREMENTAL
		if !vacuum {
			return false, nil
		}
		if _, err := db.execWhenFree(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
			return false, fmt.Errorf("reclaim: %w", classify(err))
		}
		if _, err := db.execWhenFree(ctx, "VACUUM"); err != nil {
			return false, fmt.Errorf("reclaim: vacuum: %w", classify(err))
		}
		_, _ = db.w.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
		return true, nil
	}
	for {
		var free int64
		if err := db.w.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free); err != nil {
			return false, fmt.Errorf("reclaim: %w", classify(err))
		}
		if free == 0 {
			// Out of the WAL too, so that the file's size says it.
			_, _ = db.w.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
			return false, nil
		}
		if _, err := db.execWhenFree(ctx, "PRAGMA incremental_vacuum(2048)"); err != nil {
			return false, fmt.Errorf("reclaim: %w", classify(err))
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
}

// Size is the database file's size in bytes, with its WAL.
func (db *DB) Size() int64 {
	var n int64
	for _, p := range []string{db.path, db.path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// AddThroughput adds counts of finished tasks to their spans, and deletes
// the counts older than store.ThroughputKept.
func (db *DB) AddThroughput(ctx context.Context, spans []store.Throughput) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		for _, sp := range spans {
			if _, err := tx.ExecContext(ctx, `INSERT INTO throughput (bucket, succeeded, failed) VALUES (?, ?, ?)
				ON CONFLICT (bucket) DO UPDATE SET succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed`,
				sp.At.Unix(), sp.Succeeded, sp.Failed); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, "DELETE FROM throughput WHERE bucket < ?", time.Now().Add(-store.ThroughputKept).Unix())
		return err
	})
	if err != nil {
		return fmt.Errorf("add throughput: %w", err)
	}
	return nil
}

// Throughput reads the counts of finished tasks since a time.
func (db *DB) Throughput(ctx context.Context, since time.Time) ([]store.Throughput, error) {
	out, err := queryAll(ctx, db.rc, func(s scanner) (store.Throughput, error) {
		var sp store.Throughput
		var at int64
		err := s.Scan(&at, &sp.Succeeded, &sp.Failed)
		sp.At = time.Unix(at, 0)
		return sp, err
	}, "SELECT bucket, succeeded, failed FROM throughput WHERE bucket >= ? ORDER BY bucket", since.Unix())
	if err != nil {
		return nil, fmt.Errorf("throughput: %w", err)
	}
	return out, nil
}
