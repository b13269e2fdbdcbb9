package sqlite_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// TestJobsCommitTogether: the batches of jobs that wait while another
// job's group commit runs share the next transaction, and a batch that
// fails there fails alone: the others commit.
func TestJobsCommitTogether(t *testing.T) {
	db := openDB(t)
	raw := rawDB(t, db.Path())
	ctx := context.Background()
	injected := errors.New("injected")
	leader, first, second, failing := newJob(t, db, 3), newJob(t, db, 3), newJob(t, db, 3), newJob(t, db, 3)

	inside, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	secondSaw := int64(-1) // the first's results committed when the second's were written
	db.Hooks.BetweenResultAndCallback = func(jobID, seq int64) error {
		switch {
		case jobID == leader.ID && seq == 1:
			once.Do(func() {
				close(inside)
				<-release
			})
		case jobID == second.ID && seq == 1 && secondSaw < 0:
			if err := raw.QueryRow("SELECT count(*) FROM results WHERE job_id = ?", first.ID).Scan(&secondSaw); err != nil {
				return err
			}
		case jobID == failing.ID:
			return injected
		}
		return nil
	}
	batch := func(job store.Job) store.Batch {
		return store.Batch{JobID: job.ID, Results: []store.Result{result(1), result(2), result(3)}, Finish: jobMessage}
	}
	commit := func(job store.Job, out *store.Committed, errp *error, wg *sync.WaitGroup) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			*out, *errp = db.CompleteTasks(ctx, batch(job))
		}()
	}
	var wg sync.WaitGroup
	outs := make([]store.Committed, 4)
	errs := make([]error, 4)
	commit(leader, &outs[0], &errs[0], &wg)
	<-inside
	// They queue in this order: the failing one last, once the second's
	// batch has been written in the group's transaction.
	for i, job := range []store.Job{first, second, failing} {
		commit(job, &outs[i+1], &errs[i+1], &wg)
		waitFor(t, func() bool { return db.CommitsWaiting() == i+1 })
	}
	close(release)
	wg.Wait()

	for i, job := range []store.Job{leader, first, second} {
		if errs[i] != nil {
			t.Fatalf("job %d: %v", job.ID, errs[i])
		}
		if len(outs[i].Callbacks) != 3 || outs[i].JobCallback == nil {
			t.Errorf("job %d: %d task callbacks and job callback %v, want 3 and one", job.ID, len(outs[i].Callbacks), outs[i].JobCallback)
		}
		if n := queryInt(t, raw, "SELECT count(*) FROM callbacks WHERE job_id = ?", job.ID); n != 4 {
			t.Errorf("job %d: %d callbacks committed, want 4", job.ID, n)
		}
	}
	if secondSaw != 0 {
		t.Errorf("the first job's results were committed (%d) when the second's were written: they did not share a transaction", secondSaw)
	}
	if !errors.Is(errs[3], injected) {
		t.Errorf("the failing job: %v, want the injected error", errs[3])
	}
	if n := queryInt(t, raw, "SELECT count(*) FROM results WHERE job_id = ?", failing.ID); n != 0 {
		t.Errorf("the failing job has %d results committed", n)
	}
}

func jobMessage(j store.Job) ([]byte, error) { return []byte(`{"event":"job"}`), nil }

// waitFor waits until cond holds, for up to 30 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(time.Millisecond)
	}
}
