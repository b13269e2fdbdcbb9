package store

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ErrLocked is returned when another process holds the runner lock.
var ErrLocked = errors.New("database is in use by another pcd runner")

// LockedError says which process holds the runner lock.
type LockedError struct {
	Path string
	PID  int // 0 if unknown
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("%s: held by pid %d", e.Path, e.PID)
	}
	return e.Path + ": held by another process"
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// RunnerLock is the exclusive lock that makes one process at a time the
// runner of a database (DESIGN.md invariant 9). It is a flock on a file
// beside the database, so the kernel releases it when the process dies.
type RunnerLock struct{ f *os.File }

// LockPath is the lock file of a database.
func LockPath(dbPath string) string { return dbPath + ".lock" }

// AcquireRunnerLock takes the lock without waiting. If another process holds
// it, the error is a *LockedError naming that process.
func AcquireRunnerLock(dbPath string) (*RunnerLock, error) {
	path := LockPath(dbPath)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("runner lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{Path: path, PID: readPID(f)}
		}
		return nil, fmt.Errorf("runner lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &RunnerLock{f: f}, nil
}

func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	return pid
}

// Release drops the lock. It is safe to call more than once.
func (l *RunnerLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	_ = f.Truncate(0)
	return f.Close()
}
