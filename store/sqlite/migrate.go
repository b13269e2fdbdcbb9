package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/internal/failpoint"
	"github.com/pcd-dev/pcd/migrations"
	"github.com/pcd-dev/pcd/store"
)

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded NNNN_name.sql files in version order.
func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrations.SQLite, ".")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name is not NNNN_name.sql", name)
		}
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: bad version %q", name, num)
		}
		body, err := fs.ReadFile(migrations.SQLite, name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := range ms {
		if ms[i].version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %d", ms[i].name, i+1)
		}
	}
	return ms, nil
}

// latestVersion is the newest schema version this binary knows.
func latestVersion() int {
	ms, err := loadMigrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
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
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations WHERE version = ?", m.version).Scan(&done); err != nil {
				return err
			}
			if done > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			failpoint.Hit(failpoint.DuringMigration)
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				m.version, m.name, time.Now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate: apply %s: %w", m.name, err)
		}
	}
	return nil
}
