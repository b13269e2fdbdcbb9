package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pcd-dev/pcd/internal/buildinfo"
	"github.com/pcd-dev/pcd/store"
)

// RunnerLock is the exclusive lock that makes one process at a time the
// runner of a database (ARCHITECTURE.md, promise 9). It is a flock on a file
// beside the database, so the kernel releases it when the process dies.
type RunnerLock struct{ f *os.File }

// lockPath is the lock file of a database.
func lockPath(dbPath string) string { return dbPath + ".lock" }

// lockRecord is the fixed size of what the holder writes: its pid, role,
// start time and version. The file is never truncated, so a shorter
// record must overwrite a longer one whole.
const lockRecord = 128

// LockRunner takes the runner lock of db without waiting (see
// AcquireRunnerLock).
func (db *DB) LockRunner(role string) (store.Releaser, error) {
	lock, err := AcquireRunnerLock(db.path, role)
	if err != nil {
		return nil, err
	}
	return lock, nil
}

// AcquireRunnerLock takes the lock without waiting, for a holder of the
// given role ("daemon", "run"). If another process holds it, the error is
// a *LockedError naming that process. The lock file is opened without
// following a symlink and never truncated, and one that another user
// owns or can write is refused with ErrUnsafe.
func AcquireRunnerLock(dbPath, role string) (*RunnerLock, error) {
	path := lockPath(dbPath)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("runner lock: %w: %s is a symlink", store.ErrUnsafe, path)
	}
	if err != nil {
		return nil, fmt.Errorf("runner lock: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkOwnedInfo(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("runner lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			h := readHolder(f)
			return nil, &store.LockedError{Path: path, PID: h.pid, Role: h.role}
		}
		return nil, fmt.Errorf("runner lock %s: %w", path, err)
	}
	rec := fmt.Sprintf("%d %s %d %s", os.Getpid(), role, time.Now().UnixNano(), buildinfo.Version())
	rec = rec[:min(len(rec), lockRecord-1)]
	rec += strings.Repeat(" ", lockRecord-1-len(rec)) + "\n"
	_, _ = f.WriteAt([]byte(rec), 0)
	return &RunnerLock{f: f}, nil
}

// holder is what the lock's holder wrote of itself.
type holder struct {
	pid     int
	role    string
	started time.Time
	version string
}

// readHolder reads what the holder wrote. Right after it took the lock,
// it may not have written it yet.
func readHolder(f *os.File) holder {
	var h holder
	buf := make([]byte, lockRecord)
	n, _ := f.ReadAt(buf, 0)
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	fields := strings.SplitN(strings.TrimSpace(line), " ", 4)
	if len(fields) > 0 {
		h.pid, _ = strconv.Atoi(fields[0])
	}
	if len(fields) > 1 {
		h.role = fields[1]
	}
	if len(fields) > 2 {
		if ns, err := strconv.ParseInt(fields[2], 10, 64); err == nil && ns > 0 {
			h.started = time.Unix(0, ns)
		}
	}
	if len(fields) > 3 {
		h.version = strings.TrimSpace(fields[3])
	}
	return h
}

// Release drops the lock. It is safe to call more than once.
func (l *RunnerLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	return f.Close()
}

// ListRunners reports the runner that holds the database's lock, if one
// does: one runner at a time works a SQLite file.
func (db *DB) ListRunners(ctx context.Context) ([]store.RunnerInfo, error) {
	f, err := os.OpenFile(lockPath(db.path), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("runners: %w", err)
	}
	defer f.Close()
	// Not a probe of the lock itself, which a runner starting at that
	// moment would find taken: a runner listens for wake-ups.
	if !RunnerListening(db.path) {
		return nil, nil
	}
	h := readHolder(f)
	host, _ := os.Hostname()
	r := store.RunnerInfo{Role: h.role, Host: host, PID: h.pid, Alive: true, StartedAt: h.started, Version: h.version}
	if err := db.rc.QueryRowContext(ctx, "SELECT count(*) FROM running").Scan(&r.Running); err != nil {
		return nil, fmt.Errorf("runners: %w", err)
	}
	return []store.RunnerInfo{r}, nil
}
