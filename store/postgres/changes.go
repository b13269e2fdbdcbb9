package postgres

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/pcd-dev/pcd/store"
)

// changes reports commits of callbacks: a LISTEN on the channel that
// every committing writer notifies, with the newest callback id as a
// fallback, so that a notification lost with a connection is no loss.
type changes struct {
	db      *DB
	flag    atomic.Bool
	last    int64
	stopper interface{ Close() error }
}

// Changes returns a change feed for pcd watch.
func (db *DB) Changes(ctx context.Context) (store.ChangeFeed, error) {
	c := &changes{db: db}
	l, err := db.ListenWake(func() { c.flag.Store(true) })
	if err != nil {
		return nil, fmt.Errorf("watch for changes: %w", err)
	}
	c.stopper = l
	if _, err := c.Poll(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return c, nil
}

// Poll reports whether callbacks were committed since the last Poll.
func (c *changes) Poll(ctx context.Context) (bool, error) {
	if c.flag.Swap(false) {
		return true, nil
	}
	last, err := c.db.LastCallbackID(ctx)
	if err != nil {
		return false, err
	}
	changed := last != c.last
	c.last = last
	return changed, nil
}

// Close stops listening.
func (c *changes) Close() error { return c.stopper.Close() }
