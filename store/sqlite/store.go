package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pcd-dev/pcd/store"
	driver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Sync is the SQLite synchronous level of the writer.
type Sync string

const (
	// SyncFull survives a process crash and a power loss.
	SyncFull Sync = "full"
	// SyncNormal survives a process crash; a power loss may lose the last
	// commits, never the database itself.
	SyncNormal Sync = "normal"
)

// ParseSync reads a --sync value.
func ParseSync(s string) (Sync, error) {
	switch Sync(strings.ToLower(s)) {
	case SyncFull, "":
		return SyncFull, nil
	case SyncNormal:
		return SyncNormal, nil
	}
	return "", fmt.Errorf("unknown sync mode %q (want full or normal)", s)
}

// Options configure Open.
type Options struct {
	Sync        Sync          // default SyncFull
	BusyTimeout time.Duration // default 5s
	ReadConns   int           // default 4
	// MustExist refuses to create a new database file.
	MustExist bool
	// WALWarn is the WAL size, in bytes, past which OnWALWarn is called
	// (once, until the WAL is back under it): a reader is keeping it from
	// being checkpointed. Default DefaultWALWarn.
	WALWarn   int64
	OnWALWarn func(walBytes int64)
	// ReadOnly opens an existing database for reading only: it never takes
	// the write lock, never migrates (a schema that needs migrating is
	// refused with ErrNeedsMigration), and every write fails.
	ReadOnly bool
	// FullCheckMax is the largest file Open checks whole (quick_check)
	// before it writes anything; default DefaultFullCheckMax. A larger
	// file gets the check of its schema and small tables at open, and
	// the rest from Check, which a runner calls in the background.
	FullCheckMax int64
	// Brief opens for a short command that writes little, such as the
	// submit of a small job: it checks the schema only (a runner checks
	// the file when it starts, and SQLite refuses a corrupt page it
	// reads), and leaves checkpoints to the runner, or to the last
	// connection's close.
	Brief bool
}

// DefaultFullCheckMax bounds the integrity check a runner waits for when
// it starts: quick_check reads the whole file, about 0.1 s per 40 MiB here,
// and a restart is to take less than a second whatever the database's size.
const DefaultFullCheckMax = 64 << 20

// smallTables are checked at every open, whatever the file's size.
var smallTables = []string{"schema_migrations", "jobs", "sink_cursors"}

// Hooks are seams for tests to inject faults. Each may be nil.
type Hooks struct {
	// BetweenResultAndCallback runs inside the group commit after a task's
	// result is written and before its callback record is.
	BetweenResultAndCallback func(jobID, seq int64) error
}

// DB is an open pcd database.
type DB struct {
	path string
	w    *sql.DB // the one writer
	r    *sql.DB // read-only pool
	rc   *cachedReader
	ckpt *checkpointer
	// deferred is set when Open checked only part of a large file.
	deferred bool
	// stmts are the runner's statements, prepared at open, or with
	// Options.Brief at the first transaction that needs them
	// (statementsReady): a short command never pays for them.
	stmts      statements
	stmtsMu    sync.Mutex
	stmtsReady bool
	// commits merges the group commits of jobs that commit at once.
	commits  commitQueue
	Hooks    Hooks
	submit   submitLocks
	readOnly bool
	// busy is how long a write waits for another process's write lock;
	// the writer polls for it (see begin).
	busy time.Duration
}

const sqliteMagic = "SQLite format 3\x00"

func (opts Options) withDefaults() Options {
	if opts.Sync == "" {
		opts.Sync = SyncFull
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 5 * time.Second
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 4
	}
	if opts.FullCheckMax <= 0 {
		opts.FullCheckMax = DefaultFullCheckMax
	}
	if opts.ReadOnly {
		opts.MustExist = true
	}
	return opts
}

// Open opens the database at path, creating it (0600, in a 0700 directory)
// unless opts.MustExist, and applies pending migrations. A file that is not
// SQLite, is corrupt, or has a newer schema is refused and left untouched.
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	opts = opts.withDefaults()
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	existed, err := prepareFile(abs, opts.MustExist, !opts.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}

	db := &DB{path: abs, busy: opts.BusyTimeout}
	if existed {
		// Check the file read-only first, so a refusal writes nothing.
		if db.deferred, err = inspect(ctx, abs, opts); err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
	}
	if opts.ReadOnly {
		if !existed {
			return nil, fmt.Errorf("open %s: %w", path, store.ErrNoDatabase)
		}
		return openReadOnly(ctx, db, opts)
	}
	// The writer polls for the write lock itself (begin), so that it can
	// take it in the short gaps between a big submit's chunks; SQLite's
	// own busy handler backs off to a poll every 100 ms.
	pollOpts := opts
	pollOpts.BusyTimeout = 0
	writer := dsn(abs, pollOpts, false)
	if !existed {
		// A new file gives pages back as history is pruned (Reclaim). It
		// must be set before anything is written, WAL mode included; an
		// older file gets it from its first prune's VACUUM.
		writer = strings.Replace(writer, "?", "?_pragma=auto_vacuum%28INCREMENTAL%29&", 1)
	}
	db.w, err = sql.Open("sqlite", writer)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.w.SetMaxOpenConns(1)
	db.w.SetMaxIdleConns(1)
	db.w.SetConnMaxLifetime(0)
	db.w.SetConnMaxIdleTime(0)
	if err := db.migrate(ctx); err != nil {
		db.w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.r, err = sql.Open("sqlite", dsn(abs, opts, true))
	if err != nil {
		db.w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.r.SetMaxOpenConns(opts.ReadConns)
	db.r.SetMaxIdleConns(opts.ReadConns)
	db.rc = newCachedReader(db.r)
	if opts.Brief {
		return db, nil
	}
	// Any other open may run jobs: their first commit does not wait for
	// the statements.
	if err := db.statementsReady(ctx); err != nil {
		db.r.Close()
		db.w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.ckpt, err = startCheckpointer(dsn(abs, opts, false), opts.WALWarn, opts.OnWALWarn)
	if err != nil {
		db.r.Close()
		db.w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// openReadOnly opens db's connections for reading only, once inspect has
// found the file sound.
func openReadOnly(ctx context.Context, db *DB, opts Options) (*DB, error) {
	var err error
	if db.r, err = sql.Open("sqlite", dsn(db.path, opts, true)); err != nil {
		return nil, fmt.Errorf("open %s: %w", db.path, err)
	}
	db.r.SetMaxOpenConns(opts.ReadConns)
	db.r.SetMaxIdleConns(opts.ReadConns)
	db.rc = newCachedReader(db.r)
	// Writes go to the same read-only pool, and fail there.
	db.w = db.r
	var version int
	err = db.rc.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&version)
	if err == nil && version < latestVersion() {
		err = fmt.Errorf("%w (it is at version %d, this pcd writes %d): run a command that writes, such as pcd daemon or pcd submit", store.ErrNeedsMigration, version, latestVersion())
	}
	if err != nil {
		db.rc.close()
		db.r.Close()
		return nil, fmt.Errorf("open %s: %w", db.path, classify(err))
	}
	db.readOnly = true
	return db, nil
}

// Path is the absolute path of the database file.
func (db *DB) Path() string { return db.path }

// Close closes both connection pools.
func (db *DB) Close() error {
	db.stmtsMu.Lock()
	errs := []error{db.closeStatements()}
	db.stmtsReady = false
	db.stmtsMu.Unlock()
	if db.rc != nil {
		errs = append(errs, db.rc.close())
	}
	if db.readOnly {
		return errors.Join(append(errs, db.submit.close(), db.r.Close())...)
	}
	// The writer closes last: the last connection to close checkpoints
	// what is left and removes the WAL.
	return errors.Join(append(errs, db.submit.close(), db.ckpt.close(), db.r.Close(), db.w.Close())...)
}

// prepareFile makes sure the directory (0700) and file (0600) exist, and
// reports whether the file was there before with content.
func prepareFile(path string, mustExist, write bool) (existed bool, err error) {
	if err := checkDatabaseFiles(path); err != nil {
		return false, err
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		if fi.IsDir() {
			return false, fmt.Errorf("%w: it is a directory", store.ErrNotDatabase)
		}
		// SQLite would leave empty -wal and -shm files behind before it
		// found out that it cannot write: ask first.
		for _, p := range []string{path, filepath.Dir(path)} {
			if !write {
				break
			}
			if err := syscall.Access(p, 2 /* W_OK */); err != nil {
				return false, fmt.Errorf("%w: %s: %w", store.ErrReadOnly, p, err)
			}
		}
		if fi.Size() == 0 {
			return false, nil
		}
		return true, checkMagic(path)
	case !errors.Is(err, os.ErrNotExist):
		return false, err
	case mustExist:
		return false, store.ErrNoDatabase
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("%w: cannot create its directory: %w", store.ErrBadPath, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil && !errors.Is(err, os.ErrExist) {
		// Such as a path under /proc, where no file can be made.
		return false, fmt.Errorf("%w: cannot create it: %w", store.ErrBadPath, err)
	}
	if f != nil {
		return false, f.Close()
	}
	// Another process created it between our check and our create.
	return false, checkDatabaseFiles(path)
}

func checkMagic(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, len(sqliteMagic))
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, []byte(sqliteMagic)) {
		return store.ErrNotDatabase
	}
	return nil
}

// inspect checks an existing file over a read-only connection: that SQLite
// can read it, that it passes quick_check, and that its schema is one this
// binary knows. A file larger than opts.FullCheckMax gets quick_check of
// its small tables only, and deferred says so.
func inspect(ctx context.Context, path string, opts Options) (deferred bool, err error) {
	ro, err := sql.Open("sqlite", dsn(path, opts, true)+"&mode=ro")
	if err != nil {
		return false, err
	}
	defer ro.Close()
	if opts.Brief {
		return true, checkSchema(ctx, ro)
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() > opts.FullCheckMax {
		deferred = true
	}
	if !deferred {
		if err := quickCheck(ctx, ro, ""); err != nil {
			return false, err
		}
		return false, checkSchema(ctx, ro)
	}
	// A table that does not exist (a file pcd did not create) is for
	// checkSchema to report.
	for _, table := range smallTables {
		var n int
		if err := ro.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?", table).Scan(&n); err != nil {
			return true, classify(err)
		}
		if n == 0 {
			continue
		}
		if err := quickCheck(ctx, ro, table); err != nil {
			return true, err
		}
	}
	return true, checkSchema(ctx, ro)
}

// quickCheck runs PRAGMA quick_check on the whole file, or on one table
// and its indexes.
func quickCheck(ctx context.Context, conn *sql.DB, table string) error {
	q := "PRAGMA quick_check"
	if table != "" {
		q += "(" + table + ")"
	}
	var result string
	if err := conn.QueryRowContext(ctx, q).Scan(&result); err != nil {
		return classify(err)
	}
	if result != "ok" {
		return fmt.Errorf("%w: quick_check: %s", store.ErrCorrupt, firstLine(result))
	}
	return nil
}

// Check runs quick_check over the whole file. Open has done so already
// unless the file was larger than Options.FullCheckMax (CheckDeferred);
// a runner then calls Check in the background and stops on ErrCorrupt.
func (db *DB) Check(ctx context.Context) error {
	if err := quickCheck(ctx, db.r, ""); err != nil {
		return fmt.Errorf("check %s: %w", db.path, err)
	}
	return nil
}

// CheckDeferred reports whether Open left most of the integrity check to
// Check.
func (db *DB) CheckDeferred() bool { return db.deferred }

// checkSchema tells whether the file's schema is one this binary knows.
func checkSchema(ctx context.Context, ro *sql.DB) error {
	var tables int
	if err := ro.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema WHERE type = 'table'").Scan(&tables); err != nil {
		return classify(err)
	}
	if tables == 0 {
		return nil
	}
	var known int
	if err := ro.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'").Scan(&known); err != nil {
		return classify(err)
	}
	if known == 0 {
		return store.ErrNotPCD
	}
	var version int
	if err := ro.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&version); err != nil {
		return classify(err)
	}
	if latest := latestVersion(); version > latest {
		return fmt.Errorf("%w: schema version %d, this binary knows up to %d; upgrade pcd", store.ErrTooNew, version, latest)
	}
	return nil
}

// classify maps SQLite's error codes to the store's sentinels.
func classify(err error) error {
	for _, known := range []error{store.ErrNotDatabase, store.ErrCorrupt, store.ErrDiskFull, store.ErrBusy, store.ErrReadOnly} {
		if errors.Is(err, known) {
			return err
		}
	}
	var se *driver.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB:
			return fmt.Errorf("%w: %w", store.ErrNotDatabase, err)
		case sqlite3.SQLITE_CORRUPT:
			return fmt.Errorf("%w: %w", store.ErrCorrupt, err)
		case sqlite3.SQLITE_FULL:
			return fmt.Errorf("%w: %w", store.ErrDiskFull, err)
		case sqlite3.SQLITE_BUSY:
			return fmt.Errorf("%w: %w", store.ErrBusy, err)
		case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH:
			return fmt.Errorf("%w: %w", store.ErrReadOnly, err)
		}
	}
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", store.ErrDiskFull, err)
	}
	return err
}

// isPrimaryKeyConflict reports a statement refused for a duplicate key.
// SQLite has undone the statement; the transaction goes on.
func isPrimaryKeyConflict(err error) bool {
	var se *driver.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

func dsn(path string, opts Options, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(max(opts.BusyTimeout.Milliseconds(), 0), 10)+")")
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
		// Readers look up a few rows by key: a small page cache each (the
		// default is 2 MiB a connection), so that a runner's memory does
		// not grow with its connections.
		q.Add("_pragma", "cache_size(-512)")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "wal_autocheckpoint("+strconv.Itoa(walBackstop)+")")
		q.Add("_pragma", "journal_size_limit("+strconv.Itoa(walSizeLimit)+")")
		q.Add("_pragma", "synchronous("+strings.ToUpper(string(opts.Sync))+")")
		q.Set("_txlock", "immediate")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

var _ store.Store = (*DB)(nil)
var _ store.TxCreator = (*DB)(nil)
