package store

import (
	"errors"
	"fmt"
	"strconv"
)

// Errors returned by Open. The file is left untouched in each case.
var (
	ErrNotDatabase = errors.New("not a SQLite database")
	ErrNotPCD      = errors.New("a SQLite database that pcd did not create")
	ErrCorrupt     = errors.New("database is corrupt")
	ErrTooNew      = errors.New("database schema is newer than this pcd")
	ErrNoDatabase  = errors.New("no database here yet (pcd submit or pcd run creates it)")
	// ErrNeedsMigration is returned to a read-only open of a database
	// whose schema is older than this binary's: only a writer migrates.
	ErrNeedsMigration = errors.New("the database needs migrating to this pcd's schema first")
)

// ErrReadOnly is returned when the database, or its directory, cannot be
// written: a read-only file or file system, or no permission.
var ErrReadOnly = errors.New("the database cannot be written here (read-only, or permission denied)")

// Errors of the environment, from any read or write. Each is temporary:
// retry (Temporary says which are).
var (
	ErrDiskFull = errors.New("disk full")
	ErrBusy     = errors.New("database is locked by another process for longer than the busy timeout")
	// ErrUnavailable: the database server cannot be reached, or it
	// dropped the connection (it restarts, or the network is down).
	ErrUnavailable = errors.New("the database server cannot be reached")
	// ErrLockConflict: the server ended a transaction to resolve a
	// conflict between transactions (a deadlock, a serialization
	// failure, a lock or statement timeout). It is tried again.
	ErrLockConflict = errors.New("a transaction was ended by the database server to resolve a lock conflict")
)

// Temporary says whether err is one that passes by itself: another
// process holds the write lock, or the server is unreachable for now.
// A full disk is temporary too, but needs someone to act.
func Temporary(err error) bool {
	return errors.Is(err, ErrBusy) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrLockConflict)
}

// ErrBadPath is returned for a database path where no database can be:
// a symlink to nothing, a place where no file can be made (/proc).
var ErrBadPath = errors.New("no database can be opened or made at this path")

// ErrUnsafe is returned for a database, WAL, SHM or lock file that another
// local user could control: owned by someone else, writable by group or
// others, or a symlink where pcd expects a file. Such a file is refused,
// as ssh refuses a key others can write: whoever controls the database
// chooses the commands its runner executes.
var ErrUnsafe = errors.New("refusing a file that another user could control")

// ErrLocked is returned when another process holds the runner lock.
var ErrLocked = errors.New("database is in use by another pcd runner")

// LockedError says which process holds the runner lock, and as what.
type LockedError struct {
	Path string
	PID  int    // 0 if unknown
	Role string // what the holder said it is: "daemon", "run"; "" if unknown
}

func (e *LockedError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "pid " + strconv.Itoa(e.PID)
	}
	if e.Role != "" {
		who += " (pcd " + e.Role + ")"
	}
	return e.Path + ": held by " + who
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Conflictf returns an error that errors.Is reports as ErrConflict, told
// in a sentence of its own: "job 3f2a… already cancelled".
func Conflictf(format string, a ...any) error { return conflictError{fmt.Sprintf(format, a...)} }

type conflictError struct{ msg string }

func (e conflictError) Error() string        { return e.msg }
func (e conflictError) Is(target error) bool { return target == ErrConflict }
