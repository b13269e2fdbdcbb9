package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pcd-dev/pcd/store"
)

const taskColumns = `t.seq, t.uuid, t.kind, t.payload, t.attempts, t.interrupts,
	t.max_attempts, t.backoff_base_ns, t.backoff_cap_ns, t.timeout_ns, t.not_before`

// unfinished is the condition on a task t that it has no result yet.
const unfinished = `NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq)`

func scanTask(row pgx.Row, t *store.Task) error {
	var base, capNS, timeout int64
	var notBefore *int64
	if err := row.Scan(&t.Seq, &t.UUID, &t.Kind, &t.Payload, &t.Attempts, &t.Interrupts,
		&t.Retry.MaxAttempts, &base, &capNS, &timeout, &notBefore); err != nil {
		return err
	}
	t.Retry.BackoffBase, t.Retry.BackoffCap, t.Retry.Timeout = time.Duration(base), time.Duration(capNS), time.Duration(timeout)
	if notBefore != nil {
		t.NotBefore = time.Unix(0, *notBefore)
	}
	return nil
}

func queryTasks(ctx context.Context, q querier, jobID int64, sql string, args ...any) ([]store.Task, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	var out []store.Task
	for rows.Next() {
		t := store.Task{JobID: jobID}
		if err := scanTask(rows, &t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, classify(rows.Err())
}

// claimed wraps a query of candidate tasks (job_id, seq of t, with
// notClaimed(n)) whose own parameters are $1 to $n, so that this runner
// claims them (run it with claim, under the job's claim lock). A task this
// runner claimed before is claimed again. The runner's id and the time are
// $n+1 and $n+2 (claimArgs).
func claimed(candidates string, n int) string {
	return fmt.Sprintf(`WITH picked AS (%s),
		claimed AS (
			INSERT INTO running (job_id, seq, runner_id, claimed_at)
			SELECT job_id, seq, $%d, $%d FROM picked
			ON CONFLICT (job_id, seq) DO UPDATE SET claimed_at = EXCLUDED.claimed_at
				WHERE running.runner_id = EXCLUDED.runner_id
			RETURNING job_id, seq)
		SELECT `+taskColumns+` FROM tasks t JOIN claimed c ON c.job_id = t.job_id AND c.seq = t.seq`, candidates, n+1, n+2)
}

// notClaimed is the condition on a task t that no other runner claims it;
// the runner's id is $n+1.
func notClaimed(n int) string {
	return fmt.Sprintf(`NOT EXISTS (SELECT 1 FROM running u WHERE u.job_id = t.job_id AND u.seq = t.seq AND u.runner_id <> $%d)`, n+1)
}

// claimArgs appends a claiming query's runner id and time to args.
func (db *DB) claimArgs(args ...any) []any {
	return append(args, db.runners.id(), time.Now().UnixNano())
}

// PendingTasks pages a job's tasks without a result after afterSeq, by
// seq, leaving out those waiting to retry after due; a runner claims
// them as it reads.
func (db *DB) PendingTasks(ctx context.Context, jobID, afterSeq int64, limit int, due time.Time) ([]store.Task, error) {
	tasks, err := db.pending(ctx, db.pool, jobID, afterSeq, limit, due.UnixNano(), true)
	if err != nil {
		return nil, fmt.Errorf("pending tasks of job %d: %w", jobID, err)
	}
	return tasks, nil
}

// pending reads a page of pending tasks; with claim, a runner claims them.
func (db *DB) pending(ctx context.Context, q querier, jobID, afterSeq int64, limit int, due int64, claim bool) ([]store.Task, error) {
	// The result's anti-join repeats the lower bound: the planner does
	// not carry t.seq > $2 over to it, and a merge anti-join read the
	// job's results from its first task on, for every page (2 daemons,
	// 500k no-ops, claims of 4,096: 5k tasks/s). The claims' anti-join
	// has no such bound (with it the planner expected few claims), and
	// claim runs with materialization off: the claims table churns, its
	// statistics are often those of an empty table, and the planner then
	// compared every task read with every claim, a materialized nested
	// loop (2.7 s for the first claim after a restart; 5k tasks/s for 2
	// daemons). Scalar subqueries, an index probe per task, were 2.5x
	// slower than the joins.
	where := `t.job_id = $1 AND t.seq > $2 AND (t.not_before IS NULL OR t.not_before <= $3)
		AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq AND r.seq > $2)`
	if !claim || db.runners.id() == 0 {
		return queryTasks(ctx, q, jobID, `SELECT `+taskColumns+` FROM tasks t WHERE `+where+` ORDER BY t.seq LIMIT $4`,
			jobID, afterSeq, due, limit)
	}
	return db.claim(ctx, jobID, claimed(`SELECT t.job_id, t.seq FROM tasks t WHERE `+where+`
		AND `+notClaimed(4)+`
		ORDER BY t.seq LIMIT $4`, 4)+` ORDER BY t.seq`, db.claimArgs(jobID, afterSeq, due, limit)...)
}

// claim runs a claiming query (claimed) under the job's claim lock, held
// to commit: one runner claims a job's tasks at a time, and its query's
// snapshot, taken after the lock, has every claim before it and every
// result, so it never claims a task that another runner claims or has
// finished. Row locks (FOR UPDATE SKIP LOCKED) would do the first, not
// the second: a result that commits after the query's snapshot deletes
// the claim that kept its task out, and the task would run again; they
// also cost a write to every task's row.
func (db *DB) claim(ctx context.Context, jobID int64, query string, args ...any) ([]store.Task, error) {
	var tasks []store.Task
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if err := db.lockJobs(ctx, tx, jobID); err != nil {
			return err
		}
		// See pending: no materialized nested loops over the claims.
		if _, err := tx.Exec(ctx, "SET LOCAL enable_material = off"); err != nil {
			return err
		}
		var err error
		tasks, err = queryTasks(ctx, tx, jobID, query, args...)
		return err
	})
	return tasks, err
}

// DueTasks returns up to limit of a job's tasks whose backoff ended by
// now, soonest due first, claimed by a runner as it reads.
func (db *DB) DueTasks(ctx context.Context, jobID int64, now time.Time, limit int) ([]store.Task, error) {
	where := `t.job_id = $1 AND t.not_before IS NOT NULL AND t.not_before <= $2 AND ` + unfinished
	var tasks []store.Task
	var err error
	if db.runners.id() == 0 {
		tasks, err = queryTasks(ctx, db.pool, jobID, `SELECT `+taskColumns+` FROM tasks t WHERE `+where+` ORDER BY t.not_before LIMIT $3`,
			jobID, now.UnixNano(), limit)
	} else {
		tasks, err = db.claim(ctx, jobID, claimed(`SELECT t.job_id, t.seq FROM tasks t WHERE `+where+` AND `+notClaimed(3)+`
			ORDER BY t.not_before LIMIT $3`, 3)+` ORDER BY t.not_before`,
			db.claimArgs(jobID, now.UnixNano(), limit)...)
	}
	if err != nil {
		return nil, fmt.Errorf("due tasks of job %d: %w", jobID, err)
	}
	return tasks, nil
}

// NextDue reports the earliest due time of a job's waiting tasks.
func (db *DB) NextDue(ctx context.Context, jobID int64) (time.Time, bool, error) {
	var notBefore int64
	err := db.pool.QueryRow(ctx, `SELECT t.not_before FROM tasks t
		WHERE t.job_id = $1 AND t.not_before IS NOT NULL AND `+unfinished+` ORDER BY t.not_before LIMIT 1`, jobID).Scan(&notBefore)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("waiting tasks of job %d: %w", jobID, classify(err))
	}
	return time.Unix(0, notBefore), true, nil
}

// MinWaitingSeq is the lowest seq of a job's waiting tasks, 0 if none.
func (db *DB) MinWaitingSeq(ctx context.Context, jobID int64) (int64, error) {
	var seq int64
	err := db.pool.QueryRow(ctx, `SELECT coalesce(min(t.seq), 0) FROM tasks t
		WHERE t.job_id = $1 AND t.not_before IS NOT NULL AND `+unfinished, jobID).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("waiting tasks of job %d: %w", jobID, classify(err))
	}
	return seq, nil
}

// Tasks lists a job's tasks in seq order.
func (db *DB) Tasks(ctx context.Context, jobID int64) ([]store.TaskRow, error) {
	return db.TasksInState(ctx, jobID, "", 0, math.MaxInt32)
}

// TasksInState lists a page of a job's tasks in seq order after afterSeq,
// only those in state unless it is empty.
func (db *DB) TasksInState(ctx context.Context, jobID int64, state store.State, afterSeq int64, limit int) ([]store.TaskRow, error) {
	if limit < 0 {
		limit = math.MaxInt32
	}
	q := `SELECT * FROM (SELECT t.seq, t.uuid, t.kind, t.payload, coalesce(r.attempts, t.attempts), t.interrupts,
			CASE WHEN r.state IS NOT NULL THEN r.state WHEN u.started_at IS NOT NULL THEN 'running' ELSE 'pending' END AS state,
			r.result, CASE WHEN r.state IS NULL THEN t.error ELSE r.error END, r.time_ns, coalesce(r.started_at, u.started_at), r.finished_at
		FROM tasks t
		LEFT JOIN results r ON r.job_id = t.job_id AND r.seq = t.seq AND r.seq > $2
		LEFT JOIN running u ON u.job_id = t.job_id AND u.seq = t.seq AND u.seq > $2
		WHERE t.job_id = $1 AND t.seq > $2) x WHERE ($3 = '' OR state = $3) ORDER BY seq LIMIT $4`
	if state.Final() {
		// From the results, not every task: the failed of a million
		// tasks are a few rows of the results_failed index.
		q = `SELECT t.seq, t.uuid, t.kind, t.payload, coalesce(r.attempts, t.attempts), t.interrupts, r.state,
				r.result, r.error, r.time_ns, r.started_at, r.finished_at
			FROM results r JOIN tasks t ON t.job_id = r.job_id AND t.seq = r.seq
			WHERE r.job_id = $1 AND r.seq > $2 AND r.state = $3 ORDER BY r.seq LIMIT $4`
	}
	rows, err := db.pool.Query(ctx, q, jobID, afterSeq, string(state), limit)
	if err != nil {
		return nil, fmt.Errorf("tasks of job %d: %w", jobID, classify(err))
	}
	defer rows.Close()
	var out []store.TaskRow
	for rows.Next() {
		var (
			t                         = store.TaskRow{Task: store.Task{JobID: jobID}}
			st                        string
			errText                   *string
			timeNS, started, finished *int64
		)
		if err := rows.Scan(&t.Seq, &t.UUID, &t.Kind, &t.Payload, &t.Attempts, &t.Interrupts, &st,
			&t.Result, &errText, &timeNS, &started, &finished); err != nil {
			return nil, fmt.Errorf("tasks of job %d: %w", jobID, err)
		}
		t.State = store.State(st)
		if len(t.Result) == 0 {
			t.Result = nil
		}
		if errText != nil {
			t.Error = *errText
		}
		if timeNS != nil {
			t.Time = time.Duration(*timeNS)
		}
		if started != nil {
			t.StartedAt = time.Unix(0, *started)
		}
		if finished != nil {
			t.FinishedAt = time.Unix(0, *finished)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tasks of job %d: %w", jobID, classify(err))
	}
	return out, nil
}

// FindTask finds a task by its uuid or a unique prefix of it.
func (db *DB) FindTask(ctx context.Context, ref string) (store.TaskRow, error) {
	ref, err := normalRef("task", ref)
	if err != nil {
		return store.TaskRow{}, err
	}
	rows, err := db.pool.Query(ctx, "SELECT job_id, seq FROM tasks WHERE uuid >= $1 AND uuid < $2 ORDER BY uuid LIMIT 2", ref, ref+"\x7f")
	if err != nil {
		return store.TaskRow{}, fmt.Errorf("find task %s: %w", ref, classify(err))
	}
	type key struct{ job, seq int64 }
	var keys []key
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.job, &k.seq); err != nil {
			rows.Close()
			return store.TaskRow{}, err
		}
		keys = append(keys, k)
	}
	rows.Close()
	switch len(keys) {
	case 0:
		return store.TaskRow{}, fmt.Errorf("task %s: %w", ref, store.ErrNotFound)
	case 2:
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
	rows, err := db.pool.Query(ctx, `SELECT seq, attempt, state, coalesce(error, ''), time_ns, started_at, finished_at
		FROM attempts WHERE job_id = $1 ORDER BY seq, attempt`, jobID)
	if err != nil {
		return nil, fmt.Errorf("attempts of job %d: %w", jobID, classify(err))
	}
	defer rows.Close()
	var out []store.Attempt
	for rows.Next() {
		var a store.Attempt
		var st string
		var took, started, finished int64
		if err := rows.Scan(&a.Seq, &a.Attempt, &st, &a.Error, &took, &started, &finished); err != nil {
			return nil, fmt.Errorf("attempts of job %d: %w", jobID, err)
		}
		a.State = store.State(st)
		a.Time, a.StartedAt, a.FinishedAt = time.Duration(took), time.Unix(0, started), time.Unix(0, finished)
		out = append(out, a)
	}
	return out, classify(rows.Err())
}

// KnownTasks reports which of the task uuids are this database's and
// claimed by no live runner: this one, and others on this host, run
// theirs meanwhile.
func (db *DB) KnownTasks(ctx context.Context, uuids []string) (map[string]bool, error) {
	known := map[string]bool{}
	rows, err := db.pool.Query(ctx, `SELECT t.uuid FROM tasks t WHERE t.uuid = ANY($2) AND NOT EXISTS (
		SELECT 1 FROM running u JOIN runners g ON g.id = u.runner_id
		WHERE u.job_id = t.job_id AND u.seq = t.seq AND NOT `+gone+`)`, time.Now().UnixNano(), uuids)
	if err != nil {
		return nil, fmt.Errorf("known tasks: %w", classify(err))
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("known tasks: %w", err)
		}
		known[u] = true
	}
	return known, classify(rows.Err())
}

// RunningGroups lists the process groups recorded with the start marks of
// the tasks of runners on this host that are gone: only those, since a
// process group id means nothing on another machine.
func (db *DB) RunningGroups(ctx context.Context) ([]store.RunningGroup, error) {
	host, _ := os.Hostname()
	rows, err := db.pool.Query(ctx, `SELECT u.pgid, coalesce(u.pstart, 0) FROM running u JOIN runners g ON g.id = u.runner_id
		WHERE u.pgid IS NOT NULL AND u.runner_id <> $2 AND g.host = $3 AND `+gone,
		time.Now().UnixNano(), db.runners.id(), host)
	if err != nil {
		return nil, fmt.Errorf("running process groups: %w", classify(err))
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
	return out, classify(rows.Err())
}
