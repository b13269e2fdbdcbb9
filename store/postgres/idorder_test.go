package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pcd-dev/pcd/internal/pgtest"
	"github.com/pcd-dev/pcd/store"
)

// The id-order trap: a reader that tails callbacks by id (pcd watch, a
// sink's cursor) must not skip one whose id was drawn before an id that
// committed earlier. First the trap itself, with ids drawn as a plain
// sequence does; then the store, which draws them under a lock held to
// commit, so that a transaction that starts drawing later commits later.
func TestCallbackIDsCommitInOrder(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	newJob := func() store.Job {
		j, err := db.CreateJob(ctx, store.NewJob{Workers: 1, QueueSize: 1, Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}}})
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	insert := func(tx pgx.Tx, job int64) int64 {
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO callbacks (event, job_id, message, created_at) VALUES ('job', $1, '{}', 0) RETURNING id`, job).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	visible := func(after int64) []int64 {
		cbs, err := db.CallbacksAfter(ctx, after, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, c := range cbs {
			ids = append(ids, c.ID)
		}
		return ids
	}

	// The trap: A draws an id, B draws the next and commits first; a
	// reader that saw B and moved its cursor there never sees A.
	a, _ := db.pool.Begin(ctx)
	idA := insert(a, newJob().ID)
	b, _ := db.pool.Begin(ctx)
	idB := insert(b, newJob().ID)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	cursor := visible(0)[0]
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if idA >= idB || cursor != idB || len(visible(cursor)) != 0 {
		t.Fatalf("the trap did not show: ids %d, %d; cursor %d; after it %v", idA, idB, cursor, visible(cursor))
	}

	// The store: A holds the callback lock (as every writer of callbacks
	// does, to its commit); B, a group commit, waits for it and draws its
	// ids after A has committed.
	last, _ := db.LastCallbackID(ctx)
	j := newJob()
	a, _ = db.pool.Begin(ctx)
	defer a.Rollback(ctx)
	if err := db.lockCallbacks(ctx, a); err != nil {
		t.Fatal(err)
	}
	idA = insert(a, newJob().ID)
	committed := make(chan store.Committed, 1)
	go func() {
		c, err := db.CompleteTasks(ctx, store.Batch{JobID: j.ID, Results: []store.Result{{Seq: 1, State: store.Succeeded, Attempt: 1,
			StartedAt: time.Now(), FinishedAt: time.Now(), Message: []byte(`{"event":"task"}`)}}})
		if err != nil {
			t.Error(err)
		}
		committed <- c
	}()
	waitForLockWaiter(t, db)
	if ids := visible(last); len(ids) != 0 {
		t.Fatalf("callbacks %v visible before either transaction committed", ids)
	}
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	c := <-committed
	if len(c.Callbacks) != 1 {
		t.Fatalf("the group commit wrote %d callbacks, want 1", len(c.Callbacks))
	}
	if c.Callbacks[0].ID < idA {
		t.Fatalf("the group commit's callback %d is below the one committed before it, %d: a reader past %d skips it", c.Callbacks[0].ID, idA, idA)
	}
	if ids := visible(last); len(ids) != 2 || ids[0] != idA || ids[1] != c.Callbacks[0].ID {
		t.Fatalf("visible after both commits: %v, want [%d %d]", ids, idA, c.Callbacks[0].ID)
	}
}

// waitForLockWaiter waits until a session waits for an advisory lock.
func waitForLockWaiter(t *testing.T, db *DB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := db.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no transaction waits for the callback lock after 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
