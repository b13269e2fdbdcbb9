package postgres

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/internal/pgtest"
	"github.com/pcd-dev/pcd/store"
)

// lease is the runners' lease in these tests.
const lease = 1500 * time.Millisecond

// twoHandles opens two handles on one test database with lease: a through
// a fault-injecting proxy, b directly. The test closes them at its end.
func twoHandles(t *testing.T, lease time.Duration) (a, b *DB, proxy *pgtest.Proxy) {
	t.Helper()
	url := pgtest.URL(t)
	proxy = pgtest.NewProxy(t, url)
	var err error
	if a, err = Open(context.Background(), proxy.URL, Options{Lease: lease}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if b, err = Open(context.Background(), url, Options{Lease: lease}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b, proxy
}

// A runner cut off from the server for longer than its lease loses it
// before the others may see it gone (Lost closes); another runner takes
// its tasks over and runs them; when the cut heals, the results the first
// runner commits for those tasks are discarded, counted, and the task
// callbacks are the second runner's alone.
func TestLostLeaseDiscardsResults(t *testing.T) {
	ctx := context.Background()
	a, b, proxy := twoHandles(t, lease)
	job, err := a.CreateJob(ctx, store.NewJob{Workers: 3, QueueSize: 3, Tasks: []store.NewTask{
		{Kind: "noop", Payload: []byte("1")}, {Kind: "noop", Payload: []byte("2")}, {Kind: "noop", Payload: []byte("3")}}})
	if err != nil {
		t.Fatal(err)
	}
	relA, err := a.LockRunner("daemon")
	if err != nil {
		t.Fatal(err)
	}
	defer relA.Release()
	leased, ok := relA.(store.Leased)
	if !ok {
		t.Fatalf("a PostgreSQL runner's hold is a %T, not a store.Leased", relA)
	}
	claimed, err := a.PendingTasks(ctx, job.ID, 0, 10, time.Now())
	if err != nil || len(claimed) != 3 {
		t.Fatalf("runner A claimed %d tasks (%v), want 3", len(claimed), err)
	}
	now := time.Now()
	batch := store.Batch{JobID: job.ID, Round: job.Round, StartedAt: now}
	for _, task := range claimed {
		batch.Starts = append(batch.Starts, store.Start{Seq: task.Seq, At: now})
	}
	if c, err := a.CompleteTasks(ctx, batch); err != nil || len(c.Started) != 3 || !c.Started[0] {
		t.Fatalf("start marks: %+v %v", c, err)
	}

	proxy.Cut()
	cutAt := time.Now()
	select {
	case <-leased.Lost():
	case <-time.After(3 * lease):
		t.Fatalf("runner A cut off for %v: its lease is not lost", 3*lease)
	}
	if waited := time.Since(cutAt); waited >= lease {
		t.Errorf("runner A saw its lease lost after %v, not before the lease (%v) ran out", waited, lease)
	}
	time.Sleep(lease) // until the others see A gone

	relB, err := b.LockRunner("daemon")
	if err != nil {
		t.Fatal(err)
	}
	defer relB.Release()
	rec, err := b.Recover(ctx, 3, func(string, store.Task, string) ([]byte, error) { return []byte("{}"), nil })
	requeued, failed := rec.Requeued, rec.Failed
	if err != nil || requeued != 3 || failed != 0 {
		t.Fatalf("runner B took over %d tasks, failed %d (%v); want 3, 0", requeued, failed, err)
	}
	// It names the runner it took them from, and their job.
	if g := rec.Runners; len(g) != 1 || g[0].Tasks != 3 || g[0].PID != os.Getpid() || g[0].Host == "" ||
		!slices.Equal(g[0].Jobs, []string{job.UUID}) {
		t.Errorf("runner B took over from %+v; want runner A (pid %d) with 3 tasks of job %s", g, os.Getpid(), job.UUID)
	}
	mine, err := b.PendingTasks(ctx, job.ID, 0, 10, time.Now())
	if err != nil || len(mine) != 3 {
		t.Fatalf("runner B claimed %d tasks (%v), want 3", len(mine), err)
	}
	proxy.Heal()

	results := func(result string) store.Batch {
		b := store.Batch{JobID: job.ID, Round: job.Round, StartedAt: now}
		for _, task := range claimed {
			b.Results = append(b.Results, store.Result{Seq: task.Seq, State: store.Succeeded, Attempt: 1,
				Result: []byte(result), Message: []byte(`{}`), StartedAt: now, FinishedAt: time.Now()})
		}
		return b
	}
	late, err := a.CompleteTasks(ctx, results(`"A"`))
	if err != nil {
		t.Fatalf("runner A's late results: %v", err)
	}
	if late.Discarded != 3 || len(late.Callbacks) != 0 {
		t.Errorf("runner A's late results: %d discarded, %d callbacks; want 3, 0", late.Discarded, len(late.Callbacks))
	}
	own, err := b.CompleteTasks(ctx, results(`"B"`))
	if err != nil || own.Discarded != 0 || len(own.Callbacks) != 3 {
		t.Fatalf("runner B's results: %d discarded, %d callbacks (%v); want 0, 3", own.Discarded, len(own.Callbacks), err)
	}
	var fromB, all int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE result = '"B"'), count(*) FROM results WHERE job_id = $1`, job.ID).
		Scan(&fromB, &all); err != nil {
		t.Fatal(err)
	}
	if fromB != 3 || all != 3 {
		t.Errorf("%d results, %d of them runner B's; want 3 and 3", all, fromB)
	}
}

// A runner that goes silent inside a transaction (the network between it
// and the server stops, then it dies) holds its locks only for a lease:
// the server ends its session (idle_in_transaction_session_timeout), and
// another runner's cancel of the same job, which waits on those locks,
// goes through. Without the timeout it waited for as long as the silent
// connection stayed open.
func TestSilentSessionReleasesItsLocks(t *testing.T) {
	ctx := context.Background()
	a, b, proxy := twoHandles(t, lease)
	job, err := b.CreateJob(ctx, store.NewJob{Workers: 1, QueueSize: 1, Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("1")}, {Kind: "noop", Payload: []byte("2")}}})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if err := a.lockJobs(ctx, tx, job.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE jobs SET state = state WHERE id = $1", job.ID); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	defer proxy.Heal() // before the rollback, which would wait on the cut
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 10*lease)
	defer cancel()
	msg := func(store.Task) ([]byte, error) { return []byte("{}"), nil }
	_, err = b.CancelJob(cctx, job.ID, msg, func(store.Job) ([]byte, error) { return []byte("{}"), nil })
	took := time.Since(start)
	if err != nil {
		t.Fatalf("the cancel beside a silent session: %v after %v", err, took)
	}
	// The server ends the session after a lease idle in its transaction;
	// a lock wait is bounded at two leases. Either way, a small multiple
	// of the lease, not the silent connection's life.
	if took > 3*lease {
		t.Errorf("the cancel waited %v on a silent session's locks; the lease is %v", took, lease)
	}
	t.Logf("the cancel went through %v after the session went silent (lease %v)", took.Round(time.Millisecond), lease)
}

// Every connection carries the bounds of boundWaits, and the URL's own
// settings win.
func TestConnectionsBoundTheirWaits(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t)+"&lock_timeout=7000", Options{Lease: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for name, want := range map[string]string{
		"idle_in_transaction_session_timeout": "3s",
		"lock_timeout":                        "7s",
	} {
		var got string
		if err := db.pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q (%v), want %q", name, got, err, want)
		}
	}
}
