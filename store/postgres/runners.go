package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pcd-dev/pcd/internal/buildinfo"
	"github.com/pcd-dev/pcd/store"
)

// runnerState is this process's runner on the database, if it is one: its
// row in runners, kept alive by a heartbeat.
type runnerState struct {
	current atomic.Int64
	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
}

func (r *runnerState) id() int64 { return r.current.Load() }

func (r *runnerState) stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel, r.done = nil, nil
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// LockRunner registers this process as a runner of the database, in role.
// Any number of runners work one PostgreSQL database: each heartbeats,
// every Lease/3, and one whose heartbeat is older than Lease is gone; its
// tasks are taken over (Recover). Release ends the heartbeat and marks
// the runner stopped.
//
// A runner that cannot renew its lease for two thirds of it (the network
// is cut, the server is down) has lost it: the Releaser's Lost channel
// closes, before the others can see it gone, and it heartbeats no more.
// It must stop its tasks; the store will not write a result for a task
// that another runner has taken over since. To run again it registers
// anew, as a new runner.
func (db *DB) LockRunner(role string) (store.Releaser, error) {
	ctx, cancel := context.WithTimeout(context.Background(), db.opTimeout())
	defer cancel()
	host, _ := os.Hostname()
	// The runner registers on its heartbeat's connection (see heartbeat),
	// made first: the lease starts once it is up.
	conn, err := pgx.ConnectConfig(ctx, db.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("register runner: %w", classify(err))
	}
	now := time.Now().UnixNano()
	var id int64
	if err := conn.QueryRow(ctx, `INSERT INTO runners (role, host, pid, version, started_at, heartbeat_at, lease_ns)
		VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING id`, role, host, os.Getpid(), buildinfo.Version(), now, int64(db.opts.Lease)).Scan(&id); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("register runner: %w", classify(err))
	}
	// The plans of claims and group commits depend on the statistics of
	// these tables; a runner starting on tables that grew since their
	// last analysis refreshes them, in the background: on a million rows
	// it takes a fraction of a second, which a restart need not wait for.
	db.background("ANALYZE tasks, results, running", nil)
	db.runners.mu.Lock()
	defer db.runners.mu.Unlock()
	if db.runners.cancel != nil {
		conn.Close(context.Background())
		return nil, errors.New("register runner: this handle is a runner already")
	}
	db.runners.current.Store(id)
	hbCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	db.runners.cancel, db.runners.done = stop, done
	rel := runnerRelease{db: db, id: id, lost: make(chan struct{}), until: new(atomic.Pointer[time.Time])}
	// The lease's end, with a monotonic reading (time.Unix has none).
	first := time.Now().Add(-time.Since(time.Unix(0, now)) + db.opts.Lease*2/3)
	rel.until.Store(&first)
	go func() {
		defer close(done)
		db.heartbeat(hbCtx, conn, id, time.Unix(0, now), rel.lost, rel.until)
	}()
	return rel, nil
}

// opTimeout bounds an operation that must not hang on a dead connection:
// a heartbeat, a registration.
func (db *DB) opTimeout() time.Duration { return max(db.opts.Lease/3, time.Second) }

// heartbeat refreshes the runner's row, every Lease/3, until ctx ends or
// the lease is lost: when no heartbeat has landed for two thirds of the
// lease since the last one (whose time the others judge by), it closes
// lost and returns. A heartbeat that finds the row gone already (this
// process was stopped for longer than the lease) loses it too.
//
// It beats on a connection of its own, not the pool's: with every pooled
// connection busy (claims and commits of many jobs, each waiting on a
// lock), a heartbeat that waited for one lost the lease of a runner that
// was working, and its tasks ran again elsewhere.
func (db *DB) heartbeat(ctx context.Context, conn *pgx.Conn, id int64, last time.Time, lost chan struct{}, validUntil *atomic.Pointer[time.Time]) {
	lease := db.opts.Lease
	deadline := last.Add(lease * 2 / 3)
	tick := time.NewTicker(lease / 3)
	defer tick.Stop()
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		expire := time.NewTimer(time.Until(deadline))
		select {
		case <-ctx.Done():
			expire.Stop()
			return
		case <-expire.C:
			close(lost)
			return
		case <-tick.C:
			expire.Stop()
			// Both may be due after this process was stopped: the lease
			// ran out by this runner's own reckoning, and its fence has
			// killed its commands, even if a heartbeat would still land.
			if !time.Now().Before(deadline) {
				close(lost)
				return
			}
		}
		// A heartbeat stuck on a dead connection gives up at the
		// deadline, so that the loss is not noticed late.
		now := time.Now()
		until := now.Add(db.opTimeout())
		if deadline.Before(until) {
			until = deadline
		}
		beat, cancel := context.WithDeadline(ctx, until)
		var err error
		if conn == nil {
			conn, err = pgx.ConnectConfig(beat, db.pool.Config().ConnConfig.Copy())
		}
		var tag pgconn.CommandTag
		if err == nil {
			tag, err = conn.Exec(beat, `UPDATE runners SET heartbeat_at = $1 WHERE id = $2 AND stopped_at IS NULL
				AND heartbeat_at + lease_ns >= $1`, now.UnixNano(), id)
		}
		cancel()
		switch {
		case err != nil:
			// Tried again at the next tick, on a new connection, until
			// the lease runs out.
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
		case tag.RowsAffected() == 0:
			close(lost)
			return
		case !time.Now().Before(deadline):
			// It landed, but late: the lease had run out by this
			// runner's reckoning meanwhile, and its fence may have
			// killed its commands.
			close(lost)
			return
		default:
			deadline = now.Add(lease * 2 / 3)
			d := deadline
			validUntil.Store(&d)
		}
	}
}

type runnerRelease struct {
	db   *DB
	id   int64
	lost chan struct{}
	// until is when the lease runs out by this runner's own reckoning:
	// two thirds of the lease after its last heartbeat landed.
	until *atomic.Pointer[time.Time]
}

// ValidFor is how much longer the lease holds by this runner's reckoning
// (negative once it ran out), for its fence.
func (r runnerRelease) ValidFor() time.Duration { return time.Until(*r.until.Load()) }

// Lost closes when the runner has lost its lease.
func (r runnerRelease) Lost() <-chan struct{} { return r.lost }

// Release stops the heartbeat and marks the runner stopped; its claims
// are left for the next Recover (a runner releases what it ran on its
// way out).
func (r runnerRelease) Release() error {
	r.db.runners.stop()
	r.db.runners.current.CompareAndSwap(r.id, 0)
	ctx, cancel := context.WithTimeout(context.Background(), r.db.opTimeout())
	defer cancel()
	_, err := r.db.pool.Exec(ctx, "UPDATE runners SET stopped_at = $1 WHERE id = $2", time.Now().UnixNano(), r.id)
	return classify(err)
}

// gone is the condition on a runner row g that it is not alive: stopped,
// or its own lease passed since its last heartbeat ($1 is now).
const gone = `(g.stopped_at IS NOT NULL OR g.heartbeat_at + g.lease_ns < $1)`

// Recover takes over the tasks of runners that are gone: a task one had
// only claimed goes back to pending with nothing counted; one it was
// running goes back with the interruption counted, and a task interrupted
// maxInterrupts times in a row fails, with its task callback.
func (db *DB) Recover(ctx context.Context, maxInterrupts int,
	failMessage func(jobUUID string, t store.Task, reason string) ([]byte, error)) (store.Recovered, error) {
	var (
		requeued, failed int
		runners          []store.GoneRunner
		from             map[int64]int64
	)
	now := time.Now()
	oldest := now.UnixNano()
	me := db.runners.id()
	if me == 0 {
		me = -1 // not a runner: every claim is a dead runner's
	}
	err := db.tx(ctx, func(tx pgx.Tx) error {
		requeued, failed, runners = 0, 0, nil
		taken, err := db.takeClaims(ctx, tx, oldest, me)
		if err != nil {
			return err
		}
		byRunner := map[int64]*store.GoneRunner{}
		from = map[int64]int64{}
		defer func() { runners = goneRunners(byRunner) }()
		w := finalWriter{db: db, now: now}
		var jobIDs []int64
		for _, k := range taken {
			var t store.Task
			var jobUUID string
			var round, base int
			if err := tx.QueryRow(ctx, `UPDATE tasks t SET interrupts = t.interrupts + 1 FROM jobs j
				WHERE j.id = t.job_id AND t.job_id = $1 AND t.seq = $2
				RETURNING t.job_id, t.seq, t.uuid, t.kind, t.attempts, t.interrupts, t.interrupts_base, j.uuid, j.round`, k.job, k.seq).
				Scan(&t.JobID, &t.Seq, &t.UUID, &t.Kind, &t.Attempts, &t.Interrupts, &base, &jobUUID, &round); err != nil {
				return err
			}
			g := byRunner[k.runner]
			if g == nil {
				g = &store.GoneRunner{ID: k.runner}
				byRunner[k.runner] = g
			}
			g.Tasks++
			if low, ok := from[k.job]; !ok || k.seq < low {
				from[k.job] = k.seq
			}
			if !slices.Contains(g.Jobs, jobUUID) {
				g.Jobs = append(g.Jobs, jobUUID)
			}
			fail, reason := store.Interruption(t.Interrupts, base, maxInterrupts)
			if !fail {
				requeued++
				continue
			}
			msg, err := failMessage(jobUUID, t, reason)
			if err != nil {
				return err
			}
			w.add(t, round, store.Failed, reason, msg)
			jobIDs = append(jobIDs, t.JobID)
			failed++
		}
		if failed > 0 {
			// Lock order: the jobs' rows, then the callback-id lock.
			if _, err := tx.Exec(ctx, "SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE", jobIDs); err != nil {
				return err
			}
			if err := db.lockCallbacks(ctx, tx); err != nil {
				return err
			}
			if err := w.flush(ctx, tx); err != nil {
				return err
			}
			// A final task leaves the index of waiting tasks: a retried
			// one still carries its last due time.
			if _, err := tx.Exec(ctx, `UPDATE tasks t SET not_before = NULL
				FROM unnest($1::bigint[], $2::bigint[]) AS x (job_id, seq)
				WHERE t.job_id = x.job_id AND t.seq = x.seq AND t.not_before IS NOT NULL`, w.jobs, w.seqs); err != nil {
				return err
			}
		}
		if len(byRunner) > 0 {
			ids := slices.Collect(maps.Keys(byRunner))
			rows, err := tx.Query(ctx, "SELECT id, host, pid FROM runners WHERE id = ANY($1)", ids)
			if err != nil {
				return err
			}
			for rows.Next() {
				var id int64
				var host string
				var pid int
				if err := rows.Scan(&id, &host, &pid); err != nil {
					rows.Close()
					return err
				}
				byRunner[id].Host, byRunner[id].PID = host, pid
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		// A job left running by runners all gone waits for a runner. One
		// with a task claimed by a live runner, this one included (it
		// looks every second while it runs jobs), is running.
		_, err = tx.Exec(ctx, `UPDATE jobs j SET state = 'pending' WHERE j.state = 'running' AND j.finished_at IS NULL
			AND NOT EXISTS (SELECT 1 FROM runners g WHERE g.id <> $2 AND NOT `+gone+`)
			AND NOT EXISTS (SELECT 1 FROM running u JOIN runners g ON g.id = u.runner_id
				WHERE u.job_id = j.id AND NOT `+gone+`)`, oldest, me)
		return err
	})
	if err != nil {
		return store.Recovered{}, fmt.Errorf("recover: %w", err)
	}
	return store.Recovered{Requeued: requeued, Failed: failed, Runners: runners, From: from}, nil
}

// goneRunners lists the runners of byRunner by id.
func goneRunners(byRunner map[int64]*store.GoneRunner) []store.GoneRunner {
	out := make([]store.GoneRunner, 0, len(byRunner))
	for _, id := range slices.Sorted(maps.Keys(byRunner)) {
		out = append(out, *byRunner[id])
	}
	return out
}

// claim is a task a runner claimed.
type claim struct{ job, seq, runner int64 }

// takeClaims takes over the claims of runners that are gone (alive at
// oldest, me excepted) and returns those of tasks they had started. Lock
// order (lockJobs): the claim locks of the jobs whose claims are taken
// over, then their rows. Only those jobs' claims are taken: a runner that
// stops meanwhile leaves its claims in other jobs to the next look.
func (db *DB) takeClaims(ctx context.Context, tx pgx.Tx, oldest, me int64) ([]claim, error) {
	rows, err := tx.Query(ctx, `SELECT DISTINCT u.job_id FROM running u
		WHERE u.runner_id <> $2 AND NOT EXISTS (SELECT 1 FROM runners g WHERE g.id = u.runner_id AND NOT `+gone+`)`, oldest, me)
	if err != nil {
		return nil, err
	}
	jobs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, err
	}
	if err := db.lockJobs(ctx, tx, jobs...); err != nil {
		return nil, err
	}
	// Claims of tasks that finished anyway, and those of dead runners
	// that never started, are dropped.
	if _, err := tx.Exec(ctx, `DELETE FROM running u WHERE u.job_id = ANY($3) AND (
		EXISTS (SELECT 1 FROM results r WHERE r.job_id = u.job_id AND r.seq = u.seq)
		OR (u.started_at IS NULL AND u.runner_id <> $2 AND NOT EXISTS (
			SELECT 1 FROM runners g WHERE g.id = u.runner_id AND NOT `+gone+`)))`, oldest, me, jobs); err != nil {
		return nil, err
	}
	rows, err = tx.Query(ctx, `DELETE FROM running u
		WHERE u.job_id = ANY($3) AND u.runner_id <> $2 AND NOT EXISTS (SELECT 1 FROM runners g WHERE g.id = u.runner_id AND NOT `+gone+`)
		RETURNING u.job_id, u.seq, u.runner_id`, oldest, me, jobs)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (claim, error) {
		var c claim
		err := r.Scan(&c.job, &c.seq, &c.runner)
		return c, err
	})
}

// ListRunners lists the live runners and those gone in the last hour,
// newest first, with the tasks each has started and not finished.
func (db *DB) ListRunners(ctx context.Context) ([]store.RunnerInfo, error) {
	now := time.Now()
	rows, err := db.pool.Query(ctx, `SELECT g.id, g.role, g.host, g.pid, g.version, g.started_at, g.heartbeat_at, NOT `+gone+`,
			(SELECT count(*) FROM running u WHERE u.runner_id = g.id AND u.started_at IS NOT NULL)
		FROM runners g WHERE NOT `+gone+` OR coalesce(g.stopped_at, g.heartbeat_at) > $2
		ORDER BY g.id DESC LIMIT 100`, now.UnixNano(), now.Add(-time.Hour).UnixNano())
	if err != nil {
		return nil, fmt.Errorf("runners: %w", classify(err))
	}
	defer rows.Close()
	var out []store.RunnerInfo
	for rows.Next() {
		var r store.RunnerInfo
		var started, beat int64
		if err := rows.Scan(&r.ID, &r.Role, &r.Host, &r.PID, &r.Version, &started, &beat, &r.Alive, &r.Running); err != nil {
			return nil, fmt.Errorf("runners: %w", err)
		}
		r.StartedAt, r.Heartbeat = time.Unix(0, started), time.Unix(0, beat)
		out = append(out, r)
	}
	return out, classify(rows.Err())
}

// Shared is true: any number of runners work a PostgreSQL database.
func (db *DB) Shared() bool { return true }

// RunnerAlive reports whether a runner's heartbeat is fresh.
func (db *DB) RunnerAlive(ctx context.Context) bool {
	var alive bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM runners g WHERE NOT `+gone+`)`,
		time.Now().UnixNano()).Scan(&alive)
	return err == nil && alive
}

// wakeChannel is the NOTIFY channel of the database's runners, per schema.
func (db *DB) wakeChannel() string { return fmt.Sprintf("pcd_wake_%x", uint32(db.callbackLock)) }

// Wake tells the runners that work was committed or a job cancelled.
func (db *DB) Wake() error {
	_, err := db.pool.Exec(context.Background(), "SELECT pg_notify($1, '')", db.wakeChannel())
	return classify(err)
}

// ListenWake calls notify at each Wake, from any process, until Close. It
// holds a connection of its own; when that connection is lost it
// reconnects, and notifies once, since a wake-up may have been missed.
func (db *DB) ListenWake(notify func()) (io.Closer, error) {
	l := &listener{db: db, channel: db.wakeChannel(), notify: notify, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	conn, err := l.connect(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("listen for wake-ups: %w", err)
	}
	go l.run(ctx, conn)
	return l, nil
}

// listener is a LISTEN on one channel.
type listener struct {
	db      *DB
	channel string
	notify  func()
	cancel  context.CancelFunc
	done    chan struct{}
}

func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	c, err := l.db.pool.Acquire(ctx)
	if err != nil {
		return nil, classify(err)
	}
	conn := c.Hijack() // a LISTEN belongs to its session: keep it out of the pool
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, classify(err)
	}
	return conn, nil
}

func (l *listener) run(ctx context.Context, conn *pgx.Conn) {
	defer close(l.done)
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		_, err := conn.WaitForNotification(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			l.notify()
			continue
		}
		conn.Close(context.Background())
		conn = nil
		for conn == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			conn, _ = l.connect(ctx)
		}
		l.notify()
	}
}

// Close stops listening.
func (l *listener) Close() error {
	l.cancel()
	<-l.done
	return nil
}

func isConflict(err error) bool { return errors.Is(err, store.ErrConflict) }
