package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/internal/resultref"
)

// chunkGap is the pause between two chunks of a big submit.
const chunkGap = 10 * time.Millisecond

// CreateJob writes a job and its tasks: the job exists whole or not at
// all. It is sealed unless nj.Open.
//
// A job whose tasks take longer than SubmitChunk to write (a big job file,
// through nj.More) is written in several transactions. Until the last one
// commits the job is staging: no runner or reader sees it, and this
// process holds its submit lock. If writing fails, CreateJob deletes what
// it wrote; if the process dies, the next runner to start (CleanStaged)
// does.
func (db *DB) CreateJob(ctx context.Context, nj store.NewJob) (store.Job, error) {
	job, err := store.NewJobRow(nj)
	if err != nil {
		return store.Job{}, err
	}
	c := &creation{db: db, nj: nj, job: job, kinds: store.KindSet{},
		more: func() ([]store.NewTask, error, bool) { return nil, nil, false }}
	if nj.More != nil {
		next, stop := iter.Pull2(nj.More)
		defer stop()
		c.more = next
	}
	c.kinds.Add(nj.Tasks)
	for {
		var last bool
		point := func() string {
			if last {
				return "submit" // the commit that makes the job visible
			}
			return "submit-chunk"
		}
		err = db.txPoints(ctx, point, func(tx *sql.Tx) error {
			last, err = c.write(ctx, tx)
			return err
		})
		if err != nil || last {
			break
		}
		// A gap for the writers waiting behind this one: they poll for
		// the lock every couple of milliseconds (whenFree).
		select {
		case <-time.After(chunkGap):
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
	}
	if err != nil && c.staging {
		// Best effort: what is left is deleted at the next start.
		if _, delErr := db.DeleteJob(context.WithoutCancel(ctx), c.job.ID); delErr != nil {
			err = errors.Join(err, fmt.Errorf("delete the job's written part: %w", delErr))
		}
	}
	if c.held && (err != nil || !nj.Open) {
		db.releaseSubmit(c.job.ID)
	}
	if errors.Is(err, errDuplicateKey) {
		return c.job, fmt.Errorf("create job: key %q: %w", nj.Key, store.ErrDuplicate)
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("create job: %w", err)
	}
	return c.job, nil
}

// creation is a job being created, in one or more transactions.
type creation struct {
	db    *DB
	nj    store.NewJob
	job   store.Job
	more  func() ([]store.NewTask, error, bool)
	kinds store.KindSet
	// held: this process holds the job's submit lock; staging: a chunk of
	// it committed while it was not whole.
	held, staging bool
}

// write runs one transaction of a creation: the job row first, then
// batches of tasks until they end (the last chunk) or SubmitChunk has
// passed.
func (c *creation) write(ctx context.Context, tx *sql.Tx) (last bool, err error) {
	began := time.Now()
	if c.job.ID == 0 {
		if err := insertJob(ctx, tx, &c.job, c.nj); err != nil {
			return false, err
		}
	}
	for time.Since(began) < store.SubmitChunk {
		batch, err, ok := c.more()
		if err != nil {
			return false, err
		}
		if !ok {
			last = true
			break
		}
		if err := insertTasks(ctx, tx, c.job.ID, c.job.Total+1, batch); err != nil {
			return false, err
		}
		c.job.Total += int64(len(batch))
		c.kinds.Add(batch)
	}
	if (c.nj.Open || !last) && !c.held {
		// Held before the job is visible (open) or committed (staging),
		// so that no runner sees either without its submitter's lock.
		if err := c.db.holdSubmit(c.job.ID); err != nil {
			return false, err
		}
		c.held = true
	}
	if !last {
		c.staging = true
		_, err = tx.ExecContext(ctx, "UPDATE jobs SET staging = 1, total = ?, kinds = ? WHERE id = ?", c.job.Total, string(c.kinds.JSON()), c.job.ID)
		return false, err
	}
	c.job.Kinds = c.kinds.Names()
	_, err = tx.ExecContext(ctx, "UPDATE jobs SET staging = 0, total = ?, kinds = ? WHERE id = ?", c.job.Total, string(c.kinds.JSON()), c.job.ID)
	return true, err
}

// insertJob writes job's row and nj.Tasks, and sets job.ID; a job that
// has nj.Key already is errDuplicateKey, with *job set to it.
func insertJob(ctx context.Context, tx *sql.Tx, job *store.Job, nj store.NewJob) error {
	if nj.Key != "" {
		existing, err := scanJob(tx.QueryRowContext(ctx, "SELECT "+jobColumns+" FROM jobs WHERE key = ?", nj.Key))
		if err == nil {
			*job = existing
			return errDuplicateKey
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	kinds := store.KindSet{}
	kinds.Add(nj.Tasks)
	job.Kinds = kinds.Names()
	res, err := tx.ExecContext(ctx, `INSERT INTO jobs (uuid, name, state, sealed, workers, queue_size, total, created_at, key, sinks,
		priority, start_at, grp, halt, after_mode, kinds)
		VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		job.UUID, job.Name, job.Sealed, job.Workers, job.QueueSize, job.Total, job.CreatedAt.UnixNano(), nullString(nj.Key),
		nullBytes(nj.Sinks), job.Priority, nullTime(job.StartAt), job.Group, job.Halt, job.After, string(kinds.JSON()))
	if err != nil {
		return err
	}
	if job.ID, err = res.LastInsertId(); err != nil {
		return err
	}
	for _, dep := range nj.After {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM jobs WHERE id = ? AND staging = 0", dep).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("create job: the job it waits for (%d): %w", dep, store.ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, "INSERT OR IGNORE INTO job_deps (job_id, dep_id) VALUES (?, ?)", job.ID, dep); err != nil {
			return err
		}
	}
	return insertTasks(ctx, tx, job.ID, 1, nj.Tasks)
}

// CreateJobTx writes a whole job inside tx, a transaction the caller
// opened on this database's file with its own database/sql handle
// (driver "sqlite", modernc.org/sqlite), so that the job commits or rolls
// back with the caller's other writes. The job may not be Open or have
// More: a transaction the caller holds cannot be chunked. Nothing runs it
// until tx commits; then Wake, or the runner's next look (within a second).
func (db *DB) CreateJobTx(ctx context.Context, caller any, nj store.NewJob) (store.Job, error) {
	tx, ok := caller.(*sql.Tx)
	if !ok {
		return store.Job{}, fmt.Errorf("create job: the SQLite store takes a *sql.Tx, not a %T", caller)
	}
	if nj.Open || nj.More != nil {
		return store.Job{}, errors.New("create job: a job created in the caller's transaction is whole: no Open, no More")
	}
	var file string
	if err := tx.QueryRowContext(ctx, "SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&file); err != nil {
		return store.Job{}, fmt.Errorf("create job: the caller's transaction: %w", err)
	}
	if !sameFile(file, db.path) {
		return store.Job{}, fmt.Errorf("create job: the caller's transaction is on %s, not on %s", file, db.path)
	}
	job, err := store.NewJobRow(nj)
	if err != nil {
		return store.Job{}, err
	}
	if err := insertJob(ctx, tx, &job, nj); err != nil {
		if errors.Is(err, errDuplicateKey) {
			return job, fmt.Errorf("create job: key %q: %w", nj.Key, store.ErrDuplicate)
		}
		return store.Job{}, fmt.Errorf("create job: %w", classify(err))
	}
	return job, nil
}

// sameFile says whether two paths name one file.
func sameFile(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// CleanStaged deletes the jobs that a submit left staging when it died
// (its submit lock is free), and returns how many.
func (db *DB) CleanStaged(ctx context.Context) (int, error) {
	jobs, err := db.queryJobs(ctx, "SELECT "+jobColumns+" FROM jobs WHERE staging = 1 ORDER BY id")
	if err != nil {
		return 0, fmt.Errorf("staging jobs: %w", err)
	}
	n := 0
	for _, j := range jobs {
		alive, err := db.submitterAlive(j.ID)
		if err != nil {
			return n, err
		}
		if alive {
			continue
		}
		if _, err := db.DeleteJob(ctx, j.ID); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

var errDuplicateKey = errors.New("duplicate key")

// insertTasks adds tasks numbered from seq on, with one prepared statement.
func insertTasks(ctx context.Context, tx *sql.Tx, jobID, seq int64, tasks []store.NewTask) error {
	// Multi-row INSERTs: per-statement overhead, not SQLite, dominates
	// one-row inserts through database/sql.
	const cols = 9
	stmts := map[int]*sql.Stmt{}
	defer func() {
		for _, s := range stmts {
			s.Close()
		}
	}()
	args := make([]any, 0, cols*taskChunks[0])
	for len(tasks) > 0 {
		n := taskChunks[len(taskChunks)-1]
		for _, size := range taskChunks {
			if size <= len(tasks) {
				n = size
				break
			}
		}
		stmt := stmts[n]
		if stmt == nil {
			var err error
			stmt, err = tx.PrepareContext(ctx, `INSERT INTO tasks (job_id, seq, uuid, kind, payload,
				max_attempts, backoff_base_ns, backoff_cap_ns, timeout_ns) VALUES `+
				strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?, ?), ", n), ", "))
			if err != nil {
				return err
			}
			stmts[n] = stmt
		}
		args = args[:0]
		for i, t := range tasks[:n] {
			id, err := uuid.NewV7()
			if err != nil {
				return err
			}
			args = append(args, jobID, seq+int64(i), id.String(), t.Kind, string(t.Payload),
				max(t.Retry.MaxAttempts, 1), int64(t.Retry.BackoffBase), int64(t.Retry.BackoffCap), int64(t.Retry.Timeout))
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("tasks %d to %d: %w", seq, seq+int64(n)-1, err)
		}
		tasks, seq = tasks[n:], seq+int64(n)
	}
	return nil
}

// taskChunks are the row counts of the multi-row INSERTs of tasks.
var taskChunks = []int{256, 32, 4, 1}

const jobColumns = `id, uuid, name, state, sealed, round, workers, queue_size, total,
	succeeded, failed, cancelled, elapsed_ns, created_at, started_at, finished_at, sinks, done_through,
	paused, priority, start_at, grp, halt, after_mode, coalesce(halting, ''), kinds, coalesce(waiting, '')`

type scanner interface{ Scan(...any) error }

// scanFunc is a scanner made of a function: a row with more columns than
// a scan function reads.
type scanFunc func(...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

func scanJob(s scanner) (store.Job, error) {
	var (
		j                 store.Job
		elapsed, created  int64
		started, finished sql.NullInt64
		sinks             sql.NullString
		startAt           sql.NullInt64
		kinds             sql.NullString
	)
	err := s.Scan(&j.ID, &j.UUID, &j.Name, &j.State, &j.Sealed, &j.Round, &j.Workers, &j.QueueSize,
		&j.Total, &j.Succeeded, &j.Failed, &j.Cancelled, &elapsed, &created, &started, &finished, &sinks, &j.DoneThrough,
		&j.Paused, &j.Priority, &startAt, &j.Group, &j.Halt, &j.After, &j.Halting, &kinds, &j.Waiting)
	if err != nil {
		return store.Job{}, err
	}
	j.Kinds = store.ParseKinds([]byte(kinds.String))
	if startAt.Valid {
		j.StartAt = time.Unix(0, startAt.Int64)
	}
	j.Elapsed = time.Duration(elapsed)
	j.CreatedAt = time.Unix(0, created)
	if started.Valid {
		j.StartedAt = time.Unix(0, started.Int64)
	}
	if finished.Valid {
		j.FinishedAt = time.Unix(0, finished.Int64)
	}
	if sinks.Valid && sinks.String != "" {
		j.Sinks = []byte(sinks.String)
	}
	return j, nil
}

// jobTx reads one job inside a write transaction.
func (db *DB) jobTx(ctx context.Context, tx *sql.Tx, id int64) (store.Job, error) {
	j, err := scanJob(tx.StmtContext(ctx, db.stmts.job).QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Job{}, store.ErrNotFound
	}
	return j, err
}

// jobByID reads one job: Job outside a transaction, jobTx inside one.
const jobByID = "SELECT " + jobColumns + " FROM jobs WHERE id = ?"

// Job reads one job by its number.
func (db *DB) Job(ctx context.Context, id int64) (store.Job, error) {
	j, err := scanJob(db.rc.QueryRowContext(ctx, jobByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Job{}, fmt.Errorf("job %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("job %d: %w", id, err)
	}
	return j, nil
}

// UnfinishedJobs lists jobs without a committed completion, oldest first.
func (db *DB) UnfinishedJobs(ctx context.Context) ([]store.Job, error) {
	jobs, err := queryAll(ctx, db.rc, scanJob, "SELECT "+jobColumns+" FROM jobs WHERE finished_at IS NULL AND staging = 0 ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("unfinished jobs: %w", err)
	}
	return jobs, nil
}

// RunnableJobs lists up to limit unfinished jobs, oldest first, that have
// something to run, leaving out those in skip (running already) and open
// jobs (still being streamed) whose committed tasks are all done. A
// scheduling pass reads only these few rows, however many jobs wait.
func (db *DB) RunnableJobs(ctx context.Context, q store.RunnableQuery) ([]store.Job, error) {
	if q.Limit <= 0 {
		return nil, nil
	}
	sql := "SELECT " + jobColumns + ` FROM jobs
		WHERE finished_at IS NULL AND staging = 0 AND NOT (sealed = 0 AND total = succeeded + failed + cancelled)
		AND paused = 0 AND (start_at IS NULL OR start_at <= ?)
		AND (after_mode = 0 OR NOT EXISTS (SELECT 1 FROM job_deps d JOIN jobs p ON p.id = d.dep_id
			WHERE d.job_id = jobs.id AND p.finished_at IS NULL))`
	args := []any{q.Now.UnixNano()}
	if len(q.FullGroups) > 0 {
		sql += " AND grp NOT IN (?" + strings.Repeat(", ?", len(q.FullGroups)-1) + ")"
		for _, g := range q.FullGroups {
			args = append(args, g)
		}
	}
	if q.Kinds != nil {
		sql += " AND " + unknownKinds + " = 0"
		args = append(args, string(knownJSON(q.Kinds)))
	}
	if len(q.Skip) > 0 {
		// The runner's own jobs are the oldest, and come first: left out
		// here, their rows are not read.
		ids := make([]int64, 0, len(q.Skip))
		for id := range q.Skip {
			ids = append(ids, id)
		}
		skip, err := json.Marshal(ids)
		if err != nil {
			return nil, err
		}
		sql += " AND id NOT IN (SELECT value FROM json_each(?))"
		args = append(args, string(skip))
	}
	rows, err := db.rc.QueryContext(ctx, sql+" ORDER BY priority DESC, id LIMIT ?", append(args, q.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("runnable jobs: %w", err)
	}
	defer rows.Close()
	var jobs []store.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("runnable jobs: %w", err)
		}
		jobs = append(jobs, j)
	}
	return jobs, rows.Err()
}

// unknownKinds is 1 for a job (jobs) with a kind outside the JSON array
// given as its parameter, else 0.
const unknownKinds = `EXISTS (SELECT 1 FROM json_each(coalesce(jobs.kinds, '[]')) k
	WHERE k.value NOT IN (SELECT value FROM json_each(?)))`

// knownJSON is a runner's kinds as a JSON array.
func knownJSON(kinds []string) []byte {
	set := store.KindSet{}
	set.AddNames(kinds)
	return set.JSON()
}

// MarkWaiting writes, into each unfinished job that has a kind outside
// known, why it waits (reason of the kinds missing), and says how many
// jobs it changed.
func (db *DB) MarkWaiting(ctx context.Context, known []string, reason func(missing []string) string) (int64, error) {
	// Read first, on the reader: most passes change nothing and take no
	// write lock.
	rows, err := db.rc.QueryContext(ctx, `SELECT id, kinds, coalesce(waiting, '') FROM jobs
		WHERE finished_at IS NULL AND staging = 0 AND `+unknownKinds, string(knownJSON(known)))
	if err != nil {
		return 0, fmt.Errorf("mark waiting jobs: %w", err)
	}
	changes := map[int64]string{}
	for rows.Next() {
		var id int64
		var kinds sql.NullString
		var was string
		if err := rows.Scan(&id, &kinds, &was); err != nil {
			rows.Close()
			return 0, fmt.Errorf("mark waiting jobs: %w", err)
		}
		if now := reason(store.MissingKinds(store.ParseKinds([]byte(kinds.String)), known)); now != was {
			changes[id] = now
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(changes) == 0 {
		return 0, err
	}
	err = db.tx(ctx, func(tx *sql.Tx) error {
		for id, waiting := range changes {
			if _, err := tx.ExecContext(ctx, "UPDATE jobs SET waiting = ? WHERE id = ? AND finished_at IS NULL", waiting, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("mark waiting jobs: %w", err)
	}
	return int64(len(changes)), nil
}

// JobDeps are the jobs a job waits for.
func (db *DB) JobDeps(ctx context.Context, jobID int64) ([]store.Job, error) {
	jobs, err := db.queryJobs(ctx, "SELECT "+jobColumns+" FROM jobs WHERE id IN (SELECT dep_id FROM job_deps WHERE job_id = ?) ORDER BY id", jobID)
	if err != nil {
		return nil, fmt.Errorf("jobs that job %d waits for: %w", jobID, err)
	}
	return jobs, nil
}

// PauseJobs pauses (or resumes) the unfinished jobs among ids, or every
// unfinished job if ids is empty.
func (db *DB) PauseJobs(ctx context.Context, ids []int64, paused bool) (int64, error) {
	var n int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		q := "UPDATE jobs SET paused = ? WHERE finished_at IS NULL AND staging = 0 AND paused != ?"
		args := []any{paused, paused}
		if len(ids) > 0 {
			q += " AND id IN (?" + strings.Repeat(", ?", len(ids)-1) + ")"
			for _, id := range ids {
				args = append(args, id)
			}
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pause jobs: %w", err)
	}
	return n, nil
}

// HaltJob records why a job halted, once.
func (db *DB) HaltJob(ctx context.Context, jobID int64, reason string) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE jobs SET halting = ? WHERE id = ? AND halting IS NULL AND finished_at IS NULL", reason, jobID)
		return err
	})
	if err != nil {
		return fmt.Errorf("halt job %d: %w", jobID, err)
	}
	return nil
}

// SetGroup writes a group's limits.
func (db *DB) SetGroup(ctx context.Context, g store.Group) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO groups (name, max_jobs, workers, memory, cpus) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET max_jobs = excluded.max_jobs, workers = excluded.workers,
				memory = excluded.memory, cpus = excluded.cpus`, g.Name, g.MaxJobs, g.Workers, g.Memory, g.CPUs)
		return err
	})
	if err != nil {
		return fmt.Errorf("set group %q: %w", g.Name, err)
	}
	return nil
}

// Groups lists the groups that have limits.
func (db *DB) Groups(ctx context.Context) ([]store.Group, error) {
	out, err := queryAll(ctx, db.rc, func(s scanner) (store.Group, error) {
		var g store.Group
		return g, s.Scan(&g.Name, &g.MaxJobs, &g.Workers, &g.Memory, &g.CPUs)
	}, `SELECT name, max_jobs, workers, memory, cpus FROM groups
		ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("groups: %w", err)
	}
	return out, nil
}

// OpenJobs lists the unfinished jobs that are not sealed: their producer
// (a streaming submit) may still add tasks.
func (db *DB) OpenJobs(ctx context.Context) ([]store.Job, error) {
	return db.queryJobs(ctx, "SELECT "+jobColumns+" FROM jobs WHERE sealed = 0 AND finished_at IS NULL AND staging = 0 ORDER BY id")
}

// UnfinishedSummary adds up the unfinished jobs: how many there are, and
// their task counts, in the fields of one Job.
func (db *DB) UnfinishedSummary(ctx context.Context) (n int, sum store.Job, err error) {
	err = db.rc.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(total), 0), coalesce(sum(succeeded), 0),
		coalesce(sum(failed), 0), coalesce(sum(cancelled), 0) FROM jobs WHERE finished_at IS NULL AND staging = 0`).
		Scan(&n, &sum.Total, &sum.Succeeded, &sum.Failed, &sum.Cancelled)
	if err != nil {
		return 0, store.Job{}, fmt.Errorf("unfinished jobs: %w", err)
	}
	return n, sum, nil
}

// StopJob records that a runner stopped running an unfinished job: it is
// pending again, waiting for a runner, with its elapsed time so far.
func (db *DB) StopJob(ctx context.Context, id int64, elapsed time.Duration) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE jobs SET elapsed_ns = ?, state = 'pending' WHERE id = ? AND finished_at IS NULL", int64(elapsed), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("stop job %d: %w", id, err)
	}
	return nil
}

// FindJob finds a job by its uuid or a unique prefix of it, as git does
// with hashes.
func (db *DB) FindJob(ctx context.Context, ref string) (store.Job, error) {
	found, ref, err := findByPrefix(ctx, db, "job", ref, scanJob,
		"SELECT "+jobColumns+" FROM jobs WHERE uuid >= ? AND uuid < ? AND staging = 0 ORDER BY uuid LIMIT 2")
	if err != nil {
		return store.Job{}, err
	}
	if len(found) == 2 {
		return store.Job{}, fmt.Errorf("job %s: %w: it starts %s and %s; give more characters", ref, store.ErrAmbiguous, found[0].UUID, found[1].UUID)
	}
	return found[0], nil
}

// findByPrefix reads the (at most two) rows whose uuid starts with ref, a
// job's or a task's id or a prefix of it: what (the "job", "task") is
// ErrNotFound when there is none, and ref is returned as it was looked up.
func findByPrefix[T any](ctx context.Context, db *DB, what, ref string, scan func(scanner) (T, error), q string) ([]T, string, error) {
	ref = strings.ToLower(strings.TrimSpace(ref))
	if ref == "" || strings.Trim(ref, "0123456789abcdef-") != "" {
		return nil, ref, fmt.Errorf("%s %q: %w: a %s id is hex digits and dashes", what, ref, store.ErrNotFound, what)
	}
	found, err := queryAll(ctx, db.rc, scan, q, ref, ref+"\x7f")
	if err != nil {
		return nil, ref, fmt.Errorf("find %s %s: %w", what, ref, err)
	}
	if len(found) == 0 {
		return nil, ref, fmt.Errorf("%s %s: %w", what, ref, store.ErrNotFound)
	}
	return found, ref, nil
}

// ListJobs lists the jobs that f selects, newest first.
func (db *DB) ListJobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	q := "SELECT " + jobColumns + " FROM jobs WHERE staging = 0"
	args := []any{}
	if f.State != "" {
		q += " AND state = ?"
		args = append(args, string(f.State))
	}
	if f.Name != "" {
		q += " AND instr(lower(name), lower(?)) > 0"
		args = append(args, f.Name)
	}
	if f.Before > 0 {
		q += " AND id < ?"
		args = append(args, f.Before)
	}
	if f.Waiting {
		q += " AND coalesce(waiting, '') <> ''"
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, f.Limit)
	return db.queryJobs(ctx, q, args...)
}

func (db *DB) queryJobs(ctx context.Context, q string, args ...any) ([]store.Job, error) {
	jobs, err := queryAll(ctx, db.rc, scanJob, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// AppendTasks adds tasks to an unsealed job in one transaction.
func (db *DB) AppendTasks(ctx context.Context, jobID int64, tasks []store.NewTask) error {
	err := db.txAt(ctx, "submit", func(tx *sql.Tx) error {
		var total int64
		var sealed bool
		var had sql.NullString
		if err := tx.QueryRowContext(ctx, "SELECT total, sealed, kinds FROM jobs WHERE id = ?", jobID).Scan(&total, &sealed, &had); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return store.ErrNotFound
			}
			return err
		}
		if sealed {
			return store.ErrSealed
		}
		if err := insertTasks(ctx, tx, jobID, total+1, tasks); err != nil {
			return err
		}
		kinds := store.KindSet{}
		kinds.AddNames(store.ParseKinds([]byte(had.String)))
		kinds.Add(tasks)
		_, err := tx.ExecContext(ctx, "UPDATE jobs SET total = total + ?, kinds = ? WHERE id = ?", len(tasks), string(kinds.JSON()), jobID)
		return err
	})
	if err != nil {
		return fmt.Errorf("append tasks to job %d: %w", jobID, err)
	}
	return nil
}

// SealJob records that a job has all its tasks. It may complete once they
// are final. The submitter's lock on the job is released.
func (db *DB) SealJob(ctx context.Context, jobID int64) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE jobs SET sealed = 1 WHERE id = ?", jobID)
		return err
	})
	if err != nil {
		return fmt.Errorf("seal job %d: %w", jobID, err)
	}
	db.releaseSubmit(jobID)
	return nil
}

// SealOrphan seals an open job whose submitter is gone (submitterAlive is
// false), with the tasks that committed, and reports whether it did. A
// submitter cannot come back: it takes its job's lock before the job's
// row commits, and never again.
func (db *DB) SealOrphan(ctx context.Context, jobID int64) (bool, error) {
	alive, err := db.submitterAlive(jobID)
	if err != nil || alive {
		return false, err
	}
	var n int64
	err = db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE jobs SET sealed = 1 WHERE id = ? AND sealed = 0", jobID)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("seal job %d: %w", jobID, err)
	}
	return n == 1, nil
}

// RetryJob puts a finished job's failed and cancelled tasks back to
// pending and opens a new round: the job runs again and gets a new job
// callback when done.
func (db *DB) RetryJob(ctx context.Context, jobID int64) (store.Job, error) {
	if err := db.statementsReady(ctx); err != nil {
		return store.Job{}, fmt.Errorf("retry job %d: %w", jobID, err)
	}
	var job store.Job
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var err error
		job, err = db.jobTx(ctx, tx, jobID)
		if err != nil {
			return err
		}
		var pruning bool
		if err := tx.QueryRowContext(ctx, "SELECT pruning FROM jobs WHERE id = ?", jobID).Scan(&pruning); err != nil {
			return err
		}
		if err := store.CanRetry(job, pruning); err != nil {
			return err
		}
		// The tasks keep the attempts they spent.
		if _, err := tx.ExecContext(ctx, `UPDATE tasks SET attempts = r.attempts, error = NULL, not_before = NULL,
				interrupts_base = tasks.interrupts
			FROM results r WHERE r.job_id = tasks.job_id AND r.seq = tasks.seq
			AND tasks.job_id = ?1 AND r.job_id = ?1 AND r.state IN ('failed', 'cancelled')`, jobID); err != nil {
			return err
		}
		// The earlier round's callbacks keep the results they refer to.
		if _, err := tx.ExecContext(ctx, `UPDATE callbacks SET result_at = NULL, message = CAST(
				substr(CAST(message AS BLOB), 1, result_at) || '`+resultref.Member+`' ||
				(SELECT r.result FROM results r WHERE r.job_id = callbacks.job_id AND r.seq = callbacks.task_seq) ||
				substr(CAST(message AS BLOB), result_at + 1) AS TEXT)
			WHERE job_id = ?1 AND result_at IS NOT NULL
			AND task_seq IN (SELECT seq FROM results WHERE job_id = ?1 AND state IN ('failed', 'cancelled'))`, jobID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM results WHERE job_id = ? AND state IN ('failed', 'cancelled')`, jobID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET state = 'pending', round = round + 1, failed = 0,
			cancelled = 0, sealed = 1, finished_at = NULL, done_through = 0, halting = NULL, paused = 0 WHERE id = ?`, jobID); err != nil {
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

// JobsWithSinks lists the jobs that have their own callback sinks; with a
// non-zero since, only those unfinished or finished after since.
func (db *DB) JobsWithSinks(ctx context.Context, since time.Time) ([]store.Job, error) {
	if since.IsZero() {
		return db.queryJobs(ctx, "SELECT "+jobColumns+" FROM jobs WHERE sinks IS NOT NULL AND staging = 0 ORDER BY id")
	}
	// No ORDER BY: with one, SQLite scans the whole table for the second
	// half instead of using jobs_sinks_finished.
	jobs, err := db.queryJobs(ctx, "SELECT "+jobColumns+` FROM jobs WHERE sinks IS NOT NULL AND finished_at IS NULL AND staging = 0
		UNION ALL SELECT `+jobColumns+` FROM jobs WHERE sinks IS NOT NULL AND finished_at > ?`, since.UnixNano())
	slices.SortFunc(jobs, func(a, b store.Job) int { return cmp.Compare(a.ID, b.ID) })
	return jobs, err
}

// CountJobs counts the jobs in each state, with their tasks.
func (db *DB) CountJobs(ctx context.Context) (map[store.State]store.JobTally, error) {
	rows, err := db.rc.QueryContext(ctx, `SELECT state, count(*), coalesce(sum(total), 0),
		coalesce(sum(succeeded + failed + cancelled), 0), count(nullif(waiting, '')),
		coalesce(sum(paused), 0) FROM jobs WHERE staging = 0 GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	defer rows.Close()
	out := map[store.State]store.JobTally{}
	for rows.Next() {
		var state store.State
		var t store.JobTally
		if err := rows.Scan(&state, &t.Jobs, &t.Tasks, &t.Done, &t.Waiting, &t.Paused); err != nil {
			return nil, fmt.Errorf("count jobs: %w", err)
		}
		out[state] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	return out, nil
}

// KillTask asks the runner of a running task to stop it.
func (db *DB) KillTask(ctx context.Context, jobID, seq int64, requeue bool) error {
	mode := 1
	if requeue {
		mode = 2
	}
	var n int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE running SET kill = ? WHERE job_id = ? AND seq = ?", mode, jobID, seq)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("kill task %d: %w", seq, err)
	}
	if n == 0 {
		return fmt.Errorf("task %d is not running: %w", seq, store.ErrConflict)
	}
	return nil
}

// KillRequests are the job's running tasks that pcd kill asked to stop.
func (db *DB) KillRequests(ctx context.Context, jobID int64) (map[int64]bool, error) {
	rows, err := db.rc.QueryContext(ctx, "SELECT seq, kill FROM running WHERE job_id = ? AND kill != 0", jobID)
	if err != nil {
		return nil, fmt.Errorf("kill requests: %w", err)
	}
	defer rows.Close()
	var out map[int64]bool
	for rows.Next() {
		var seq int64
		var mode int
		if err := rows.Scan(&seq, &mode); err != nil {
			return nil, fmt.Errorf("kill requests: %w", err)
		}
		if out == nil {
			out = map[int64]bool{}
		}
		out[seq] = mode == 2
	}
	return out, rows.Err()
}
