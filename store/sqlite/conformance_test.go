package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
	"github.com/pcd-dev/pcd/store/storetest"
)

// TestConformance runs the store.Store conformance suite on SQLite.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "pcd.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}
