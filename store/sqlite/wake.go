package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/pcd-dev/pcd/internal/rundir"
)

// wakePath is the unix socket on which a database's runner hears that new
// work was committed: <db>.sock beside the database when its directory is
// private to this user. When another user could create files there (a
// shared directory such as /tmp), or the path is too long for a socket,
// it goes in a directory private to this user instead, where no one else
// can bind it first: $XDG_RUNTIME_DIR, or $TMPDIR/pcd-<uid> (0700),
// checked each time it is used.
func wakePath(dbPath string) (string, error) {
	p := dbPath + ".sock"
	if len(p) < 100 && rundir.Private(filepath.Dir(dbPath)) {
		return p, nil
	}
	dir, err := rundir.Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, rundir.Key(dbPath)+".sock"), nil
}

// wake tells the runner of dbPath, if one is listening, that work was
// committed. It is best effort: without a listener, the runner's periodic
// check finds the work.
func wake(dbPath string) error {
	path, err := wakePath(dbPath)
	if err != nil {
		return err
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte{1})
	return err
}

// Shared is false: one runner at a time works a SQLite database.
func (db *DB) Shared() bool { return false }

// RunnerAlive reports whether a runner listens on the database's wake
// socket.
func (db *DB) RunnerAlive(context.Context) bool { return RunnerListening(db.path) }

// RunnerListening reports whether a runner listens on the wake socket of
// the database at dbPath.
func RunnerListening(dbPath string) bool {
	path, err := wakePath(dbPath)
	if err != nil {
		return false
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// wakeListener receives wake-ups and turns them into notifications.
type wakeListener struct {
	conn  *net.UnixConn
	path  string
	bound os.FileInfo // the socket file as bound
	done  chan struct{}
}

// ListenWake binds the database's wake socket and calls notify at each
// wake-up, until Close. The caller must hold the runner lock, which makes
// removing a stale socket safe.
func (db *DB) ListenWake(notify func()) (io.Closer, error) {
	l, err := listenWake(db.path, notify)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Wake tells this database's runner that work was committed.
func (db *DB) Wake() error { return wake(db.path) }

func listenWake(dbPath string, notify func()) (*wakeListener, error) {
	path, err := wakePath(dbPath)
	if err != nil {
		return nil, fmt.Errorf("wake socket: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("wake socket: %w", err)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("wake socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		conn.Close()
		return nil, fmt.Errorf("wake socket: %w", err)
	}
	bound, _ := os.Stat(path)
	l := &wakeListener{conn: conn, path: path, bound: bound, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		buf := make([]byte, 16)
		for {
			if _, _, err := conn.ReadFromUnix(buf); err != nil {
				// Closed, or broken: the runner's periodic check goes on.
				return
			}
			notify()
		}
	}()
	return l, nil
}

// Close stops listening and removes the socket file, if it is still the
// one this listener bound: a database deleted and made again under a
// runner that is stopping has a new runner, whose socket stays.
func (l *wakeListener) Close() error {
	err := l.conn.Close()
	<-l.done
	if now, statErr := os.Stat(l.path); statErr == nil && l.bound != nil && os.SameFile(now, l.bound) {
		_ = os.Remove(l.path)
	}
	return err
}
