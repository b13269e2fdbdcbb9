package engine

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// TestRunnerCountsThroughput: the results a runner commits reach the
// database's throughput counts by the time RunJob returns, split into
// succeeded and failed, in the spans they finished in.
func TestRunnerCountsThroughput(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	specs := append(repeat(300, "noop", ""), repeat(7, "fail", `{"message":"no"}`)...)
	job := createJob(t, db, 4, 10, specs...)
	before := time.Now().Truncate(store.ThroughputSpan)
	r, err := OpenRunner(ctx, db, RunnerConfig{Role: RoleRun})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.RunJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	spans, err := db.Throughput(ctx, before)
	if err != nil {
		t.Fatal(err)
	}
	var ok, bad int64
	for _, sp := range spans {
		if sp.At.Before(before) || sp.At.After(time.Now()) || !sp.At.Equal(sp.At.Truncate(store.ThroughputSpan)) {
			t.Errorf("span at %v: not a span of this run", sp.At)
		}
		ok += sp.Succeeded
		bad += sp.Failed
	}
	if ok != 300 || bad != 7 {
		t.Fatalf("throughput counts %d succeeded and %d failed, want 300 and 7 (%+v)", ok, bad, spans)
	}
}
