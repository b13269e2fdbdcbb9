package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// cachedReader runs the read pool's queries through prepared statements,
// one per query text, prepared once. Parsing the SQL again at every call
// was a third of a daemon's CPU while it drained thousands of small jobs.
// Only fixed query texts go through it: a text built from its arguments
// (a list of ids) would fill it.
type cachedReader struct {
	db    *sql.DB
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

func newCachedReader(db *sql.DB) *cachedReader {
	return &cachedReader{db: db, stmts: map[string]*sql.Stmt{}}
}

func (c *cachedReader) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.stmts[query]; ok {
		return s, nil
	}
	s, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.stmts[query] = s
	return s, nil
}

// QueryContext is sql.DB's, through a prepared statement.
func (c *cachedReader) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}

// QueryRowContext is sql.DB's, through a prepared statement. A failed
// prepare comes back from Scan, as sql.DB's does.
func (c *cachedReader) QueryRowContext(ctx context.Context, query string, args ...any) rowScanner {
	s, err := c.stmt(ctx, query)
	if err != nil {
		return errRow{err}
	}
	return s.QueryRowContext(ctx, args...)
}

func (c *cachedReader) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, s := range c.stmts {
		errs = append(errs, s.Close())
	}
	c.stmts = nil
	return errors.Join(errs...)
}

// rowScanner is a *sql.Row, or the error of a query that never ran.
type rowScanner interface{ Scan(...any) error }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// queryAll runs a read query and scans every row with scan.
func queryAll[T any](ctx context.Context, r *cachedReader, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
