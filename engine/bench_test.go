package engine

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// BenchmarkRunNoop runs one job of b.N no-op tasks with 25 workers and a
// queue of 100, on synchronous=FULL, and reports tasks per second.
func BenchmarkRunNoop(b *testing.B) {
	benchmarkRun(b, sqlite.SyncFull)
}

// BenchmarkRunNoopSyncNormal is the same with synchronous=NORMAL.
func BenchmarkRunNoopSyncNormal(b *testing.B) {
	benchmarkRun(b, sqlite.SyncNormal)
}

func benchmarkRun(b *testing.B, sync sqlite.Sync) {
	db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "pcd.db"), sqlite.Options{Sync: sync})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	jf := JobFile{Workers: DefaultWorkers, QueueSize: DefaultQueueSize, Tasks: repeatNoop(b.N)}
	job, err := db.CreateJob(context.Background(), jf.NewJob())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	done, err := newJobController(db, Config{}).Run(context.Background(), job.ID)
	b.StopTimer()
	if err != nil || done.Succeeded != int64(b.N) {
		b.Fatalf("run: %v, %d succeeded of %d", err, done.Succeeded, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkCreateJob writes one job of b.N no-op tasks in one transaction.
func BenchmarkCreateJob(b *testing.B) {
	db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	nj := JobFile{Tasks: repeatNoop(b.N)}.NewJob()
	b.ResetTimer()
	if _, err := db.CreateJob(context.Background(), nj); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

func repeatNoop(n int) []TaskSpec {
	tasks := make([]TaskSpec, n)
	for i := range tasks {
		tasks[i] = TaskSpec{Kind: "noop"}
	}
	return tasks
}

// BenchmarkDrainSmallJobs has a daemon (default MaxJobs, synchronous=FULL)
// run b.N pending one-task no-op jobs, and reports jobs per second: the
// cost of scheduling, starting and finishing a job.
func BenchmarkDrainSmallJobs(b *testing.B) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	nj := JobFile{Workers: DefaultWorkers, QueueSize: DefaultQueueSize, Tasks: repeatNoop(1)}.NewJob()
	for range b.N {
		if _, err := db.CreateJob(ctx, nj); err != nil {
			b.Fatal(err)
		}
	}
	var finished atomic.Int64
	b.ResetTimer()
	r, err := OpenRunner(ctx, db, RunnerConfig{Config: Config{OnEvent: func(ev Event) {
		if ev.Type == store.EventJob {
			finished.Add(1)
		}
	}}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	for finished.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	if err := r.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}
