package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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
	tx, err := db.w.BeginTx(ctx, nil)
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
		Failpoint(point + "-before-commit")
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	db.ckpt.committed()
	if point != "" {
		Failpoint(point + "-after-commit")
	}
	return nil
}
