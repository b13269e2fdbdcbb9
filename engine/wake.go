package engine

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// Notifier broadcasts "something changed" to any number of waiters.
type Notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// NewNotifier returns a Notifier.
func NewNotifier() *Notifier { return &Notifier{ch: make(chan struct{})} }

// C returns a channel that is closed at the next Notify. Take it before
// checking state, so that a change in between is not missed.
func (n *Notifier) C() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

// Notify wakes every current waiter.
func (n *Notifier) Notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}

// WakePath is the unix socket beside a database on which its daemon hears
// that new work was committed. A path too long for a socket address is
// replaced by one in the temp directory, named by the database's path.
func WakePath(dbPath string) string {
	p := dbPath + ".sock"
	if len(p) < 100 {
		return p
	}
	sum := sha256.Sum256([]byte(dbPath))
	return filepath.Join(os.TempDir(), fmt.Sprintf("pcd-%d-%x.sock", os.Getuid(), sum[:8]))
}

// Wake tells the daemon of dbPath, if one is listening, that work was
// committed. It is best effort: without a listener, the daemon's periodic
// check finds the work.
func Wake(dbPath string) error {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: WakePath(dbPath), Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte{1})
	return err
}

// DaemonListening reports whether a daemon listens on the database's wake
// socket.
func DaemonListening(dbPath string) bool {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: WakePath(dbPath), Net: "unixgram"})
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// wakeListener receives wake-ups and turns them into notifications.
type wakeListener struct {
	conn *net.UnixConn
	path string
	done chan struct{}
}

// ListenWake binds the database's wake socket and notifies n at each
// wake-up, until Close. The caller must hold the runner lock, which makes
// removing a stale socket safe.
func ListenWake(dbPath string, n *Notifier, log *slog.Logger) (io.Closer, error) {
	return listenWake(dbPath, n, log)
}

func listenWake(dbPath string, n *Notifier, log *slog.Logger) (*wakeListener, error) {
	path := WakePath(dbPath)
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
	l := &wakeListener{conn: conn, path: path, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		buf := make([]byte, 16)
		for {
			if _, _, err := conn.ReadFromUnix(buf); err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Warn("wake socket closed", "err", err)
				}
				return
			}
			n.Notify()
		}
	}()
	return l, nil
}

// Close stops listening and removes the socket file.
func (l *wakeListener) Close() error {
	err := l.conn.Close()
	<-l.done
	_ = os.Remove(l.path)
	return err
}
