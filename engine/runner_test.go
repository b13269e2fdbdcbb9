package engine

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// TestRunnerLifecycle: one runner per database; a daemon runner runs a job
// to its end and stops softly; Run after Stop refuses; Close releases the
// lock for the next runner.
func TestRunnerLifecycle(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	job := createJob(t, db, 2, 4, repeat(5, "sleep", `{"secs":0.01}`)...)

	jobDone := make(chan Event, 1)
	r, err := OpenRunner(ctx, db, RunnerConfig{Config: Config{OnEvent: func(ev Event) {
		if ev.Type == store.EventJob {
			jobDone <- ev
		}
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRunner(ctx, db, RunnerConfig{}); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("a second runner: %v, want ErrLocked", err)
	}
	if _, err := r.RunJob(ctx, job.ID); err == nil {
		t.Fatalf("a daemon runner ran RunJob")
	}
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	select {
	case ev := <-jobDone:
		if ev.Job.Succeeded != 5 {
			t.Fatalf("job event %+v, want 5 succeeded", ev.Job)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the job did not finish")
	}
	if err := r.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("run: %v", err)
	}
	if err := r.Run(ctx); !errors.Is(err, ErrRunnerStopped) {
		t.Fatalf("run after stop: %v, want ErrRunnerStopped", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	// The lock is free again; a run runner stopped before it runs.
	r2, err := OpenRunner(ctx, db, RunnerConfig{Role: RoleRun})
	if err != nil {
		t.Fatalf("a runner after close: %v", err)
	}
	// A second RoleRun runner is refused with the holder named, at once;
	// with OnLockWait it waits for the first instead.
	var held *store.LockedError
	if r3, err := OpenRunner(ctx, db, RunnerConfig{Role: RoleRun}); !errors.As(err, &held) || held.Role != RoleRun {
		if r3 != nil {
			r3.Close()
		}
		t.Fatalf("a second run runner: %v, want a *store.LockedError held by a run runner", err)
	}
	waited := make(chan *store.LockedError, 1)
	opened := make(chan error, 1)
	go func() {
		r3, err := OpenRunner(ctx, db, RunnerConfig{Role: RoleRun, OnLockWait: func(h *store.LockedError) { waited <- h }})
		if err == nil {
			err = r3.Close()
		}
		opened <- err
	}()
	if h := <-waited; h.Role != RoleRun {
		t.Fatalf("waited for %v, want the run runner", h)
	}
	if err := r2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.RunJob(ctx, job.ID); !errors.Is(err, ErrRunnerStopped) {
		t.Fatalf("RunJob after stop: %v, want ErrRunnerStopped", err)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("the waiting run runner, once the first closed: %v", err)
	}
}

// TestRunnerHardStop: Stop with a context that ends interrupts a running
// task; it stays pending, with no attempt spent.
func TestRunnerHardStop(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	job := createJob(t, db, 1, 1, repeat(1, "sleep", `{"secs":60}`)...)
	r, err := OpenRunner(ctx, db, RunnerConfig{Role: RoleRun})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	type result struct {
		job store.Job
		err error
	}
	res := make(chan result, 1)
	go func() {
		j, err := r.RunJob(ctx, job.ID)
		res <- result{j, err}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		tasks, err := db.Tasks(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if tasks[0].State == store.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the task never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := r.Stop(stopCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stop: %v, want the deadline", err)
	}
	got := <-res
	if !errors.Is(got.err, ErrStopped) {
		t.Fatalf("RunJob: %v, want ErrStopped", got.err)
	}
	tasks, err := db.Tasks(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if tasks[0].State != store.Pending || tasks[0].Attempts != 0 {
		t.Fatalf("task after a hard stop: %s, %d attempts; want pending, 0", tasks[0].State, tasks[0].Attempts)
	}
}
