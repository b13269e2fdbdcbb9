package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/internal/resultref"
)

// resultMemberSQL is resultref.Member inside a SQL string literal.
const resultMemberSQL = resultref.Member

// CompleteTasks commits a batch: each result and its task-callback record
// in the same transaction. A task that is already final keeps its first
// result and gets no second callback; a task that another runner has
// taken over (this one's lease ran out) gets no result from this one.
//
// Locks in the order of every writer (see lockJobs): the job's claim
// lock, its rows, the job's row (its counters), then the callback-id
// lock, held until commit.
func (db *DB) CompleteTasks(ctx context.Context, b store.Batch) (store.Committed, error) {
	now := time.Now()
	var out store.Committed
	err := db.tx(ctx, func(tx pgx.Tx) error {
		out = store.Committed{Started: make([]bool, len(b.Starts))}
		if err := db.lockJobs(ctx, tx, b.JobID); err != nil {
			return err
		}
		if err := db.markStarts(ctx, tx, b, out.Started); err != nil {
			return err
		}
		if len(b.Interrupted) > 0 {
			if _, err := tx.Exec(ctx, "DELETE FROM running WHERE job_id = $1 AND seq = ANY($2) AND runner_id = $3",
				b.JobID, b.Interrupted, db.runners.id()); err != nil {
				return err
			}
		}
		applied, discarded, err := db.finalResults(ctx, tx, b)
		if err != nil {
			return err
		}
		out.Discarded = discarded
		f := store.Finals{Now: now}
		for i, r := range b.Results {
			if err := db.recordOutcome(ctx, tx, b, r); err != nil {
				return err
			}
			if r.RetryAt.IsZero() && applied[r.Seq] {
				if err := f.Add(b, i); err != nil {
					return err
				}
			}
		}
		if len(applied) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM running u WHERE u.job_id = $1 AND u.seq = ANY($2)`, b.JobID, appliedSeqs(applied)); err != nil {
				return err
			}
		}
		if err := db.markBatchReleased(ctx, tx, b); err != nil {
			return err
		}
		complete, err := db.count(ctx, tx, b, f.Counts)
		if err != nil {
			return err
		}
		if len(applied) > 0 && !complete {
			if err := advanceFrontier(ctx, tx, b.JobID); err != nil {
				return err
			}
		}
		if err := db.lockCallbacks(ctx, tx); err != nil {
			return err
		}
		if err := db.insertTaskCallbacks(ctx, tx, f.Callbacks, f.Results, now); err != nil {
			return err
		}
		out.Callbacks, out.ResultIndex = f.Callbacks, f.Index
		if !complete || b.Finish == nil {
			return nil
		}
		job, err := jobTx(ctx, tx, b.JobID, false)
		if err != nil {
			return err
		}
		job.Elapsed = b.Elapsed
		out.JobCallback, err = db.finishTx(ctx, tx, &job, now, b.Finish)
		out.Job = job
		return err
	})
	if err != nil {
		return store.Committed{}, fmt.Errorf("complete tasks of job %d: %w", b.JobID, err)
	}
	db.wrote(len(out.Callbacks))
	db.churned(len(b.Results) + len(b.Interrupted))
	return out, nil
}

// markBatchReleased records the callbacks the batch says were released:
// its job's and, riding along, other jobs'.
func (db *DB) markBatchReleased(ctx context.Context, tx pgx.Tx, b store.Batch) error {
	if err := db.markReleased(ctx, tx, b.JobID, b.Released); err != nil {
		return err
	}
	for _, m := range b.Marks {
		if err := db.markReleased(ctx, tx, m.JobID, store.Span{To: m.To}); err != nil {
			return err
		}
	}
	return nil
}

func appliedSeqs(applied map[int64]bool) []int64 {
	seqs := make([]int64, 0, len(applied))
	for s := range applied {
		seqs = append(seqs, s)
	}
	return seqs
}

// markStarts writes the batch's start marks on this runner's claims, in
// one statement; started[i] is false for a task that is final already, or
// that another runner has claimed: it must not run.
func (db *DB) markStarts(ctx context.Context, tx pgx.Tx, b store.Batch, started []bool) error {
	if len(b.Starts) == 0 {
		return nil
	}
	var (
		index          = make(map[int64]int, len(b.Starts)) // seq -> its place in the arrays
		seqs, ats      []int64
		pgids, pstarts []*int64
	)
	for _, st := range b.Starts {
		var pgid, pstart *int64
		if st.Pgid > 0 {
			g, p := int64(st.Pgid), int64(st.PStart)
			pgid, pstart = &g, &p
		}
		if j, ok := index[st.Seq]; ok {
			// A task twice in one batch (its mark, then its process
			// group): one row, which a statement can write only once.
			if pgid != nil {
				pgids[j], pstarts[j] = pgid, pstart
			}
			continue
		}
		index[st.Seq] = len(seqs)
		seqs, ats = append(seqs, st.Seq), append(ats, st.At.UnixNano())
		pgids, pstarts = append(pgids, pgid), append(pstarts, pstart)
	}
	rows, err := tx.Query(ctx, `INSERT INTO running (job_id, seq, runner_id, claimed_at, started_at, pgid, pstart)
		SELECT $1, x.seq, $2, x.at, x.at, x.pgid, x.pstart
		FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) AS x (seq, at, pgid, pstart)
		WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = $1 AND r.seq = x.seq)
		ON CONFLICT (job_id, seq) DO UPDATE SET started_at = EXCLUDED.started_at,
			pgid = coalesce(EXCLUDED.pgid, running.pgid), pstart = coalesce(EXCLUDED.pstart, running.pstart)
		WHERE running.runner_id = EXCLUDED.runner_id
		RETURNING seq`, b.JobID, db.runners.id(), seqs, ats, pgids, pstarts)
	if err != nil {
		return fmt.Errorf("start tasks: %w", err)
	}
	marked, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("start tasks: %w", err)
	}
	ok := make(map[int64]bool, len(marked))
	for _, seq := range marked {
		ok[seq] = true
	}
	for i, st := range b.Starts {
		started[i] = ok[st.Seq]
	}
	return db.dropFinalStarts(ctx, tx, b, started)
}

// dropFinalStarts takes back the start marks just written for tasks that
// another runner made final meanwhile. The INSERT's NOT EXISTS reads the
// results as its statement began; a runner that took the task over may
// have been committing its result then, and deleting its own mark, which
// let this INSERT through once it committed. A new statement sees that
// result (READ COMMITTED), so the mark goes, and the task does not run.
func (db *DB) dropFinalStarts(ctx context.Context, tx pgx.Tx, b store.Batch, started []bool) error {
	var seqs []int64
	for i, ok := range started {
		if ok {
			seqs = append(seqs, b.Starts[i].Seq)
		}
	}
	if len(seqs) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `DELETE FROM running u WHERE u.job_id = $1 AND u.seq = ANY($2) AND u.runner_id = $3
		AND EXISTS (SELECT 1 FROM results r WHERE r.job_id = u.job_id AND r.seq = u.seq) RETURNING u.seq`,
		b.JobID, seqs, db.runners.id())
	if err != nil {
		return fmt.Errorf("start marks of final tasks: %w", err)
	}
	final := map[int64]bool{}
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return err
		}
		final[seq] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for i := range started {
		if final[b.Starts[i].Seq] {
			started[i] = false
		}
	}
	return nil
}

// finalResults inserts the batch's final results in one statement and
// returns the tasks they were written for: not those final already, nor
// those whose claim this runner no longer holds (its lease ran out, and
// another runner took them over); it counts the latter.
func (db *DB) finalResults(ctx context.Context, tx pgx.Tx, b store.Batch) (applied map[int64]bool, discarded int, err error) {
	var (
		seqs, times, starts, finishes []int64
		states, errs                  []*string
		attempts                      []int32
		results                       [][]byte
	)
	for _, r := range b.Results {
		if r.Attempt < 1 && r.RetryAt.IsZero() {
			return nil, 0, fmt.Errorf("task %d: attempt %d: attempts are numbered from 1", r.Seq, r.Attempt)
		}
		if !r.RetryAt.IsZero() {
			continue
		}
		st := string(r.State)
		seqs = append(seqs, r.Seq)
		states = append(states, &st)
		attempts = append(attempts, int32(r.Attempt))
		results = append(results, nilIfEmpty(r.Result))
		errs = append(errs, strPtr(r.Error))
		times = append(times, int64(r.Time))
		starts = append(starts, r.StartedAt.UnixNano())
		finishes = append(finishes, r.FinishedAt.UnixNano())
	}
	applied = make(map[int64]bool, len(seqs))
	if len(seqs) == 0 {
		return applied, 0, nil
	}
	rows, err := tx.Query(ctx, `INSERT INTO results (job_id, seq, state, attempts, result, error, time_ns, started_at, finished_at)
		SELECT $1, x.seq, x.state, x.attempts, x.result, x.error, x.time_ns, x.started_at, x.finished_at
		FROM unnest($2::bigint[], $3::text[], $4::int[], $5::bytea[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[])
			AS x (seq, state, attempts, result, error, time_ns, started_at, finished_at)
		WHERE `+holdsClaim("x.seq", 10)+`
		ON CONFLICT (job_id, seq) DO NOTHING
		RETURNING seq`,
		b.JobID, seqs, states, attempts, results, errs, times, starts, finishes, db.runners.id())
	if err != nil {
		return nil, 0, fmt.Errorf("results: %w", err)
	}
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return nil, 0, err
		}
		applied[seq] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(applied) == len(seqs) {
		return applied, 0, err
	}
	// Those not written: final already, or no longer this runner's.
	var lost []int64
	for _, s := range seqs {
		if !applied[s] {
			lost = append(lost, s)
		}
	}
	err = tx.QueryRow(ctx, `SELECT count(*) FROM unnest($2::bigint[]) AS x (seq) WHERE NOT `+holdsClaim("x.seq", 3),
		b.JobID, lost, db.runners.id()).Scan(&discarded)
	return applied, discarded, err
}

// holdsClaim is the condition that this runner holds the claim of task
// seq of job $1, its id being $n; a handle that is no runner (id 0)
// claims nothing, and is not held to claims.
func holdsClaim(seq string, n int) string {
	return fmt.Sprintf(`($%[2]d = 0 OR EXISTS (SELECT 1 FROM running u WHERE u.job_id = $1 AND u.seq = %[1]s AND u.runner_id = $%[2]d))`, seq, n)
}

// recordOutcome writes what one result leaves besides its results row: a
// retry's due time and the release of its claim, an attempt row, the end
// of a final task's wait.
func (db *DB) recordOutcome(ctx context.Context, tx pgx.Tx, b store.Batch, r store.Result) error {
	if !r.RetryAt.IsZero() {
		tag, err := tx.Exec(ctx, `UPDATE tasks t SET attempts = $3, error = $4, not_before = $5
			WHERE t.job_id = $1 AND t.seq = $2 AND `+unfinished+` AND `+holdsClaim("t.seq", 6),
			b.JobID, r.Seq, r.Attempt, nullString(r.Error), r.RetryAt.UnixNano(), db.runners.id())
		if err != nil {
			return fmt.Errorf("task %d: %w", r.Seq, err)
		}
		if tag.RowsAffected() == 0 {
			return nil // final already, or not this runner's
		}
		if _, err := tx.Exec(ctx, "DELETE FROM running WHERE job_id = $1 AND seq = $2", b.JobID, r.Seq); err != nil {
			return fmt.Errorf("task %d: %w", r.Seq, err)
		}
	}
	if r.Record {
		state := r.State
		if !r.RetryAt.IsZero() {
			state = store.Failed
		}
		if _, err := tx.Exec(ctx, `INSERT INTO attempts (job_id, seq, attempt, state, error, time_ns, started_at, finished_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`, b.JobID, r.Seq, r.Attempt, string(state), nullString(r.Error),
			int64(r.Time), r.StartedAt.UnixNano(), r.FinishedAt.UnixNano()); err != nil {
			return fmt.Errorf("attempt %d of task %d: %w", r.Attempt, r.Seq, err)
		}
	}
	if r.RetryAt.IsZero() && r.Attempt > 1 {
		if _, err := tx.Exec(ctx, `UPDATE tasks SET not_before = NULL WHERE job_id = $1 AND seq = $2 AND not_before IS NOT NULL`,
			b.JobID, r.Seq); err != nil {
			return fmt.Errorf("task %d: %w", r.Seq, err)
		}
	}
	return nil
}

// count adds a batch's counts to its job, which is running, saves its
// elapsed time and release cursor, and says whether the batch made the
// sealed job's last task final. A runner's DoneThrough is not saved: it
// knows only the tasks it ran, and other runners may still run tasks
// below it (advanceFrontier computes the job's).
func (db *DB) count(ctx context.Context, tx pgx.Tx, b store.Batch, counts [3]int64) (complete bool, err error) {
	err = tx.QueryRow(ctx, `UPDATE jobs SET succeeded = succeeded + $1, failed = failed + $2,
		cancelled = cancelled + $3, elapsed_ns = greatest(elapsed_ns, $4),
		state = CASE WHEN finished_at IS NULL THEN 'running' ELSE state END,
		started_at = coalesce(started_at, $6)
		WHERE id = $5
		RETURNING sealed AND finished_at IS NULL AND succeeded + failed + cancelled >= total`,
		counts[0], counts[1], counts[2], int64(b.Elapsed), b.JobID, nanos(b.StartedAt),
	).Scan(&complete)
	return complete, err
}

// advanceFrontier moves the job's done_through up to just below its first
// task without a result, as this transaction sees the results: the
// runner's own, and every other runner's that committed before it. (A
// runner's own frontier knows only the tasks it ran.) The job's row is
// locked (count), so commits advance it one at a time. The walk starts at
// the old frontier and steps from task to task, two index probes each,
// until the first task without a result, so each task is passed over
// once, whatever the size of the job. The next run of the job, by any
// runner, starts its claims there rather than at the job's first task.
// It is a recursive walk because the planner will not keep to the order
// otherwise: as a filter ("the first task above the frontier without a
// result") it read every task above the frontier with a probe each and
// sorted them (3,000 tasks, 2 daemons: 90 ms per commit, under the job's
// locks). The test for a result is a scalar subquery, which the planner
// cannot turn into a join: as a join (EXISTS, or an anti-join) it read
// every result of the job, once per step when the statistics said the
// results were few, as they do while a new job runs.
func advanceFrontier(ctx context.Context, tx pgx.Tx, jobID int64) error {
	// Each step is two index probes by primary key. A new job's tables
	// look empty to the planner until they are analyzed, and it then
	// probes the results by reading them whole, once per step: 2 s for a
	// step of 4,000 tasks, under the job's locks. No step ever wants a
	// sequential scan.
	if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
		return fmt.Errorf("advance the finished prefix: %w", err)
	}
	defer tx.Exec(ctx, "SET LOCAL enable_seqscan TO DEFAULT")
	_, err := tx.Exec(ctx, `WITH RECURSIVE walk (seq) AS (
			SELECT done_through FROM jobs WHERE id = $1
			UNION ALL
			SELECT n.seq FROM walk w
			CROSS JOIN LATERAL (SELECT t.seq FROM tasks t WHERE t.job_id = $1 AND t.seq > w.seq ORDER BY t.seq LIMIT 1) n
			WHERE (SELECT 1 FROM results r WHERE r.job_id = $1 AND r.seq = n.seq) IS NOT NULL)
		UPDATE jobs SET done_through = (SELECT max(seq) FROM walk) WHERE id = $1`, jobID)
	if err != nil {
		return fmt.Errorf("advance the finished prefix: %w", err)
	}
	return nil
}

// insertTaskCallbacks writes the records, under the callback-id lock, and
// sets their ids. A message refers to its task's result instead of
// holding a copy (resultref).
func (db *DB) insertTaskCallbacks(ctx context.Context, tx pgx.Tx, cbs []store.Callback, results [][]byte, now time.Time) error {
	if len(cbs) == 0 {
		return nil
	}
	seqs := make([]int64, len(cbs))
	msgs := make([][]byte, len(cbs))
	ats := make([]*int32, len(cbs))
	for i, cb := range cbs {
		seqs[i] = cb.TaskSeq
		msg, at := resultref.Split(cb.Message, results[i])
		msgs[i] = msg
		if at >= 0 {
			a := int32(at)
			ats[i] = &a
		}
	}
	rows, err := tx.Query(ctx, `INSERT INTO callbacks (event, job_id, round, created_at, task_seq, message, result_at, runner_id)
		SELECT 'task', $1, $2, $3, x.seq, x.message, x.result_at, $7
		FROM unnest($4::bigint[], $5::bytea[], $6::int[]) WITH ORDINALITY AS x (seq, message, result_at, n)
		ORDER BY x.n
		RETURNING id, task_seq`, cbs[0].JobID, cbs[0].Round, now.UnixNano(), seqs, msgs, ats, db.runners.id())
	if err != nil {
		return fmt.Errorf("task callbacks: %w", err)
	}
	defer rows.Close()
	ids := make(map[int64]int64, len(cbs))
	for rows.Next() {
		var id, seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return err
		}
		ids[seq] = id
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("task callbacks: %w", err)
	}
	var newest int64
	for i := range cbs {
		cbs[i].ID = ids[cbs[i].TaskSeq]
		newest = max(newest, cbs[i].ID)
	}
	return db.committed(ctx, tx, cbs[0].JobID, newest)
}

// committed records the newest callback of a job this runner committed.
func (db *DB) committed(ctx context.Context, tx pgx.Tx, jobID, id int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO releases (job_id, runner_id, committed_id) VALUES ($1, $2, $3)
		ON CONFLICT (job_id, runner_id) DO UPDATE SET committed_id = greatest(releases.committed_id, EXCLUDED.committed_id)`,
		jobID, db.runners.id(), id)
	return err
}

// finishTx finishes a job (its final state from its counts) and writes its
// job callback; the caller holds the callback-id lock.
func (db *DB) finishTx(ctx context.Context, tx pgx.Tx, job *store.Job, now time.Time, message func(store.Job) ([]byte, error)) (*store.Callback, error) {
	job.State = store.FinalState(job.Succeeded, job.Failed, job.Cancelled)
	job.FinishedAt = now
	if _, err := tx.Exec(ctx, "UPDATE jobs SET state = $1, elapsed_ns = $2, finished_at = $3 WHERE id = $4",
		string(job.State), int64(job.Elapsed), now.UnixNano(), job.ID); err != nil {
		return nil, err
	}
	msg, err := message(*job)
	if err != nil {
		return nil, err
	}
	var id int64
	if err := tx.QueryRow(ctx, `INSERT INTO callbacks (event, job_id, round, message, created_at, runner_id) VALUES ('job', $1, $2, $3, $4, $5) RETURNING id`,
		job.ID, job.Round, msg, now.UnixNano(), db.runners.id()).Scan(&id); err != nil {
		return nil, err
	}
	if err := db.committed(ctx, tx, job.ID, id); err != nil {
		return nil, err
	}
	return &store.Callback{ID: id, Event: store.EventJob, JobID: job.ID, Round: job.Round, Message: msg, CreatedAt: now}, nil
}

// FinishJob commits a job's final state and its job-callback record
// together, once every task is final (else ErrNotDone); a job finished
// already is returned with a nil callback.
func (db *DB) FinishJob(ctx context.Context, jobID int64, elapsed time.Duration, released store.Span,
	message func(store.Job) ([]byte, error)) (store.Job, *store.Callback, error) {
	now := time.Now()
	var (
		job store.Job
		cb  *store.Callback
	)
	err := db.tx(ctx, func(tx pgx.Tx) error {
		cb = nil
		if err := db.markReleased(ctx, tx, jobID, released); err != nil {
			return err
		}
		var err error
		if job, err = jobTx(ctx, tx, jobID, true); err != nil {
			return err
		}
		if job.Finished() {
			return nil
		}
		if !store.Complete(job) {
			return store.ErrNotDone
		}
		job.Elapsed = max(elapsed, job.Elapsed) // every runner's time: it never goes back
		if err := db.lockCallbacks(ctx, tx); err != nil {
			return err
		}
		cb, err = db.finishTx(ctx, tx, &job, now, message)
		return err
	})
	if err != nil {
		return store.Job{}, nil, fmt.Errorf("finish job %d: %w", jobID, err)
	}
	return job, cb, nil
}

// CancelJob cancels every unfinished task of a job, each with its task
// callback, and finishes the job as cancelled with its job callback, in
// one transaction.
func (db *DB) CancelJob(ctx context.Context, jobID int64, taskMessage func(store.Task) ([]byte, error),
	jobMessage func(store.Job) ([]byte, error)) (store.Job, error) {
	now := time.Now()
	var job store.Job
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if err := db.lockJobs(ctx, tx, jobID); err != nil {
			return err
		}
		var err error
		if job, err = jobTx(ctx, tx, jobID, true); err != nil {
			return err
		}
		if err := store.CanCancel(job); err != nil {
			return err
		}
		if err := db.lockCallbacks(ctx, tx); err != nil {
			return err
		}
		w := finalWriter{db: db, now: now}
		err = store.CancelPending(
			func(after int64) ([]store.Task, error) { return db.pending(ctx, tx, jobID, after, 1000, maxDue, false) },
			taskMessage,
			func(t store.Task, msg []byte) error {
				w.add(t, job.Round, store.Cancelled, "cancelled", msg)
				return nil
			})
		if err != nil {
			return err
		}
		if err := w.flush(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM running WHERE job_id = $1", jobID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE tasks SET not_before = NULL WHERE job_id = $1 AND not_before IS NOT NULL", jobID); err != nil {
			return err
		}
		if c := w.counts[jobID]; c != nil {
			job.Cancelled += c[1]
		}
		job.Sealed = true
		if _, err := tx.Exec(ctx, "UPDATE jobs SET sealed = true WHERE id = $1", jobID); err != nil {
			return err
		}
		_, err = db.finishTx(ctx, tx, &job, now, jobMessage)
		return err
	})
	if err != nil {
		if isConflict(err) {
			return store.Job{}, err
		}
		return store.Job{}, fmt.Errorf("cancel job %d: %w", jobID, err)
	}
	return job, nil
}

// maxDue reads every pending task, waiting or not.
const maxDue = int64(1<<63 - 1)

// finalWriter gathers final results that carry no result body (a task
// failed at recovery, a task cancelled) with their task callbacks, and
// writes them in one go (flush), with the jobs' counters; the caller
// holds the job rows and the callback-id lock.
type finalWriter struct {
	db      *DB
	now     time.Time
	jobs    []int64
	seqs    []int64
	rounds  []int32
	states  []string
	attempt []int32
	errs    []string
	msgs    [][]byte
	counts  map[int64]*[2]int64 // job id: failed, cancelled
}

func (w *finalWriter) add(t store.Task, round int, state store.State, errText string, msg []byte) {
	w.jobs = append(w.jobs, t.JobID)
	w.seqs = append(w.seqs, t.Seq)
	w.rounds = append(w.rounds, int32(round))
	w.states = append(w.states, string(state))
	w.attempt = append(w.attempt, int32(t.Attempts))
	w.errs = append(w.errs, errText)
	w.msgs = append(w.msgs, msg)
	if w.counts == nil {
		w.counts = map[int64]*[2]int64{}
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
}

func (w *finalWriter) flush(ctx context.Context, tx pgx.Tx) error {
	if len(w.seqs) == 0 {
		return nil
	}
	now := w.now.UnixNano()
	if _, err := tx.Exec(ctx, `INSERT INTO results (job_id, seq, state, attempts, error, finished_at)
		SELECT x.job_id, x.seq, x.state, x.attempts, x.error, $1
		FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::int[], $6::text[]) AS x (job_id, seq, state, attempts, error)`,
		now, w.jobs, w.seqs, w.states, w.attempt, w.errs); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `WITH written AS (
			INSERT INTO callbacks (event, job_id, task_seq, round, message, created_at, runner_id)
			SELECT 'task', x.job_id, x.seq, x.round, x.message, $1, $6
			FROM unnest($2::bigint[], $3::bigint[], $4::int[], $5::bytea[]) WITH ORDINALITY AS x (job_id, seq, round, message, n)
			ORDER BY x.n
			RETURNING job_id, id)
		INSERT INTO releases (job_id, runner_id, committed_id) SELECT job_id, $6, max(id) FROM written GROUP BY job_id
		ON CONFLICT (job_id, runner_id) DO UPDATE SET committed_id = greatest(releases.committed_id, EXCLUDED.committed_id)`,
		now, w.jobs, w.seqs, w.rounds, w.msgs, w.db.runners.id()); err != nil {
		return err
	}
	for id, c := range w.counts {
		if _, err := tx.Exec(ctx, "UPDATE jobs SET failed = failed + $1, cancelled = cancelled + $2 WHERE id = $3", c[0], c[1], id); err != nil {
			return err
		}
	}
	return nil
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
