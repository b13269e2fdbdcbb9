package postgres

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pcd-dev/pcd/store"
)

const jobColumns = `id, uuid, name, state, sealed, round, workers, queue_size, total,
	succeeded, failed, cancelled, elapsed_ns, created_at, started_at, finished_at, sinks, done_through,
	paused, priority, start_at, grp, halt, after_mode, coalesce(halting, ''), kinds, coalesce(waiting, '')`

func scanJob(row pgx.Row) (store.Job, error) {
	var (
		j                 store.Job
		state             string
		elapsed, created  int64
		started, finished *int64
		startAt           *int64
		after             int
		kinds             []byte
	)
	err := row.Scan(&j.ID, &j.UUID, &j.Name, &state, &j.Sealed, &j.Round, &j.Workers, &j.QueueSize,
		&j.Total, &j.Succeeded, &j.Failed, &j.Cancelled, &elapsed, &created, &started, &finished, &j.Sinks, &j.DoneThrough,
		&j.Paused, &j.Priority, &startAt, &j.Group, &j.Halt, &after, &j.Halting, &kinds, &j.Waiting)
	if err != nil {
		return store.Job{}, err
	}
	j.Kinds = store.ParseKinds(kinds)
	j.After = store.AfterMode(after)
	if startAt != nil {
		j.StartAt = time.Unix(0, *startAt)
	}
	j.State = store.State(state)
	j.Elapsed = time.Duration(elapsed)
	j.CreatedAt = time.Unix(0, created)
	if started != nil {
		j.StartedAt = time.Unix(0, *started)
	}
	if finished != nil {
		j.FinishedAt = time.Unix(0, *finished)
	}
	if len(j.Sinks) == 0 {
		j.Sinks = nil
	}
	return j, nil
}

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// queryJobs reads the jobs q selects (with jobColumns).
func queryJobs(ctx context.Context, q querier, sql string, args ...any) ([]store.Job, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	var out []store.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, classify(rows.Err())
}

func jobTx(ctx context.Context, q querier, id int64, lock bool) (store.Job, error) {
	sql := "SELECT " + jobColumns + " FROM jobs WHERE id = $1"
	if lock {
		sql += " FOR UPDATE"
	}
	j, err := scanJob(q.QueryRow(ctx, sql, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Job{}, fmt.Errorf("job %d: %w", id, store.ErrNotFound)
	}
	return j, err
}

// CreateJob writes a job and its tasks in one transaction, the tasks with
// COPY; More's batches stream into the same COPY, so memory holds one
// batch at a time. An Open job's submitter holds an advisory lock on a
// connection of its own until SealJob, taken before the job's row
// commits: SealOrphan seals the job of a submitter that is gone.
func (db *DB) CreateJob(ctx context.Context, nj store.NewJob) (store.Job, error) {
	job, err := store.NewJobRow(nj)
	if err != nil {
		return store.Job{}, err
	}
	var conn *pgxpool.Conn
	if nj.Open {
		if conn, err = db.pool.Acquire(ctx); err != nil {
			return store.Job{}, fmt.Errorf("create job: %w", classify(err))
		}
	}
	err = func() error {
		var tx pgx.Tx
		var err error
		if conn != nil {
			tx, err = conn.Begin(ctx)
		} else {
			tx, err = db.pool.Begin(ctx)
		}
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		if err := insertJob(ctx, tx, &job, nj); err != nil {
			return err
		}
		if conn != nil {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_lock($1)", db.submitKey(job.ID)); err != nil {
				return err
			}
		}
		return tx.Commit(ctx)
	}()
	if errors.Is(err, store.ErrDuplicate) {
		if conn != nil {
			conn.Release()
		}
		return job, fmt.Errorf("create job: key %q: %w", nj.Key, store.ErrDuplicate)
	}
	if err != nil {
		if conn != nil {
			// The lock, if taken, goes with the session.
			conn.Conn().Close(context.WithoutCancel(ctx))
			conn.Release()
		}
		if errors.Is(err, store.ErrDuplicate) {
			return job, err
		}
		return store.Job{}, fmt.Errorf("create job: %w", classify(err))
	}
	if conn != nil {
		db.submits.hold(job.ID, conn)
	}
	db.analyzeAfter(ctx, job.Total)
	return job, nil
}

// insertJob writes job and its tasks in tx: ErrDuplicate, with job set to
// the existing one, if a job has nj's key.
func insertJob(ctx context.Context, tx pgx.Tx, job *store.Job, nj store.NewJob) error {
	if nj.Key != "" {
		existing, err := scanJob(tx.QueryRow(ctx, "SELECT "+jobColumns+" FROM jobs WHERE key = $1", nj.Key))
		if err == nil {
			*job = existing
			return store.ErrDuplicate
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
	}
	if err := tx.QueryRow(ctx, `INSERT INTO jobs (uuid, name, sealed, workers, queue_size, created_at, key, sinks,
		priority, start_at, grp, halt, after_mode)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id`,
		job.UUID, job.Name, job.Sealed, job.Workers, job.QueueSize, job.CreatedAt.UnixNano(), nullString(nj.Key), nullBytes(nj.Sinks),
		job.Priority, nullTime(job.StartAt), job.Group, job.Halt, int(job.After),
	).Scan(&job.ID); err != nil {
		return err
	}
	for _, dep := range nj.After {
		tag, err := tx.Exec(ctx, `INSERT INTO job_deps (job_id, dep_id) SELECT $1, id FROM jobs WHERE id = $2
			ON CONFLICT DO NOTHING`, job.ID, dep)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			var n int
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM job_deps WHERE job_id = $1 AND dep_id = $2", job.ID, dep).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("create job: the job it waits for (%d): %w", dep, store.ErrNotFound)
			}
		}
	}
	kinds := store.KindSet{}
	n, err := copyTasks(ctx, tx, job.ID, 1, nj.Tasks, nj.More, kinds)
	if err != nil {
		return err
	}
	job.Total, job.Kinds = n, kinds.Names()
	if _, err := tx.Exec(ctx, "UPDATE jobs SET total = $1, kinds = $2 WHERE id = $3", n, string(kinds.JSON()), job.ID); err != nil {
		return err
	}
	return nil
}

// CreateJobTx writes a whole job inside the caller's transaction, a
// pgx.Tx on this store's database and schema, so that the job commits or
// rolls back with the caller's other writes. The runners are woken by the
// commit itself (a NOTIFY in tx); nothing runs the job before.
func (db *DB) CreateJobTx(ctx context.Context, caller any, nj store.NewJob) (store.Job, error) {
	tx, ok := caller.(pgx.Tx)
	if !ok {
		return store.Job{}, fmt.Errorf("create job: the PostgreSQL store takes a pgx.Tx, not a %T", caller)
	}
	if nj.Open || nj.More != nil {
		return store.Job{}, errors.New("create job: a job created in the caller's transaction is whole: no Open, no More")
	}
	var theirs, ours string
	const where = "SELECT current_database() || '.' || coalesce(current_schema(), '')"
	if err := tx.QueryRow(ctx, where).Scan(&theirs); err != nil {
		return store.Job{}, fmt.Errorf("create job: the caller's transaction: %w", classify(err))
	}
	if err := db.pool.QueryRow(ctx, where).Scan(&ours); err != nil {
		return store.Job{}, fmt.Errorf("create job: %w", classify(err))
	}
	if theirs != ours {
		return store.Job{}, fmt.Errorf("create job: the caller's transaction is on %s, not on %s", theirs, ours)
	}
	job, err := store.NewJobRow(nj)
	if err != nil {
		return store.Job{}, err
	}
	// A savepoint: a failed insert leaves the caller's transaction usable.
	sp, err := tx.Begin(ctx)
	if err != nil {
		return store.Job{}, fmt.Errorf("create job: %w", classify(err))
	}
	defer sp.Rollback(context.WithoutCancel(ctx))
	err = insertJob(ctx, sp, &job, nj)
	if errors.Is(err, store.ErrDuplicate) {
		return job, fmt.Errorf("create job: key %q: %w", nj.Key, store.ErrDuplicate)
	}
	if err == nil {
		_, err = sp.Exec(ctx, "SELECT pg_notify($1, '')", db.wakeChannel())
	}
	if err == nil {
		err = sp.Commit(ctx)
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("create job: %w", classify(err))
	}
	return job, nil
}

// analyzeAfter refreshes the planner's statistics of tasks after a write
// of n tasks, if n is large: a claim's plan depends on them (with the
// statistics of an empty table, PostgreSQL sorted a million rows for
// each page of a thousand). Best effort: autovacuum does it too, later.
func (db *DB) analyzeAfter(ctx context.Context, n int64) {
	if n >= analyzeEvery {
		_, _ = db.pool.Exec(ctx, "ANALYZE tasks")
	}
}

// analyzeEvery is the size of a write after which tasks are analyzed.
const analyzeEvery = 10000

// submitKey is the advisory lock a streaming submitter holds on its job.
func (db *DB) submitKey(jobID int64) int64 {
	return int64(uint64(db.migrateLock) ^ (uint64(jobID) * 0x9E3779B97F4A7C15))
}

// submits holds the connections of this process's streaming submits.
type submits struct {
	mu    sync.Mutex
	conns map[int64]*pgxpool.Conn
}

func (s *submits) hold(jobID int64, c *pgxpool.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[int64]*pgxpool.Conn{}
	}
	s.conns[jobID] = c
}

// release ends the submitter's session lock by closing its connection.
func (s *submits) release(jobID int64) {
	s.mu.Lock()
	c := s.conns[jobID]
	delete(s.conns, jobID)
	s.mu.Unlock()
	if c != nil {
		c.Conn().Close(context.Background())
		c.Release()
	}
}

func (s *submits) closeAll() {
	s.mu.Lock()
	ids := make([]int64, 0, len(s.conns))
	for id := range s.conns {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		s.release(id)
	}
}

// taskColumnsIn are the columns COPY writes.
var taskColumnsIn = []string{"job_id", "seq", "uuid", "kind", "payload", "max_attempts", "backoff_base_ns", "backoff_cap_ns", "timeout_ns"}

// copyTasks writes tasks, then more's batches, numbered from seq on, with
// one COPY; it returns how many it wrote.
func copyTasks(ctx context.Context, tx pgx.Tx, jobID, seq int64, tasks []store.NewTask, more iter.Seq2[[]store.NewTask, error], kinds store.KindSet) (int64, error) {
	src := &taskSource{jobID: jobID, seq: seq - 1, batch: tasks, kinds: kinds}
	if more != nil {
		next, stop := iter.Pull2(more)
		defer stop()
		src.next = next
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"tasks"}, taskColumnsIn, src)
	if src.err != nil {
		return 0, src.err
	}
	return n, err
}

// taskSource feeds COPY one task at a time from the batches.
type taskSource struct {
	jobID, seq int64
	batch      []store.NewTask
	i          int
	next       func() ([]store.NewTask, error, bool)
	kinds      store.KindSet // the kinds fed, added to
	row        []any
	err        error
}

func (s *taskSource) Next() bool {
	for s.i >= len(s.batch) {
		if s.next == nil {
			return false
		}
		batch, err, ok := s.next()
		if err != nil {
			s.err = err
			return false
		}
		if !ok {
			return false
		}
		s.batch, s.i = batch, 0
	}
	t := s.batch[s.i]
	s.i++
	s.seq++
	if _, ok := s.kinds[t.Kind]; !ok {
		s.kinds[t.Kind] = struct{}{}
	}
	id, err := uuid.NewV7()
	if err != nil {
		s.err = err
		return false
	}
	s.row = append(s.row[:0], s.jobID, s.seq, id.String(), t.Kind, []byte(t.Payload),
		max(t.Retry.MaxAttempts, 1), int64(t.Retry.BackoffBase), int64(t.Retry.BackoffCap), int64(t.Retry.Timeout))
	return true
}

func (s *taskSource) Values() ([]any, error) { return s.row, nil }
func (s *taskSource) Err() error             { return s.err }

// AppendTasks adds tasks to an unsealed job in one transaction.
func (db *DB) AppendTasks(ctx context.Context, jobID int64, tasks []store.NewTask) error {
	err := db.tx(ctx, func(tx pgx.Tx) error {
		var total int64
		var sealed bool
		var had []byte
		if err := tx.QueryRow(ctx, "SELECT total, sealed, kinds FROM jobs WHERE id = $1 FOR UPDATE", jobID).Scan(&total, &sealed, &had); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return store.ErrNotFound
			}
			return err
		}
		if sealed {
			return store.ErrSealed
		}
		kinds := store.KindSet{}
		kinds.AddNames(store.ParseKinds(had))
		n, err := copyTasks(ctx, tx, jobID, total+1, tasks, nil, kinds)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE jobs SET total = total + $1, kinds = $2 WHERE id = $3", n, string(kinds.JSON()), jobID)
		return err
	})
	if err != nil {
		return fmt.Errorf("append tasks to job %d: %w", jobID, err)
	}
	db.analyzeAfter(ctx, int64(len(tasks)))
	return nil
}

// SealJob records that a job has all its tasks, and ends its submitter's
// lock.
func (db *DB) SealJob(ctx context.Context, jobID int64) error {
	if _, err := db.pool.Exec(ctx, "UPDATE jobs SET sealed = true WHERE id = $1", jobID); err != nil {
		return fmt.Errorf("seal job %d: %w", jobID, classify(err))
	}
	db.submits.release(jobID)
	return nil
}

// SealOrphan seals an open job whose submitter's lock is free: its
// session is gone.
func (db *DB) SealOrphan(ctx context.Context, jobID int64) (bool, error) {
	var sealed bool
	err := db.tx(ctx, func(tx pgx.Tx) error {
		var free bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", db.submitKey(jobID)).Scan(&free); err != nil {
			return err
		}
		if !free {
			return nil
		}
		tag, err := tx.Exec(ctx, "UPDATE jobs SET sealed = true WHERE id = $1 AND NOT sealed", jobID)
		sealed = tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("seal job %d: %w", jobID, err)
	}
	return sealed, nil
}

// CleanStaged has nothing to clean: a PostgreSQL submit is one
// transaction, however big.
func (db *DB) CleanStaged(ctx context.Context) (int, error) { return 0, nil }

// Job reads one job by its number.
func (db *DB) Job(ctx context.Context, id int64) (store.Job, error) {
	j, err := jobTx(ctx, db.pool, id, false)
	if err != nil {
		return store.Job{}, classify(err)
	}
	return j, nil
}

// UnfinishedJobs lists jobs without a committed completion, oldest first.
func (db *DB) UnfinishedJobs(ctx context.Context) ([]store.Job, error) {
	jobs, err := queryJobs(ctx, db.pool, "SELECT "+jobColumns+" FROM jobs WHERE finished_at IS NULL ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("unfinished jobs: %w", err)
	}
	return jobs, nil
}

// RunnableJobs lists up to limit unfinished jobs, oldest first, with
// something to run, leaving out skip and open jobs whose committed tasks
// are all done.
func (db *DB) RunnableJobs(ctx context.Context, q store.RunnableQuery) ([]store.Job, error) {
	if q.Limit <= 0 {
		return nil, nil
	}
	full := q.FullGroups
	if full == nil {
		full = []string{}
	}
	jobs, err := queryJobs(ctx, db.pool, "SELECT "+jobColumns+` FROM jobs
		WHERE finished_at IS NULL AND NOT (NOT sealed AND total = succeeded + failed + cancelled)
		AND NOT paused AND (start_at IS NULL OR start_at <= $2) AND grp <> ALL ($3)
		AND (after_mode = 0 OR NOT EXISTS (SELECT 1 FROM job_deps d JOIN jobs p ON p.id = d.dep_id
			WHERE d.job_id = jobs.id AND p.finished_at IS NULL))
		AND ($4::jsonb IS NULL OR coalesce(kinds, '[]') <@ $4::jsonb)
		ORDER BY priority DESC, id LIMIT $1`, q.Limit+len(q.Skip), q.Now.UnixNano(), full, knownJSON(q.Kinds))
	if err != nil {
		return nil, fmt.Errorf("runnable jobs: %w", err)
	}
	out := jobs[:0]
	for _, j := range jobs {
		if !q.Skip[j.ID] && len(out) < q.Limit {
			out = append(out, j)
		}
	}
	return out, nil
}

// knownJSON is a runner's kinds as a JSON array, nil for any kind.
func knownJSON(kinds []string) *string {
	if kinds == nil {
		return nil
	}
	set := store.KindSet{}
	set.AddNames(kinds)
	known := string(set.JSON())
	return &known
}

// MarkWaiting writes, into each unfinished job that has a kind outside
// known, why it waits (reason of the kinds missing), and says how many
// jobs it changed.
func (db *DB) MarkWaiting(ctx context.Context, known []string, reason func(missing []string) string) (int64, error) {
	rows, err := db.pool.Query(ctx, `SELECT id, kinds, coalesce(waiting, '') FROM jobs
		WHERE finished_at IS NULL AND NOT (coalesce(kinds, '[]') <@ $1::jsonb)`, knownJSON(known))
	if err != nil {
		return 0, fmt.Errorf("mark waiting jobs: %w", classify(err))
	}
	var ids []int64
	var reasons []string
	for rows.Next() {
		var id int64
		var kinds []byte
		var was string
		if err := rows.Scan(&id, &kinds, &was); err != nil {
			rows.Close()
			return 0, fmt.Errorf("mark waiting jobs: %w", classify(err))
		}
		if now := reason(store.MissingKinds(store.ParseKinds(kinds), known)); now != was {
			ids, reasons = append(ids, id), append(reasons, now)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(ids) == 0 {
		return 0, classify(err)
	}
	// A statement a row, each its own transaction: it holds no lock
	// while it waits for another.
	var n int64
	for i, id := range ids {
		tag, err := db.pool.Exec(ctx, "UPDATE jobs SET waiting = $1 WHERE id = $2 AND finished_at IS NULL", reasons[i], id)
		if err != nil {
			return n, fmt.Errorf("mark waiting jobs: %w", classify(err))
		}
		n += tag.RowsAffected()
	}
	return n, nil
}

// JobDeps are the jobs a job waits for.
func (db *DB) JobDeps(ctx context.Context, jobID int64) ([]store.Job, error) {
	jobs, err := queryJobs(ctx, db.pool, "SELECT "+jobColumns+" FROM jobs WHERE id IN (SELECT dep_id FROM job_deps WHERE job_id = $1) ORDER BY id", jobID)
	if err != nil {
		return nil, fmt.Errorf("jobs that job %d waits for: %w", jobID, err)
	}
	return jobs, nil
}

// PauseJobs pauses (or resumes) the unfinished jobs among ids, or every
// unfinished job if ids is empty.
func (db *DB) PauseJobs(ctx context.Context, ids []int64, paused bool) (int64, error) {
	if ids == nil {
		ids = []int64{}
	}
	tag, err := db.pool.Exec(ctx, `UPDATE jobs SET paused = $1 WHERE finished_at IS NULL AND paused <> $1
		AND (cardinality($2::bigint[]) = 0 OR id = ANY ($2))`, paused, ids)
	if err != nil {
		return 0, fmt.Errorf("pause jobs: %w", classify(err))
	}
	return tag.RowsAffected(), nil
}

// HaltJob records why a job halted, once.
func (db *DB) HaltJob(ctx context.Context, jobID int64, reason string) error {
	if _, err := db.pool.Exec(ctx, "UPDATE jobs SET halting = $1 WHERE id = $2 AND halting IS NULL AND finished_at IS NULL", reason, jobID); err != nil {
		return fmt.Errorf("halt job %d: %w", jobID, classify(err))
	}
	return nil
}

// SetGroup writes a group's limits.
func (db *DB) SetGroup(ctx context.Context, g store.Group) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO groups (name, max_jobs, workers, memory, cpus) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (name) DO UPDATE SET max_jobs = excluded.max_jobs, workers = excluded.workers,
			memory = excluded.memory, cpus = excluded.cpus`, g.Name, g.MaxJobs, g.Workers, g.Memory, g.CPUs)
	if err != nil {
		return fmt.Errorf("set group %q: %w", g.Name, classify(err))
	}
	return nil
}

// Groups lists the groups that have limits.
func (db *DB) Groups(ctx context.Context) ([]store.Group, error) {
	rows, err := db.pool.Query(ctx, `SELECT name, max_jobs, workers, memory, cpus FROM groups
		ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("groups: %w", classify(err))
	}
	defer rows.Close()
	var out []store.Group
	for rows.Next() {
		var g store.Group
		if err := rows.Scan(&g.Name, &g.MaxJobs, &g.Workers, &g.Memory, &g.CPUs); err != nil {
			return nil, fmt.Errorf("groups: %w", classify(err))
		}
		out = append(out, g)
	}
	return out, classify(rows.Err())
}

// OpenJobs lists the unfinished jobs that are not sealed.
func (db *DB) OpenJobs(ctx context.Context) ([]store.Job, error) {
	jobs, err := queryJobs(ctx, db.pool, "SELECT "+jobColumns+" FROM jobs WHERE NOT sealed AND finished_at IS NULL ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("open jobs: %w", err)
	}
	return jobs, nil
}

// UnfinishedSummary adds up the unfinished jobs.
func (db *DB) UnfinishedSummary(ctx context.Context) (n int, sum store.Job, err error) {
	err = db.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(total), 0)::bigint, coalesce(sum(succeeded), 0)::bigint,
		coalesce(sum(failed), 0)::bigint, coalesce(sum(cancelled), 0)::bigint FROM jobs WHERE finished_at IS NULL`).
		Scan(&n, &sum.Total, &sum.Succeeded, &sum.Failed, &sum.Cancelled)
	if err != nil {
		return 0, store.Job{}, fmt.Errorf("unfinished jobs: %w", classify(err))
	}
	return n, sum, nil
}

// StopJob records that a runner stopped running an unfinished job.
func (db *DB) StopJob(ctx context.Context, id int64, elapsed time.Duration) error {
	_, err := db.pool.Exec(ctx, "UPDATE jobs SET elapsed_ns = $1, state = 'pending' WHERE id = $2 AND finished_at IS NULL", int64(elapsed), id)
	if err != nil {
		return fmt.Errorf("stop job %d: %w", id, classify(err))
	}
	return nil
}

// FindJob finds a job by its uuid or a unique prefix of it.
func (db *DB) FindJob(ctx context.Context, ref string) (store.Job, error) {
	ref, err := normalRef("job", ref)
	if err != nil {
		return store.Job{}, err
	}
	found, err := queryJobs(ctx, db.pool, "SELECT "+jobColumns+" FROM jobs WHERE uuid >= $1 AND uuid < $2 ORDER BY uuid LIMIT 2", ref, ref+"\x7f")
	if err != nil {
		return store.Job{}, fmt.Errorf("find job %s: %w", ref, err)
	}
	switch len(found) {
	case 0:
		return store.Job{}, fmt.Errorf("job %s: %w", ref, store.ErrNotFound)
	case 2:
		return store.Job{}, fmt.Errorf("job %s: %w: it starts %s and %s; give more characters", ref, store.ErrAmbiguous, found[0].UUID, found[1].UUID)
	}
	return found[0], nil
}

// normalRef checks and lower-cases a job's or task's id or prefix.
func normalRef(what, ref string) (string, error) {
	ref = strings.ToLower(strings.TrimSpace(ref))
	if ref == "" || strings.Trim(ref, "0123456789abcdef-") != "" {
		return ref, fmt.Errorf("%s %q: %w: a %s id is hex digits and dashes", what, ref, store.ErrNotFound, what)
	}
	return ref, nil
}

// ListJobs lists the jobs that f selects, newest first.
func (db *DB) ListJobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	q := "SELECT " + jobColumns + " FROM jobs WHERE true"
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.State != "" {
		q += " AND state = " + arg(string(f.State))
	}
	if f.Name != "" {
		q += " AND strpos(lower(name), lower(" + arg(f.Name) + ")) > 0"
	}
	if f.Before > 0 {
		q += " AND id < " + arg(f.Before)
	}
	if f.Waiting {
		q += " AND coalesce(waiting, '') <> ''"
	}
	q += " ORDER BY id DESC LIMIT " + arg(f.Limit)
	jobs, err := queryJobs(ctx, db.pool, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// JobsWithSinks lists the jobs that have their own callback sinks; with a
// non-zero since, only those unfinished or finished after since.
func (db *DB) JobsWithSinks(ctx context.Context, since time.Time) ([]store.Job, error) {
	q := "SELECT " + jobColumns + " FROM jobs WHERE sinks IS NOT NULL"
	var args []any
	if !since.IsZero() {
		q += " AND (finished_at IS NULL OR finished_at > $1)"
		args = append(args, since.UnixNano())
	}
	jobs, err := queryJobs(ctx, db.pool, q+" ORDER BY id", args...)
	if err != nil {
		return nil, fmt.Errorf("jobs with sinks: %w", err)
	}
	return jobs, nil
}

// RetryJob puts a finished job's failed and cancelled tasks back to
// pending and opens a new round.
func (db *DB) RetryJob(ctx context.Context, jobID int64) (store.Job, error) {
	var job store.Job
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if err := db.lockJobs(ctx, tx, jobID); err != nil {
			return err
		}
		var err error
		if job, err = jobTx(ctx, tx, jobID, true); err != nil {
			return err
		}
		var pruning bool
		if err := tx.QueryRow(ctx, "SELECT pruning FROM jobs WHERE id = $1", jobID).Scan(&pruning); err != nil {
			return err
		}
		if err := store.CanRetry(job, pruning); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE tasks t SET attempts = r.attempts, error = NULL, not_before = NULL,
				interrupts_base = t.interrupts
			FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq
			AND t.job_id = $1 AND r.state IN ('failed', 'cancelled')`, jobID); err != nil {
			return err
		}
		// The earlier round's callbacks keep the results they refer to.
		if _, err := tx.Exec(ctx, `UPDATE callbacks c SET result_at = NULL,
				message = substring(c.message FROM 1 FOR c.result_at) || convert_to('`+resultMemberSQL+`', 'UTF8') || r.result ||
					substring(c.message FROM c.result_at + 1)
			FROM results r WHERE r.job_id = c.job_id AND r.seq = c.task_seq
			AND c.job_id = $1 AND c.result_at IS NOT NULL AND r.state IN ('failed', 'cancelled')`, jobID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM results WHERE job_id = $1 AND state IN ('failed', 'cancelled')`, jobID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE jobs SET state = 'pending', round = round + 1, failed = 0,
			cancelled = 0, sealed = true, finished_at = NULL, done_through = 0, halting = NULL, paused = false WHERE id = $1`, jobID); err != nil {
			return err
		}
		job = store.Retried(job)
		return nil
	})
	if errors.Is(err, store.ErrConflict) {
		return store.Job{}, err
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("retry job %d: %w", jobID, err)
	}
	return job, nil
}

// CountJobs counts the jobs in each state, with their tasks.
func (db *DB) CountJobs(ctx context.Context) (map[store.State]store.JobTally, error) {
	rows, err := db.pool.Query(ctx, `SELECT state, count(*), coalesce(sum(total), 0)::bigint,
		coalesce(sum(succeeded + failed + cancelled), 0)::bigint, count(nullif(waiting, '')),
		count(*) FILTER (WHERE paused) FROM jobs WHERE NOT staging GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", classify(err))
	}
	defer rows.Close()
	out := map[store.State]store.JobTally{}
	for rows.Next() {
		var state string
		var t store.JobTally
		if err := rows.Scan(&state, &t.Jobs, &t.Tasks, &t.Done, &t.Waiting, &t.Paused); err != nil {
			return nil, fmt.Errorf("count jobs: %w", classify(err))
		}
		out[store.State(state)] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count jobs: %w", classify(err))
	}
	return out, nil
}

// KillTask asks the runner of a running task to stop it.
func (db *DB) KillTask(ctx context.Context, jobID, seq int64, requeue bool) error {
	mode := 1
	if requeue {
		mode = 2
	}
	tag, err := db.pool.Exec(ctx, "UPDATE running SET kill = $1 WHERE job_id = $2 AND seq = $3 AND started_at IS NOT NULL", mode, jobID, seq)
	if err != nil {
		return fmt.Errorf("kill task %d: %w", seq, classify(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("task %d is not running: %w", seq, store.ErrConflict)
	}
	return nil
}

// KillRequests are the job's running tasks that pcd kill asked to stop.
func (db *DB) KillRequests(ctx context.Context, jobID int64) (map[int64]bool, error) {
	rows, err := db.pool.Query(ctx, "SELECT seq, kill FROM running WHERE job_id = $1 AND kill <> 0", jobID)
	if err != nil {
		return nil, fmt.Errorf("kill requests: %w", classify(err))
	}
	defer rows.Close()
	var out map[int64]bool
	for rows.Next() {
		var seq int64
		var mode int
		if err := rows.Scan(&seq, &mode); err != nil {
			return nil, fmt.Errorf("kill requests: %w", classify(err))
		}
		if out == nil {
			out = map[int64]bool{}
		}
		out[seq] = mode == 2
	}
	return out, classify(rows.Err())
}
