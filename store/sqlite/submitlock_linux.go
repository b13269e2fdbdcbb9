package sqlite

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/pcd-dev/pcd/store"
	"golang.org/x/sys/unix"
)

// A streaming submitter holds a lock on one byte of <db>.submit, at the
// offset of its job's id, from before the job's row commits until it
// seals the job. The kernel drops the lock when the process dies, however
// it dies, so a runner that finds an unsealed job whose byte is free knows
// its submitter is gone and seals the job with what committed. A lock
// needs no clock and no writes, unlike a lease or a heartbeat, and is
// never wrong about a process on this machine, which is where a SQLite
// database's submitters are. The locks are Linux's open file description
// locks: a runner and a submitter in one process still see each other's.

// submitLockPath is the file whose bytes the streaming submitters lock.
func submitLockPath(dbPath string) string { return dbPath + ".submit" }

// submitLocks is a DB's handle on the submit lock file: one open file to
// hold its own jobs' bytes, and another to test others'.
type submitLocks struct {
	mu    sync.Mutex
	hold  *os.File
	probe *os.File
}

func openLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%w: %s is a symlink", store.ErrUnsafe, path)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkOwnedInfo(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (l *submitLocks) file(path string, which **os.File) (*os.File, error) {
	if *which == nil {
		f, err := openLockFile(path)
		if err != nil {
			return nil, fmt.Errorf("submit lock: %w", err)
		}
		*which = f
	}
	return *which, nil
}

func byteLock(typ int16, id int64) *unix.Flock_t {
	return &unix.Flock_t{Type: typ, Whence: 0, Start: id, Len: 1}
}

// holdSubmit takes the lock on job id's byte for this process.
func (db *DB) holdSubmit(id int64) error {
	db.submit.mu.Lock()
	defer db.submit.mu.Unlock()
	f, err := db.submit.file(submitLockPath(db.path), &db.submit.hold)
	if err != nil {
		return err
	}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, byteLock(unix.F_WRLCK, id)); err != nil {
		return fmt.Errorf("submit lock of job %d: %w", id, err)
	}
	return nil
}

// releaseSubmit drops the lock on job id's byte, if this process holds it.
func (db *DB) releaseSubmit(id int64) {
	db.submit.mu.Lock()
	defer db.submit.mu.Unlock()
	if db.submit.hold != nil {
		_ = unix.FcntlFlock(db.submit.hold.Fd(), unix.F_OFD_SETLK, byteLock(unix.F_UNLCK, id))
	}
}

// submitterAlive reports whether a process still holds job id's submit
// lock: the streaming submit of the job is still going on.
func (db *DB) submitterAlive(id int64) (bool, error) {
	db.submit.mu.Lock()
	defer db.submit.mu.Unlock()
	f, err := db.submit.file(submitLockPath(db.path), &db.submit.probe)
	if err != nil {
		return false, err
	}
	lk := byteLock(unix.F_WRLCK, id)
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, lk); err != nil {
		return false, fmt.Errorf("submit lock of job %d: %w", id, err)
	}
	return lk.Type != unix.F_UNLCK, nil
}

func (l *submitLocks) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, f := range []*os.File{l.hold, l.probe} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	l.hold, l.probe = nil, nil
	return errors.Join(errs...)
}
