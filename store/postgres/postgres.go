package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pcd-dev/pcd/store"
)

// Options configure Open.
type Options struct {
	// MaxConns bounds the connection pool; default 8.
	MaxConns int32
	// Lease is how long a runner may go without a heartbeat before the
	// others take its tasks over; default DefaultLease.
	Lease time.Duration
	// MustExist refuses a database that has no pcd schema yet, instead of
	// creating it (ErrNoDatabase): for readers.
	MustExist bool
}

// DefaultLease is how long a runner may go without a heartbeat before the
// others take its tasks over.
const DefaultLease = 30 * time.Second

// DB is pcd's store on a PostgreSQL database.
type DB struct {
	pool *pgxpool.Pool
	// name is the URL without its password, for messages.
	name string
	opts Options
	// callbackLock is the advisory lock key under which callback ids
	// are drawn; migrateLock the one migrations run under. Both are
	// derived from the schema, so that schemas do not share them.
	callbackLock, migrateLock int64
	// claimSpace is the first key of the jobs' claim locks (the second
	// is the job's id).
	claimSpace int32
	runners    runnerState
	submits    submits
	stats      statistics
}

// statistics keeps the planner's statistics of the tables a run grows
// fresh: the plans of claims and of pcd watch's reads depend on them, and
// autovacuum may analyze a table only a minute after it grew from nothing
// to a million rows.
type statistics struct {
	written atomic.Int64 // rows written since the last analysis
	size    atomic.Int64 // rows written in all, roughly
	busy    atomic.Bool
	wg      sync.WaitGroup
	// churn counts claims deleted since the last vacuum of running.
	churn     atomic.Int64
	vacuuming atomic.Bool
}

// wrote counts n rows written to results and callbacks, and analyzes the
// tables in the background once they doubled (at least analyzeEvery rows)
// since the last time. The planner scales what an analysis saw to a
// table's current size, so a doubling keeps the plans right; analyzing at
// every fifth was a sixth of PostgreSQL's CPU on a 300k-task run.
func (db *DB) wrote(n int) {
	s := &db.stats
	w := s.written.Add(int64(n))
	if w < max(analyzeEvery, s.size.Load()) || !s.busy.CompareAndSwap(false, true) {
		return
	}
	s.written.Store(0)
	s.size.Add(w)
	db.background("ANALYZE results, callbacks, running", func() { s.busy.Store(false) })
}

// background runs a maintenance statement (ANALYZE, VACUUM) in the
// background, for a minute at most, then done, if any; Close waits for it.
func (db *DB) background(statement string, done func()) {
	db.stats.wg.Add(1)
	go func() {
		defer db.stats.wg.Done()
		if done != nil {
			defer done()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = db.pool.Exec(ctx, statement)
	}()
}

// churned counts n claims deleted (tasks finished), and vacuums running,
// in the background, every vacuumEvery of them: every task inserts a
// claim and deletes it, and with autovacuum late, or off, the dead rows
// pile up in the table and its indexes, and each claim and commit reads
// through them (a million no-ops slowed by a third by their end).
func (db *DB) churned(n int) {
	s := &db.stats
	if s.churn.Add(int64(n)) < vacuumEvery || !s.vacuuming.CompareAndSwap(false, true) {
		return
	}
	s.churn.Store(0)
	db.background("VACUUM running", func() { s.vacuuming.Store(false) })
}

// vacuumEvery is how many claims are deleted between two vacuums of the
// claims table.
const vacuumEvery = 100_000

var (
	_ store.Store = (*DB)(nil)
)

// IsURL says whether a --db value names a PostgreSQL database.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Redact returns a PostgreSQL URL without its password, for messages and
// logs.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "postgres://(a URL that does not parse)"
	}
	return u.Redacted()
}

// Open connects to the PostgreSQL database at rawURL (postgres://...),
// migrates its schema under an advisory lock, so that runners starting
// together migrate once, and refuses a schema newer than this binary's
// (store.ErrTooNew). Query parameters that pgx does not know, such as
// search_path, are sent to the server as settings.
func Open(ctx context.Context, rawURL string, opts Options) (*DB, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 8
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	name := Redact(rawURL)
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, redactErr(err, rawURL))
	}
	cfg.MaxConns = opts.MaxConns
	boundWaits(cfg.ConnConfig, opts.Lease)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, redactErr(err, rawURL))
	}
	db := &DB{pool: pool, name: name, opts: opts}
	if err := db.init(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	return db, nil
}

// boundWaits bounds every wait that a dead or silent peer can cause, on
// both sides of each connection, to a small multiple of the lease:
//
//   - A session left idle inside a transaction (its client died or
//     froze, or the network between them went silent) is ended by the
//     server after one lease (idle_in_transaction_session_timeout): its
//     locks no longer hold up the other runners.
//   - A statement waits at most two leases for a lock
//     (lock_timeout); it fails with ErrLockConflict, and is tried again.
//   - TCP keepalives, on the client's side and the server's, find a dead
//     peer after about two thirds of a lease (idle lease/3, then 3 probes
//     lease/9 apart), and unacknowledged data fails the connection after
//     a lease (TCP_USER_TIMEOUT). Linux's defaults take 2 h 11 min.
//   - Connecting gives up after a lease (at least 10 s).
//
// A session that must wait longer (a migration waits for another's)
// sets its own lock_timeout.
func boundWaits(cc *pgx.ConnConfig, lease time.Duration) {
	ms := func(d time.Duration) string { return strconv.FormatInt(max(d.Milliseconds(), 1), 10) }
	secs := func(d time.Duration) string { return strconv.FormatInt(max(int64(d/time.Second), 1), 10) }
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	set := func(name, value string) {
		if _, ok := cc.RuntimeParams[name]; !ok { // the URL's own setting wins
			cc.RuntimeParams[name] = value
		}
	}
	set("idle_in_transaction_session_timeout", ms(lease))
	set("lock_timeout", ms(2*lease))
	set("tcp_keepalives_idle", secs(lease/3))
	set("tcp_keepalives_interval", secs(lease/9))
	set("tcp_keepalives_count", "3")
	set("tcp_user_timeout", ms(lease))
	cc.ConnectTimeout = max(lease, 10*time.Second)
	d := &net.Dialer{
		Timeout: cc.ConnectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true,
			Idle: max(lease/3, time.Second), Interval: max(lease/9, time.Second), Count: 3},
		Control: func(network, _ string, c syscall.RawConn) error {
			if !strings.HasPrefix(network, "tcp") {
				return nil
			}
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = setTCPUserTimeout(fd, lease)
			})
			return errors.Join(err, serr)
		},
	}
	cc.DialFunc = d.DialContext
}

func (db *DB) init(ctx context.Context) error {
	err := db.pool.QueryRow(ctx, `SELECT hashtext(current_schema() || ':pcd-callbacks'), hashtext(current_schema() || ':pcd-migrate'),
		hashtext(current_schema() || ':pcd-claims')`).
		Scan(&db.callbackLock, &db.migrateLock, &db.claimSpace)
	if err != nil {
		return classify(err)
	}
	return db.migrate(ctx)
}

// redactErr keeps the password out of an error that quotes the URL.
func redactErr(err error, rawURL string) error {
	u, perr := url.Parse(rawURL)
	if perr != nil || u.User == nil {
		return err
	}
	pw, ok := u.User.Password()
	if !ok || pw == "" || !strings.Contains(err.Error(), pw) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), pw, "xxxxx"))
}

// Path names the database, without its password.
func (db *DB) Path() string { return db.name }

// Close stops the runner's heartbeat, if any, and closes the pool.
func (db *DB) Close() error {
	db.runners.stop()
	db.submits.closeAll()
	db.stats.wg.Wait()
	db.pool.Close()
	return nil
}

// CheckDeferred is false: PostgreSQL checks its own pages.
func (db *DB) CheckDeferred() bool { return false }

// Check asks the server for a trivial answer.
func (db *DB) Check(ctx context.Context) error {
	var one int
	if err := db.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("check: %w", classify(err))
	}
	return nil
}

// Reclaim leaves space to PostgreSQL's autovacuum; a VACUUM, on request,
// gives the pages of the pruned rows back to the tables.
func (db *DB) Reclaim(ctx context.Context, vacuum bool) (bool, error) {
	if !vacuum {
		return false, nil
	}
	for _, t := range []string{"deliveries", "callbacks", "attempts", "results", "running", "tasks", "jobs"} {
		if _, err := db.pool.Exec(ctx, "VACUUM "+t); err != nil {
			return false, fmt.Errorf("reclaim: %w", classify(err))
		}
	}
	return true, nil
}

// Size is the size of pcd's tables with their indexes, in bytes.
func (db *DB) Size() int64 {
	var n int64
	_ = db.pool.QueryRow(context.Background(), `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = current_schema() AND c.relkind = 'r'`).Scan(&n)
	return n
}

// tx runs fn in a transaction, committed if fn returns nil.
func (db *DB) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return classify(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return classify(err)
	}
	return classify(tx.Commit(ctx))
}

// Lock order. Every transaction that writes a job's tasks, claims or
// results takes its locks in one order, so that no two wait on each other:
//
//  1. the jobs' claim locks (lockJobs), in the order of their keys;
//  2. rows of those jobs' tasks, claims and results;
//  3. the jobs' rows (their counters), in id order;
//  4. the callback-id lock (lockCallbacks).
//
// The claim locks serialise, per job, the claims, the group commits, a
// takeover, a cancel and a retry: the statements of each touch the same
// claim rows in different orders (a due claim in order of due time, a
// commit in order of seq, a cancel the whole job), and row locks alone
// deadlocked them against each other.

// claimKey is the second key of a job's claim lock.
func claimKey(jobID int64) int32 { return int32(jobID & 0x7fffffff) }

// lockJobs takes the claim locks of jobs, until the transaction ends.
func (db *DB) lockJobs(ctx context.Context, tx pgx.Tx, jobIDs ...int64) error {
	keys := make([]int32, 0, len(jobIDs))
	for _, id := range jobIDs {
		keys = append(keys, claimKey(id))
	}
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, $2)", db.claimSpace, k); err != nil {
			return fmt.Errorf("lock job claims: %w", err)
		}
	}
	return nil
}

// lockCallbacks takes the lock under which callback ids are drawn, until
// the transaction ends. Take it right before inserting callbacks, as late
// as the transaction allows: it serialises the commits that write them.
func (db *DB) lockCallbacks(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", db.callbackLock)
	return err
}

// classify maps PostgreSQL's errors onto the store's.
func classify(err error) error {
	if err == nil {
		return nil
	}
	for _, known := range []error{store.ErrBusy, store.ErrLockConflict, store.ErrUnavailable, store.ErrDiskFull, store.ErrReadOnly, store.ErrNotFound, store.ErrConflict,
		store.ErrSealed, store.ErrNotDone, store.ErrTooNew, store.ErrNoDatabase} {
		if errors.Is(err, known) {
			return err
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "53100": // disk_full
			return fmt.Errorf("%w: %w", store.ErrDiskFull, err)
		case pe.Code == "40001", pe.Code == "40P01", pe.Code == "55P03", pe.Code == "57014", pe.Code == "25P03":
			// serialization failure, deadlock, lock not available,
			// statement timeout, idle in transaction timeout: try again
			return fmt.Errorf("%w: %w", store.ErrLockConflict, err)
		case pe.Code == "25006", pe.Code == "42501": // read-only transaction, insufficient privilege
			return fmt.Errorf("%w: %w", store.ErrReadOnly, err)
		case strings.HasPrefix(pe.Code, "57P"), strings.HasPrefix(pe.Code, "08"):
			// the server shuts down or restarts; the connection is gone
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		return err
	}
	if pgconn.SafeToRetry(err) || isConnError(err) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// isConnError says whether err is the loss of, or failure to get, a
// connection: the server is down or restarting.
func isConnError(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection refused") ||
		strings.Contains(msg, "unexpected EOF") || strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "connection reset")
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

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}
