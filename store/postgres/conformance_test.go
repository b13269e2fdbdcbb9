package postgres_test

import (
	"context"
	"testing"

	"github.com/pcd-dev/pcd/internal/pgtest"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/postgres"
	"github.com/pcd-dev/pcd/store/storetest"
)

func open(t *testing.T) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), pgtest.URL(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestConformance runs the store.Store conformance suite on PostgreSQL,
// each test in a schema of its own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}
