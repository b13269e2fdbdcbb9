package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/pcd-dev/pcd/store"
)

// Changes detects commits made by other connections, such as another
// process's, with PRAGMA data_version: a cheap check that reads no table.
type Changes struct {
	conn *sql.Conn
	last int64
}

// Changes returns a detector holding one read connection until Close.
func (db *DB) Changes(ctx context.Context) (store.ChangeFeed, error) {
	conn, err := db.r.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch for changes: %w", err)
	}
	c := &Changes{conn: conn}
	if _, err := c.Poll(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// Poll reports whether another connection committed since the last Poll.
func (c *Changes) Poll(ctx context.Context) (bool, error) {
	var v int64
	if err := c.conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
		return false, fmt.Errorf("data_version: %w", err)
	}
	changed := v != c.last
	c.last = v
	return changed, nil
}

// Close releases the connection.
func (c *Changes) Close() error { return c.conn.Close() }
