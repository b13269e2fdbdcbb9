// Package pgtest gives each test a PostgreSQL schema of its own on the
// server that PCD_TEST_POSTGRES names (default: the local server's socket
// in /var/run/postgresql, database postgres).
//
// Without a server, a test fails when CI is set and skips, saying why,
// when it is not: go test ./... passes for a user who has no PostgreSQL.
package pgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is the server the tests use unless PCD_TEST_POSTGRES names
// another.
const DefaultURL = "postgres:///postgres?host=/var/run/postgresql"

// ServerURL is the server's URL, from PCD_TEST_POSTGRES or DefaultURL.
func ServerURL() string {
	if u := os.Getenv("PCD_TEST_POSTGRES"); u != "" {
		return u
	}
	return DefaultURL
}

// URL creates a new, empty schema for t and returns the server's URL with
// search_path set to it; the schema is dropped when t ends.
func URL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server := ServerURL()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		Unavailable(t, err)
	}
	defer conn.Close(context.Background())
	schema := fmt.Sprintf("pcd_test_%d_%x", time.Now().Unix(), rand.Uint64())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, server)
		if err != nil {
			t.Logf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Unavailable ends a test that needs a server it could not reach.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("PostgreSQL at %s: %v (CI is set: the PostgreSQL tests must run)", ServerURL(), err)
	}
	t.Skipf("no PostgreSQL at %s (%v): skipped; set PCD_TEST_POSTGRES to run it", ServerURL(), err)
}
