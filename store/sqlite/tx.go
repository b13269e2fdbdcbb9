package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/pcd-dev/pcd/internal/failpoint"
	"github.com/pcd-dev/pcd/store"
)

// tx runs fn in one write transaction (BEGIN IMMEDIATE on the writer). It
// commits when fn returns nil and rolls back when fn fails or panics,
// keeping fn's error.
func (db *DB) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	return db.txAt(ctx, "", fn)
}

// txAt is tx with the failpoints point+"-before-commit" and
// point+"-after-commit" around its COMMIT.
func (db *DB) txAt(ctx context.Context, point string, fn func(*sql.Tx) error) (err error) {
	return db.txPoints(ctx, func() string { return point }, fn)
}

// txPoints is txAt with the failpoints' name decided once fn has run.
func (db *DB) txPoints(ctx context.Context, pointOf func() string, fn func(*sql.Tx) error) (err error) {
	var tx *sql.Tx
	err = db.whenFree(ctx, func() error {
		tx, err = db.w.BeginTx(ctx, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("begin: %w", classify(err))
	}
	defer func() {
		err = classify(err)
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
		if err != nil {
			if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
			}
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	point := pointOf()
	if point != "" {
		failpoint.Hit(point + "-before-commit")
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	db.ckpt.committed()
	if point != "" {
		failpoint.Hit(point + "-after-commit")
	}
	return nil
}

// whenFree runs fn, which takes the write lock (BEGIN IMMEDIATE, or a
// statement outside a transaction), again and again while another process
// holds the lock, for up to the busy timeout. It polls every millisecond
// or two, where SQLite's busy handler backs off to every 100 ms: a writer
// waiting behind a big submit gets the lock in the short pause between
// two of its chunks.
func (db *DB) whenFree(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(db.busy)
	wait := 500 * time.Microsecond
	for {
		err := fn()
		if err == nil || !errors.Is(classify(err), store.ErrBusy) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Millisecond)
	}
}
