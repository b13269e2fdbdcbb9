package engine

import (
	"context"
	"testing"
)

func TestFrontier(t *testing.T) {
	f := newFrontier(10) // tasks 1-10 final before this run
	if got := f.through(); got != 10 {
		t.Fatalf("fresh: %d, want 10", got)
	}
	f.held(14)                                        // waits out a backoff at the start of the run
	for _, seq := range []int64{11, 12, 13, 15, 17} { // 16 was final when read
		f.queued(seq)
	}
	steps := []struct {
		finished int64
		want     int64
	}{
		{12, 10}, // 11 still runs
		{11, 12}, // 13 runs
		{13, 13}, // 14 waits
		{15, 13},
		// A task that waited is not followed one by one: the frontier
		// stays below it for the rest of the run (a lower bound is
		// always right; a million waiting tasks cost nothing).
		{14, 13},
		{17, 13},
	}
	for _, s := range steps {
		f.finished(s.finished)
		if got := f.through(); got != s.want {
			t.Fatalf("after %d finished: through %d, want %d", s.finished, got, s.want)
		}
	}
}

func TestFrontierStaysBelowAWaitingTask(t *testing.T) {
	f := newFrontier(0)
	for seq := int64(1); seq <= 5; seq++ {
		f.queued(seq)
	}
	f.finished(1)
	f.waiting(3) // failed; retries later
	f.finished(2)
	f.finished(4)
	f.finished(5)
	if got := f.through(); got != 2 {
		t.Fatalf("through %d with task 3 waiting, want 2", got)
	}
	if len(f.open) != 0 || len(f.final) != 0 {
		t.Errorf("the frontier still follows %d open and %d final tasks", len(f.open), len(f.final))
	}
}

func TestFrontierStopsRatherThanGrow(t *testing.T) {
	f := newFrontier(0)
	f.queued(1) // runs for ever
	for seq := int64(2); seq <= maxFrontierFinals+2; seq++ {
		f.queued(seq)
		f.finished(seq)
	}
	if got := f.through(); got != 0 {
		t.Fatalf("through %d, want 0 once it stopped", got)
	}
	if len(f.open) != 0 || f.final != nil {
		t.Errorf("a stopped frontier still holds %d seqs", len(f.open))
	}
	f.finished(1)
	f.queued(maxFrontierFinals + 3)
	if got := f.through(); got != 0 {
		t.Fatalf("through %d after stopping, want 0", got)
	}
}

func TestRunSavesItsFinishedPrefix(t *testing.T) {
	db := openDB(t)
	job := createJob(t, db, 4, 8, repeat(500, "noop", "")...)
	if _, err := newJobController(db, Config{MaxBatch: 10}).Run(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	got, err := db.Job(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The last batches' own results are not in what they saved.
	if got.DoneThrough < 250 || got.DoneThrough > 500 {
		t.Errorf("done_through %d after 500 tasks in batches of 10, want most of them", got.DoneThrough)
	}
}
