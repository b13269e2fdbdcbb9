package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// BenchmarkSQLiteInsertRaw is the floor: prepared single-row INSERTs into a
// two-column table, 1000 per FULL-synchronous transaction, through the same
// driver. Compare BenchmarkCompleteTasks with it.
func BenchmarkSQLiteInsertRaw(b *testing.B) {
	raw, err := sql.Open("sqlite", filepath.Join(b.TempDir(), "raw.db")+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate")
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	raw.SetMaxOpenConns(1)
	if _, err := raw.Exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"); err != nil {
		b.Fatal(err)
	}
	stmt, err := raw.Prepare("INSERT INTO t (v) VALUES (?)")
	if err != nil {
		b.Fatal(err)
	}
	defer stmt.Close()
	b.ResetTimer()
	for i := 0; i < b.N; {
		tx, err := raw.Begin()
		if err != nil {
			b.Fatal(err)
		}
		s := tx.Stmt(stmt)
		for j := 0; j < 1000 && i < b.N; j, i = j+1, i+1 {
			if _, err := s.Exec(`{"event":"task"}`); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// benchJob opens a fresh database with a job of b.N no-op tasks; the
// database closes with the benchmark.
func benchJob(b *testing.B) (*sqlite.DB, store.Job) {
	b.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	nj := store.NewJob{Workers: 25, QueueSize: 100, Tasks: make([]store.NewTask, b.N)}
	for i := range nj.Tasks {
		nj.Tasks[i] = store.NewTask{Kind: "noop", Payload: []byte("null")}
	}
	job, err := db.CreateJob(context.Background(), nj)
	if err != nil {
		b.Fatal(err)
	}
	return db, job
}

// BenchmarkCompleteTasks is the store's share of running a task: results
// with their callback records, committed 1000 per group commit.
func BenchmarkCompleteTasks(b *testing.B) {
	db, job := benchJob(b)
	now := time.Now()
	msg := []byte(`{"event":"task","job_id":"x","task_id":"y","number":1,"kind":"noop","state":"succeeded","time_secs":0.000001,"attempts":1}`)
	b.ResetTimer()
	var last store.Span
	for seq := int64(1); seq <= int64(b.N); {
		batch := store.Batch{JobID: job.ID, Released: last}
		for j := 0; j < 1000 && seq <= int64(b.N); j, seq = j+1, seq+1 {
			batch.Results = append(batch.Results, store.Result{Seq: seq, State: store.Succeeded, Attempt: 1, StartedAt: now, FinishedAt: now, Message: msg})
		}
		c, err := db.CompleteTasks(context.Background(), batch)
		if err != nil {
			b.Fatal(err)
		}
		last = store.Span{From: c.Callbacks[0].ID, To: c.Callbacks[len(c.Callbacks)-1].ID}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkPendingTasks is the producer's read path: the pending tasks of
// a job, a page of 1000 (the producer's smallest) at a time, by key.
func BenchmarkPendingTasks(b *testing.B) {
	db, job := benchJob(b)
	now := time.Now()
	b.ResetTimer()
	var after int64
	for read := 0; read < b.N; {
		page, err := db.PendingTasks(context.Background(), job.ID, after, 1000, now)
		if err != nil {
			b.Fatal(err)
		}
		if len(page) == 0 {
			b.Fatalf("no tasks after %d", after)
		}
		read += len(page)
		after = page[len(page)-1].Seq
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkSchedulePass is a daemon's scheduling read when a job finishes
// and 10,000 one-task jobs wait: the open jobs, then the next runnable one.
func BenchmarkSchedulePass(b *testing.B) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	nj := store.NewJob{Workers: 25, QueueSize: 100, Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}}}
	for range 10000 {
		if _, err := db.CreateJob(ctx, nj); err != nil {
			b.Fatal(err)
		}
	}
	running := map[int64]bool{1: true}
	b.ResetTimer()
	for range b.N {
		if _, err := db.OpenJobs(ctx); err != nil {
			b.Fatal(err)
		}
		jobs, err := db.RunnableJobs(ctx, store.RunnableQuery{Skip: running, Limit: 1, Now: time.Now()})
		if err != nil || len(jobs) != 1 || jobs[0].ID != 2 {
			b.Fatalf("runnable: %v, %v", jobs, err)
		}
	}
}
