package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pcd-dev/pcd/internal/pgtest"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/postgres"
)

// On PostgreSQL, SubmitTx writes in the caller's pgx.Tx: a bad job
// leaves the caller's transaction usable, a rollback leaves no job, and a
// committed job is run by a daemon that the commit itself wakes.
func TestSubmitTxOnPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t)
	db, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	app, err := pgx.Connect(ctx, url) // the program's own connection
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	if _, err := app.Exec(ctx, "CREATE TABLE orders (id serial PRIMARY KEY, item text)"); err != nil {
		t.Fatal(err)
	}
	client := NewClient(db, RunnerConfig{CheckEvery: 1 << 40}) // it looks only when woken
	count := func(table string) int {
		var n int
		if err := app.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	good := JobFile{Name: "ship", Key: "order-1", Tasks: []TaskSpec{{Kind: "noop"}, {Kind: "noop"}}}
	order := func(commit bool) store.Job {
		tx, err := app.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "INSERT INTO orders (item) VALUES ('kettle')"); err != nil {
			t.Fatal(err)
		}
		if _, err := client.SubmitTx(ctx, tx, JobFile{Tasks: []TaskSpec{{Kind: "nope"}}}); !errors.Is(err, ErrBadJob) {
			t.Fatalf("a bad job in a transaction: %v, want ErrBadJob", err)
		}
		job, err := client.SubmitTx(ctx, tx, good)
		if err != nil {
			t.Fatal(err)
		}
		if commit {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return job
	}

	order(false)
	if n, m := count("jobs"), count("orders"); n != 0 || m != 0 {
		t.Fatalf("after a rollback: %d jobs, %d orders; want none", n, m)
	}

	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	job := order(true)
	if n := count("orders"); n != 1 {
		t.Fatalf("%d orders after the commit, want 1", n)
	}
	done := errors.New("done")
	err = client.Watch(ctx, WatchOptions{Jobs: []string{job.UUID}, Follow: true, OnEvent: func(e Event) error {
		if e.Job != nil {
			return done
		}
		return nil
	}})
	if !errors.Is(err, done) {
		t.Fatal(err)
	}
	got, err := client.Job(ctx, job.UUID)
	if err != nil || got.State != store.Succeeded || got.Succeeded != 2 {
		t.Fatalf("the committed job: %+v, %v; want 2 tasks succeeded", got, err)
	}

	// The same key again: the first job, and ErrDuplicate; the caller's
	// transaction is still usable.
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again, err := client.SubmitTx(ctx, tx, good)
	if !errors.Is(err, store.ErrDuplicate) || again.UUID != job.UUID {
		t.Fatalf("the same key again: %+v, %v; want job %s with ErrDuplicate", again, err, job.UUID)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO orders (item) VALUES ('teapot')"); err != nil {
		t.Fatalf("the caller's transaction after a duplicate: %v", err)
	}
	tx.Rollback(ctx)

	// A transaction of another kind, or on another schema, is refused.
	if _, err := client.SubmitTx(ctx, struct{}{}, good); err == nil || !strings.Contains(err.Error(), "pgx.Tx") {
		t.Fatalf("a transaction of another kind: %v, want it refused", err)
	}
	other, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	tx, err = other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := client.SubmitTx(ctx, tx, JobFile{Tasks: []TaskSpec{{Kind: "noop"}}}); err == nil || !strings.Contains(err.Error(), "not on") {
		t.Fatalf("a transaction on another schema: %v, want it refused", err)
	}
}
