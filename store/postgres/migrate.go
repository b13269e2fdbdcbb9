package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/pcd-dev/pcd/migrations"
	"github.com/pcd-dev/pcd/store"
)

// loadMigrations reads the embedded migrations in version order.
func loadMigrations() ([]migrations.Migration, error) { return migrations.Load(migrations.Postgres) }

// migrate applies the pending migrations, each in its own transaction that
// records its version, holding a session advisory lock throughout: ten
// runners starting together migrate once, and the others wait, then find
// nothing to do. A schema newer than this binary's is refused.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	current, err := db.schemaVersion(ctx)
	if err != nil {
		return err
	}
	if current > len(ms) {
		return fmt.Errorf("%w: schema version %d, this pcd knows up to %d", store.ErrTooNew, current, len(ms))
	}
	if current == len(ms) {
		return nil
	}
	if db.opts.MustExist && current == 0 {
		return store.ErrNoDatabase
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return classify(err)
	}
	defer conn.Release()
	// Another process's migration may take longer than lock_timeout; it
	// holds the lock for as long as it lives.
	if _, err := conn.Exec(ctx, "SET lock_timeout = 0"); err != nil {
		return fmt.Errorf("migrate: %w", classify(err))
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", db.migrateLock); err != nil {
		return fmt.Errorf("migrate: %w", classify(err))
	}
	if _, err := conn.Exec(ctx, "RESET lock_timeout"); err != nil {
		return fmt.Errorf("migrate: %w", classify(err))
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", db.migrateLock)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text    NOT NULL,
		applied_at bigint  NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", classify(err))
	}
	var applied int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&applied); err != nil {
		return fmt.Errorf("migrate: %w", classify(err))
	}
	if applied > len(ms) {
		return fmt.Errorf("%w: schema version %d, this pcd knows up to %d", store.ErrTooNew, applied, len(ms))
	}
	for _, m := range ms[applied:] {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, classify(err))
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("migration %s: %w", m.Name, classify(err))
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
			m.Version, m.Name, time.Now().UnixNano()); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("migration %s: %w", m.Name, classify(err))
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, classify(err))
		}
	}
	return nil
}

// schemaVersion is the newest migration applied, 0 for none.
func (db *DB) schemaVersion(ctx context.Context) (int, error) {
	var exists bool
	if err := db.pool.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, classify(err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := db.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, classify(err)
	}
	return v, nil
}
