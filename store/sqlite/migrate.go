package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/pcd-dev/pcd/internal/failpoint"
	"github.com/pcd-dev/pcd/migrations"
	"github.com/pcd-dev/pcd/store"
)

// loadMigrations reads the embedded migrations in version order.
func loadMigrations() ([]migrations.Migration, error) { return migrations.Load(migrations.SQLite) }

// latestVersion is the newest schema version this binary knows.
func latestVersion() int {
	ms, err := loadMigrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// migrate applies each pending migration in its own transaction, which also
// records its version.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	// An up-to-date schema (the usual case) is seen with a read, so that
	// opening for a write does not wait for the write lock twice.
	var current int
	if err := db.w.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&current); err == nil &&
		current == len(ms) {
		return nil
	}
	err = db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at INTEGER NOT NULL
		)`); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&current)
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", classify(err))
	}
	if current > len(ms) {
		// Another process may have upgraded the file since inspect ran.
		return fmt.Errorf("%w: schema version %d, this binary knows up to %d; upgrade pcd", store.ErrTooNew, current, len(ms))
	}
	for _, m := range ms[current:] {
		err := db.tx(ctx, func(tx *sql.Tx) error {
			// Re-check inside the write lock: a concurrent open may have
			// applied this version already.
			var done int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations WHERE version = ?", m.Version).Scan(&done); err != nil {
				return err
			}
			if done > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return err
			}
			failpoint.Hit(failpoint.DuringMigration)
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				m.Version, m.Name, time.Now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate: apply %s: %w", m.Name, err)
		}
	}
	return nil
}
