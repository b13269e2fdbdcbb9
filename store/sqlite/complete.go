package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/internal/resultref"
)

// CompleteTasks commits a batch: each result and its task-callback record
// are written in the same transaction. A task that is already final keeps
// its first result and gets no second callback. The batches of jobs that
// commit at once share a transaction (see commitQueue).
func (db *DB) CompleteTasks(ctx context.Context, b store.Batch) (store.Committed, error) {
	if err := db.statementsReady(ctx); err != nil {
		return store.Committed{}, fmt.Errorf("complete tasks of job %d: %w", b.JobID, err)
	}
	p := &pendingCommit{batch: b, wake: make(chan struct{})}
	db.commits.do(ctx, p, db.completeGroup)
	return p.out, p.err
}

// completeGroup commits the batches of a group in one transaction. If one
// of them fails, each is tried again alone, so that its error is its own
// and the others commit.
func (db *DB) completeGroup(ctx context.Context, group []*pendingCommit) {
	if len(group) == 1 {
		p := group[0]
		p.out, p.err = db.complete(ctx, p.batch)
		return
	}
	// Another job's batch must not fail for this caller's cancellation.
	ctx = context.WithoutCancel(ctx)
	now := time.Now()
	finish := false
	failed := -1
	// Each batch carries every release mark that its runner has not seen
	// recorded: the group's batches carry the same ones, written once.
	marks := map[int64]int64{}
	for _, p := range group {
		for _, m := range p.batch.Marks {
			marks[m.JobID] = max(marks[m.JobID], m.To)
		}
	}
	err := db.txPoints(ctx, finishPoint(&finish), func(tx *sql.Tx) error {
		for i, p := range group {
			b := p.batch
			b.Marks = nil
			out, err := db.completeTx(ctx, tx, b, now)
			if err != nil {
				failed = i
				return err
			}
			p.out = out
			finish = finish || out.JobCallback != nil
		}
		for job, to := range marks {
			if err := db.markReleased(ctx, tx, job, store.Span{To: to}); err != nil {
				return err
			}
		}
		return nil
	})
	for _, p := range group {
		switch {
		case err == nil:
		case failed < 0:
			// Beginning or committing failed: the same for every batch.
			p.out, p.err = store.Committed{}, fmt.Errorf("complete tasks of job %d: %w", p.batch.JobID, err)
		default:
			p.out, p.err = db.complete(ctx, p.batch)
		}
	}
}

// finishPoint names the failpoints of a group commit: "finish" once it
// finishes a job (*finish), else "complete".
func finishPoint(finish *bool) func() string {
	return func() string {
		if *finish {
			return "finish"
		}
		return "complete"
	}
}

// complete commits one batch in a transaction of its own.
func (db *DB) complete(ctx context.Context, b store.Batch) (store.Committed, error) {
	var out store.Committed
	finish := false
	err := db.txPoints(ctx, finishPoint(&finish), func(tx *sql.Tx) error {
		var err error
		out, err = db.completeTx(ctx, tx, b, time.Now())
		finish = out.JobCallback != nil
		return err
	})
	if err != nil {
		return store.Committed{}, fmt.Errorf("complete tasks of job %d: %w", b.JobID, err)
	}
	return out, nil
}

// completeTx writes a batch in tx.
func (db *DB) completeTx(ctx context.Context, tx *sql.Tx, b store.Batch, now time.Time) (store.Committed, error) {
	out := store.Committed{Started: make([]bool, len(b.Starts))}
	if err := db.markStarts(ctx, tx, b, out.Started); err != nil {
		return out, err
	}
	stop := tx.StmtContext(ctx, db.stmts.stop)
	for _, seq := range b.Interrupted {
		if _, err := stop.ExecContext(ctx, b.JobID, seq); err != nil {
			return out, fmt.Errorf("requeue task %d: %w", seq, err)
		}
	}
	applied, err := db.finalResults(ctx, tx, b)
	if err != nil {
		return out, err
	}
	f := store.Finals{Now: now}
	for i := range b.Results {
		if err := db.recordOutcome(ctx, tx, b, i, applied, &f); err != nil {
			return out, err
		}
	}
	out.Callbacks, out.ResultIndex = f.Callbacks, f.Index
	if len(applied) > 0 {
		// Start marks of tasks now final: at most the job's workers
		// plus a batch of starts, each checked by primary key.
		if _, err := tx.StmtContext(ctx, db.stmts.finished).ExecContext(ctx, b.JobID); err != nil {
			return out, err
		}
	}
	if err := db.insertTaskCallbacks(ctx, tx, out.Callbacks, f.Results, now); err != nil {
		return out, err
	}
	out.Job, out.JobCallback, err = db.countAndFinish(ctx, tx, b, f.Counts, now)
	return out, err
}

// markStarts writes the batch's start marks; started[i] is false for a
// task that is final already and must not run.
func (db *DB) markStarts(ctx context.Context, tx *sql.Tx, b store.Batch, started []bool) error {
	start := tx.StmtContext(ctx, db.stmts.start)
	for i, st := range b.Starts {
		var pgid, pstart any
		if st.Pgid > 0 {
			pgid, pstart = st.Pgid, int64(st.PStart)
		}
		res, err := start.ExecContext(ctx, b.JobID, st.Seq, st.At.UnixNano(), pgid, pstart)
		if err != nil {
			return fmt.Errorf("start task %d: %w", st.Seq, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		started[i] = n == 1
	}
	return nil
}

// recordOutcome writes what one result leaves besides its results row
// (finalResults wrote those): a retry's due time and requeue, an attempt
// row, the end of a final task's wait; and for a final result that
// applied, its callback and count, into f.
func (db *DB) recordOutcome(ctx context.Context, tx *sql.Tx, b store.Batch, i int, applied map[int64]bool, f *store.Finals) error {
	r := b.Results[i]
	if !r.RetryAt.IsZero() {
		res, err := tx.StmtContext(ctx, db.stmts.retry).ExecContext(ctx, nullString(r.Error), r.RetryAt.UnixNano(), r.Attempt, b.JobID, r.Seq)
		if err != nil {
			return fmt.Errorf("task %d: %w", r.Seq, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return nil // already final
		}
		if _, err := tx.StmtContext(ctx, db.stmts.stop).ExecContext(ctx, b.JobID, r.Seq); err != nil {
			return fmt.Errorf("task %d: %w", r.Seq, err)
		}
	} else if !applied[r.Seq] {
		return nil // already final: one result per task
	}
	if r.Record {
		state := r.State
		if !r.RetryAt.IsZero() {
			state = store.Failed
		}
		if _, err := tx.StmtContext(ctx, db.stmts.attempt).ExecContext(ctx, b.JobID, r.Seq, r.Attempt, string(state), nullString(r.Error),
			int64(r.Time), r.StartedAt.UnixNano(), r.FinishedAt.UnixNano()); err != nil {
			return fmt.Errorf("attempt %d of task %d: %w", r.Attempt, r.Seq, err)
		}
	}
	if !r.RetryAt.IsZero() {
		return nil // not final: no callback yet
	}
	if r.Attempt > 1 {
		if _, err := tx.StmtContext(ctx, db.stmts.unwait).ExecContext(ctx, b.JobID, r.Seq); err != nil {
			return fmt.Errorf("task %d: %w", r.Seq, err)
		}
	}
	if hook := db.Hooks.BetweenResultAndCallback; hook != nil {
		if err := hook(b.JobID, r.Seq); err != nil {
			return err
		}
	}
	return f.Add(b, i)
}

// countAndFinish adds a batch's counts to its job (which is running, and
// saves its elapsed time and cursors), records other jobs' release marks,
// and, when the batch made the job's last task final, finishes the job
// with its job callback (b.Finish).
func (db *DB) countAndFinish(ctx context.Context, tx *sql.Tx, b store.Batch, counts [3]int64, now time.Time) (store.Job, *store.Callback, error) {
	var startedAt any
	if !b.StartedAt.IsZero() {
		startedAt = b.StartedAt.UnixNano()
	}
	var complete bool
	if err := tx.StmtContext(ctx, db.stmts.counts).QueryRowContext(ctx,
		counts[0], counts[1], counts[2], int64(b.Elapsed), b.Released.To, b.DoneThrough, b.JobID, startedAt,
	).Scan(&complete); err != nil {
		return store.Job{}, nil, err
	}
	for _, m := range b.Marks {
		if err := db.markReleased(ctx, tx, m.JobID, store.Span{To: m.To}); err != nil {
			return store.Job{}, nil, err
		}
	}
	if !complete || b.Finish == nil {
		return store.Job{}, nil, nil
	}
	job, err := db.jobTx(ctx, tx, b.JobID)
	if err != nil {
		return store.Job{}, nil, err
	}
	job.Elapsed = b.Elapsed
	cb, err := db.finishTx(ctx, tx, &job, now, b.Finish)
	if err != nil {
		return store.Job{}, nil, err
	}
	return job, cb, nil
}

// finalResults inserts the batch's final results with multi-row INSERTs
// and returns the tasks they were written for: a task that was already
// final keeps its first result (the primary key refuses a second). The
// common case, no task final yet, costs one plain INSERT per chunk; a
// RETURNING or ON CONFLICT clause on every chunk would cost a tenth of the
// batch (BenchmarkCompleteTasks).
func (db *DB) finalResults(ctx context.Context, tx *sql.Tx, b store.Batch) (map[int64]bool, error) {
	applied := make(map[int64]bool, len(b.Results))
	finals := make([]store.Result, 0, len(b.Results))
	for _, r := range b.Results {
		if r.Attempt < 1 && r.RetryAt.IsZero() {
			return nil, fmt.Errorf("task %d: attempt %d: attempts are numbered from 1", r.Seq, r.Attempt)
		}
		if r.RetryAt.IsZero() {
			finals = append(finals, r)
		}
	}
	args := make([]any, 0, resultColumns*min(len(finals), callbackChunks[0])+1)
	for len(finals) > 0 {
		n := chunkFor(len(finals))
		chunk := finals[:callbackChunks[n]]
		finals = finals[len(chunk):]
		args = append(args[:0], b.JobID)
		for _, r := range chunk {
			args = appendResult(args, r)
		}
		_, err := tx.StmtContext(ctx, db.stmts.results[n]).ExecContext(ctx, args...)
		if err == nil {
			for _, r := range chunk {
				applied[r.Seq] = true
			}
			continue
		}
		if !isPrimaryKeyConflict(err) {
			return nil, fmt.Errorf("results: %w", err)
		}
		// A task of the chunk is final already (pcd cancel got there
		// first). The failed statement wrote nothing: write the chunk
		// row by row, keeping each task's first result.
		once := tx.StmtContext(ctx, db.stmts.resultOnce)
		for _, r := range chunk {
			res, err := once.ExecContext(ctx, appendResult([]any{b.JobID}, r)...)
			if err != nil {
				return nil, fmt.Errorf("result of task %d: %w", r.Seq, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return nil, err
			} else if n == 1 {
				applied[r.Seq] = true
			}
		}
	}
	return applied, nil
}

// resultColumns is the number of values appendResult adds: a result row
// of the results INSERTs, after the job id.
const resultColumns = 8

// appendResult appends a result's values in the column order of the
// results INSERTs: seq, state, attempts, result, error, time_ns,
// started_at, finished_at.
func appendResult(args []any, r store.Result) []any {
	return append(args, r.Seq, string(r.State), r.Attempt, nullBytes(r.Result), nullString(r.Error),
		int64(r.Time), r.StartedAt.UnixNano(), r.FinishedAt.UnixNano())
}

// callbackChunks are the row counts of the prepared multi-row statements
// that write results and task callbacks; a batch is written with the
// largest that fit.
var callbackChunks = []int{128, 32, 8, 1}

// chunkFor is the index in callbackChunks of the largest that fits n rows.
func chunkFor(n int) int {
	for i, size := range callbackChunks {
		if size <= n {
			return i
		}
	}
	return len(callbackChunks) - 1
}

// insertTaskCallbacks writes the records, all of one job and round, with
// multi-row INSERTs and sets their ids. The writer is the only one, so one
// statement's rows get consecutive ids, ending at the last insert id. A
// message refers to its task's result (results[i], just written to the
// results row) instead of holding a copy (see splitResult).
func (db *DB) insertTaskCallbacks(ctx context.Context, tx *sql.Tx, cbs []store.Callback, results [][]byte, now time.Time) error {
	if len(cbs) == 0 {
		return nil
	}
	args := make([]any, 0, 3+3*callbackChunks[0])
	for len(cbs) > 0 {
		n := chunkFor(len(cbs))
		chunk := cbs[:callbackChunks[n]]
		cbs = cbs[len(chunk):]
		args = append(args[:0], chunk[0].JobID, chunk[0].Round, now.UnixNano())
		// Rows without a result (no-ops, sleeps) take the statement with
		// a parameter less per row.
		stmt := db.stmts.callbacks[n]
		for i := range chunk {
			if len(results[i]) > 0 {
				stmt = db.stmts.callbackRefs[n]
				break
			}
		}
		for i, cb := range chunk {
			if stmt == db.stmts.callbacks[n] {
				args = append(args, cb.TaskSeq, string(cb.Message))
				continue
			}
			msg, at := resultref.Split(cb.Message, results[i])
			var resultAt any
			if at >= 0 {
				resultAt = at
			}
			args = append(args, cb.TaskSeq, string(msg), resultAt)
		}
		results = results[len(chunk):]
		res, err := tx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("task callbacks: %w", err)
		}
		last, err := res.LastInsertId()
		if err != nil {
			return err
		}
		for i := range chunk {
			chunk[i].ID = last - int64(len(chunk)-1-i)
		}
	}
	return nil
}

// statements are prepared once on the writer connection.
type statements struct {
	start, stop, finished, retry, attempt, counts, resultOnce, unwait *sql.Stmt
	job, finishJob, jobCallback, released                             *sql.Stmt
	callbacks, callbackRefs, results                                  []*sql.Stmt // one per callbackChunks
}

// statementsReady prepares the runner's statements on the writer, once;
// call it outside a transaction (the writer has one connection), before
// one that uses db.stmts.
func (db *DB) statementsReady(ctx context.Context) error {
	db.stmtsMu.Lock()
	defer db.stmtsMu.Unlock()
	if db.stmtsReady {
		return nil
	}
	if err := db.prepare(ctx); err != nil {
		return errors.Join(err, db.closeStatements())
	}
	db.stmtsReady = true
	return nil
}

// closeStatements closes the statements prepare made.
func (db *DB) closeStatements() error {
	st := &db.stmts
	all := []*sql.Stmt{st.start, st.stop, st.finished, st.retry, st.attempt, st.counts, st.resultOnce, st.unwait,
		st.job, st.finishJob, st.jobCallback, st.released}
	all = append(append(append(all, st.callbacks...), st.callbackRefs...), st.results...)
	var errs []error
	for _, s := range all {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	db.stmts = statements{}
	return errors.Join(errs...)
}

func (db *DB) prepare(ctx context.Context) error {
	for _, s := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		// A task already marked running was left so by a run of this
		// process that failed (Recover handles those of a dead process).
		{&db.stmts.start, `INSERT INTO running (job_id, seq, started_at, pgid, pstart)
			SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM results WHERE job_id = ?1 AND seq = ?2)
			ON CONFLICT (job_id, seq) DO UPDATE SET started_at = excluded.started_at,
				pgid = coalesce(excluded.pgid, pgid), pstart = coalesce(excluded.pstart, pstart)`},
		{&db.stmts.stop, `DELETE FROM running WHERE job_id = ? AND seq = ?`},
		{&db.stmts.job, jobByID},
		{&db.stmts.finishJob, "UPDATE jobs SET state = ?, elapsed_ns = ?, finished_at = ? WHERE id = ?"},
		{&db.stmts.jobCallback, `INSERT INTO callbacks (event, job_id, round, message, created_at) VALUES ('job', ?, ?, ?, ?)`},
		{&db.stmts.released, "UPDATE jobs SET released_id = max(released_id, ?) WHERE id = ?"},
		// A final task leaves the index of waiting tasks (tasks_waiting),
		// which a runner reads for the next due retry.
		{&db.stmts.unwait, `UPDATE tasks SET not_before = NULL WHERE job_id = ? AND seq = ? AND not_before IS NOT NULL`},
		{&db.stmts.finished, `DELETE FROM running WHERE job_id = ?1
			AND EXISTS (SELECT 1 FROM results r WHERE r.job_id = ?1 AND r.seq = running.seq)`},
		{&db.stmts.retry, `UPDATE tasks SET attempts = ?3, error = ?1, not_before = ?2
			WHERE job_id = ?4 AND seq = ?5 AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = ?4 AND r.seq = ?5)`},
		{&db.stmts.resultOnce, `INSERT INTO results (job_id, seq, state, attempts, result, error, time_ns, started_at, finished_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, seq) DO NOTHING`},
		{&db.stmts.attempt, `INSERT INTO attempts (job_id, seq, attempt, state, error, time_ns, started_at, finished_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`},
		// A job a batch writes to is running (unless pcd cancel finished
		// it); it returns whether the job is now sealed with every task
		// final, and unfinished.
		{&db.stmts.counts, `UPDATE jobs SET succeeded = succeeded + ?1, failed = failed + ?2,
			cancelled = cancelled + ?3, elapsed_ns = ?4, released_id = max(released_id, ?5),
			done_through = max(done_through, ?6),
			state = CASE WHEN finished_at IS NULL THEN 'running' ELSE state END,
			started_at = coalesce(started_at, ?8)
			WHERE id = ?7
			RETURNING sealed AND finished_at IS NULL AND succeeded + failed + cancelled >= total`},
	} {
		stmt, err := db.w.PrepareContext(ctx, s.sql)
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		*s.stmt = stmt
	}
	for _, n := range callbackChunks {
		// One job, round and time for every row: ?1, ?2 and ?3.
		stmt, err := db.w.PrepareContext(ctx, "INSERT INTO callbacks (event, job_id, round, created_at, task_seq, message) VALUES "+
			strings.TrimSuffix(strings.Repeat("('task', ?1, ?2, ?3, ?, ?), ", n), ", "))
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		db.stmts.callbacks = append(db.stmts.callbacks, stmt)
		stmt, err = db.w.PrepareContext(ctx, "INSERT INTO callbacks (event, job_id, round, created_at, task_seq, message, result_at) VALUES "+
			strings.TrimSuffix(strings.Repeat("('task', ?1, ?2, ?3, ?, ?, ?), ", n), ", "))
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		db.stmts.callbackRefs = append(db.stmts.callbackRefs, stmt)
		stmt, err = db.w.PrepareContext(ctx, `INSERT INTO results (job_id, seq, state, attempts, result, error, time_ns, started_at, finished_at) VALUES `+
			strings.TrimSuffix(strings.Repeat("(?1, ?, ?, ?, ?, ?, ?, ?, ?), ", n), ", "))
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		db.stmts.results = append(db.stmts.results, stmt)
	}
	return nil
}

// Recover runs when a runner starts, before it runs anything. Tasks that
// were running when the last runner died go back to pending, with the
// interruption counted but no attempt spent. A task interrupted
// maxInterrupts times in a row fails instead, with reason "interrupted by
// N restarts" and its task callback, so a task that kills the process
// cannot wedge the runner.
func (db *DB) Recover(ctx context.Context, maxInterrupts int, failMessage func(jobUUID string, t store.Task, reason string) ([]byte, error)) (store.Recovered, error) {
	now := time.Now()
	var requeued, failed int
	err := db.tx(ctx, func(tx *sql.Tx) error {
		requeued, failed = 0, 0
		// Start marks of tasks that finished anyway are stale, not
		// interruptions.
		if _, err := tx.ExecContext(ctx, `DELETE FROM running
			WHERE EXISTS (SELECT 1 FROM results r WHERE r.job_id = running.job_id AND r.seq = running.seq)`); err != nil {
			return err
		}
		// No runner runs anything now: a job left "running" by a dead one
		// is waiting for this one.
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET state = 'pending' WHERE state = 'running' AND finished_at IS NULL`); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT t.job_id, j.uuid, j.round, t.seq, t.uuid, t.kind, t.attempts, t.interrupts, t.interrupts_base
			FROM running u JOIN tasks t ON t.job_id = u.job_id AND t.seq = u.seq JOIN jobs j ON j.id = u.job_id`)
		if err != nil {
			return err
		}
		type running struct {
			store.Task
			jobUUID string
			round   int
			base    int // interruptions before the last retry
		}
		var all []running
		for rows.Next() {
			var r running
			if err := rows.Scan(&r.JobID, &r.jobUUID, &r.round, &r.Seq, &r.UUID, &r.Kind, &r.Attempts, &r.Interrupts, &r.base); err != nil {
				rows.Close()
				return err
			}
			all = append(all, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var finals *finalWriter
		for _, r := range all {
			r.Interrupts++
			if _, err := tx.ExecContext(ctx, `DELETE FROM running WHERE job_id = ? AND seq = ?`, r.JobID, r.Seq); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE tasks SET interrupts = interrupts + 1 WHERE job_id = ? AND seq = ?`,
				r.JobID, r.Seq); err != nil {
				return err
			}
			fail, reason := store.Interruption(r.Interrupts, r.base, maxInterrupts)
			if !fail {
				requeued++
				continue
			}
			msg, err := failMessage(r.jobUUID, r.Task, reason)
			if err != nil {
				return err
			}
			if finals == nil {
				if finals, err = newFinalWriter(ctx, tx, now); err != nil {
					return err
				}
				defer finals.close()
			}
			if err := finals.write(ctx, r.Task, r.round, store.Failed, reason, msg); err != nil {
				return err
			}
			// A final task leaves the index of waiting tasks: a retried
			// one still carries its last due time.
			if _, err := tx.ExecContext(ctx, `UPDATE tasks SET not_before = NULL WHERE job_id = ? AND seq = ? AND not_before IS NOT NULL`,
				r.JobID, r.Seq); err != nil {
				return err
			}
			failed++
		}
		if finals == nil {
			return nil
		}
		return finals.flush(ctx, tx)
	})
	if err != nil {
		return store.Recovered{}, fmt.Errorf("recover: %w", err)
	}
	return store.Recovered{Requeued: requeued, Failed: failed}, nil
}

// RunningGroups lists the process groups recorded with the start marks of
// running tasks: after a crash, those a dead runner's tasks ran in.
func (db *DB) RunningGroups(ctx context.Context) ([]store.RunningGroup, error) {
	rows, err := db.rc.QueryContext(ctx, "SELECT pgid, coalesce(pstart, 0) FROM running WHERE pgid IS NOT NULL")
	if err != nil {
		return nil, fmt.Errorf("running process groups: %w", err)
	}
	defer rows.Close()
	var out []store.RunningGroup
	for rows.Next() {
		var g store.RunningGroup
		var start int64
		if err := rows.Scan(&g.Pgid, &start); err != nil {
			return nil, fmt.Errorf("running process groups: %w", err)
		}
		g.PStart = uint64(start)
		out = append(out, g)
	}
	return out, rows.Err()
}

// KnownTasks reports which of the task uuids are this database's.
func (db *DB) KnownTasks(ctx context.Context, uuids []string) (map[string]bool, error) {
	known := map[string]bool{}
	for len(uuids) > 0 {
		n := min(len(uuids), 500)
		args := make([]any, n)
		for i, u := range uuids[:n] {
			args[i] = u
		}
		rows, err := db.r.QueryContext(ctx, "SELECT uuid FROM tasks WHERE uuid IN (?"+strings.Repeat(", ?", n-1)+")", args...)
		if err != nil {
			return nil, fmt.Errorf("known tasks: %w", err)
		}
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return nil, fmt.Errorf("known tasks: %w", err)
			}
			known[u] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("known tasks: %w", err)
		}
		uuids = uuids[n:]
	}
	return known, nil
}

// FinishJob commits a job's final state and its job-callback record
// together, once every task is final. message builds the callback's JSON
// from the finished job inside the transaction. If the job had already
// finished, FinishJob returns it with a nil callback. The job's callbacks
// up to delivered.To are marked delivered in the same transaction.
func (db *DB) FinishJob(ctx context.Context, jobID int64, elapsed time.Duration, released store.Span,
	message func(store.Job) ([]byte, error)) (store.Job, *store.Callback, error) {
	if err := db.statementsReady(ctx); err != nil {
		return store.Job{}, nil, fmt.Errorf("finish job %d: %w", jobID, err)
	}
	now := time.Now()
	var (
		job store.Job
		cb  *store.Callback
	)
	err := db.txAt(ctx, "finish", func(tx *sql.Tx) error {
		cb = nil
		if err := db.markReleased(ctx, tx, jobID, released); err != nil {
			return err
		}
		var err error
		job, err = db.jobTx(ctx, tx, jobID)
		if err != nil {
			return err
		}
		if job.Finished() {
			return nil
		}
		if !store.Complete(job) {
			return store.ErrNotDone
		}
		job.Elapsed = max(elapsed, job.Elapsed) // every runner's time: it never goes back
		cb, err = db.finishTx(ctx, tx, &job, now, message)
		return err
	})
	if err != nil {
		return store.Job{}, nil, fmt.Errorf("finish job %d: %w", jobID, err)
	}
	return job, cb, nil
}

// finishTx marks a job whose tasks are all final finished, with its state
// from the counts, and writes its job-callback record.
func (db *DB) finishTx(ctx context.Context, tx *sql.Tx, job *store.Job, now time.Time, message func(store.Job) ([]byte, error)) (*store.Callback, error) {
	job.State = store.FinalState(job.Succeeded, job.Failed, job.Cancelled)
	job.FinishedAt = now
	if _, err := tx.StmtContext(ctx, db.stmts.finishJob).ExecContext(ctx,
		string(job.State), int64(job.Elapsed), now.UnixNano(), job.ID); err != nil {
		return nil, err
	}
	msg, err := message(*job)
	if err != nil {
		return nil, err
	}
	res, err := tx.StmtContext(ctx, db.stmts.jobCallback).ExecContext(ctx, job.ID, job.Round, string(msg), now.UnixNano())
	if err != nil {
		return nil, err
	}
	id, err := res.LastInsertId()
	if err != nil {
		return nil, err
	}
	return &store.Callback{ID: id, Event: store.EventJob, JobID: job.ID, Round: job.Round, Message: msg, CreatedAt: now}, nil
}

// CancelJob cancels every unfinished task of a job, each with its task
// callback, and completes the job as cancelled with its job callback, all
// in one transaction. A runner that is running the job notices that it
// finished and stops its tasks; their results are then ignored.
func (db *DB) CancelJob(ctx context.Context, jobID int64, taskMessage func(store.Task) ([]byte, error),
	jobMessage func(store.Job) ([]byte, error)) (store.Job, error) {
	if err := db.statementsReady(ctx); err != nil {
		return store.Job{}, fmt.Errorf("cancel job %d: %w", jobID, err)
	}
	now := time.Now()
	var job store.Job
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var err error
		job, err = db.jobTx(ctx, tx, jobID)
		if err != nil {
			return err
		}
		if err := store.CanCancel(job); err != nil {
			return err
		}
		finals, err := newFinalWriter(ctx, tx, now)
		if err != nil {
			return err
		}
		defer finals.close()
		err = store.CancelPending(
			func(after int64) ([]store.Task, error) { return pendingTx(ctx, tx, jobID, after, 1000) },
			taskMessage,
			func(t store.Task, msg []byte) error {
				return finals.write(ctx, t, job.Round, store.Cancelled, "cancelled", msg)
			})
		if err != nil {
			return err
		}
		if err := finals.flush(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM running WHERE job_id = ?", jobID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE tasks SET not_before = NULL WHERE job_id = ? AND not_before IS NOT NULL", jobID); err != nil {
			return err
		}
		if c := finals.counts[jobID]; c != nil {
			job.Cancelled += c[1]
		}
		job.Sealed = true
		if _, err := tx.ExecContext(ctx, "UPDATE jobs SET sealed = 1 WHERE id = ?", jobID); err != nil {
			return err
		}
		_, err = db.finishTx(ctx, tx, &job, now, jobMessage)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return store.Job{}, err
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("cancel job %d: %w", jobID, err)
	}
	return job, nil
}

func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// nullTime is t in ns, or NULL for the zero time.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// finalWriter writes final results that carry no result body (a task
// failed at recovery, a task cancelled), each with its task callback, in
// the caller's transaction, and counts them per job; flush adds the counts
// to the jobs. The group commit writes results with bodies its own,
// batched way (recordOutcome); both keep invariant 2: a final result and
// its callback record commit together.
type finalWriter struct {
	result, callback *sql.Stmt
	now              int64
	counts           map[int64]*[2]int64 // job id: failed, cancelled
}

func newFinalWriter(ctx context.Context, tx *sql.Tx, now time.Time) (*finalWriter, error) {
	result, err := tx.PrepareContext(ctx, `INSERT INTO results (job_id, seq, state, attempts, error, finished_at)
		VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return nil, err
	}
	callback, err := tx.PrepareContext(ctx, `INSERT INTO callbacks (event, job_id, task_seq, round, message, created_at)
		VALUES ('task', ?, ?, ?, ?, ?)`)
	if err != nil {
		result.Close()
		return nil, err
	}
	return &finalWriter{result: result, callback: callback, now: now.UnixNano(), counts: map[int64]*[2]int64{}}, nil
}

// write records t's final state (store.Failed or store.Cancelled) with
// errText, and its task callback msg.
func (w *finalWriter) write(ctx context.Context, t store.Task, round int, state store.State, errText string, msg []byte) error {
	if _, err := w.result.ExecContext(ctx, t.JobID, t.Seq, string(state), t.Attempts, errText, w.now); err != nil {
		return err
	}
	if _, err := w.callback.ExecContext(ctx, t.JobID, t.Seq, round, string(msg), w.now); err != nil {
		return err
	}
	c := w.counts[t.JobID]
	if c == nil {
		c = new([2]int64)
		w.counts[t.JobID] = c
	}
	if state == store.Cancelled {
		c[1]++
	} else {
		c[0]++
	}
	return nil
}

// flush adds the counts to the jobs' counters.
func (w *finalWriter) flush(ctx context.Context, tx *sql.Tx) error {
	for id, c := range w.counts {
		if _, err := tx.ExecContext(ctx, "UPDATE jobs SET failed = failed + ?, cancelled = cancelled + ? WHERE id = ?", c[0], c[1], id); err != nil {
			return err
		}
	}
	return nil
}

func (w *finalWriter) close() {
	w.result.Close()
	w.callback.Close()
}
