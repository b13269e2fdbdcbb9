package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// TestDaemonRunsOneJobAtATime: with MaxJobs 1 a daemon starts the next
// job once the last has nothing left to run, before its last commit lands,
// but the tasks of two jobs never run at once: a job whose task waits out
// a retry's backoff keeps its slot. Each job's callback still comes after
// its tasks' callbacks, and every job succeeds once.
func TestDaemonRunsOneJobAtATime(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	var (
		mu       sync.Mutex
		active   = map[string]int{} // running tasks, by job
		overlaps []string
	)
	reg := NewRegistry()
	reg.Register("probe", Func(func(_ context.Context, task Task) (json.RawMessage, error) {
		mu.Lock()
		for other := range active {
			if other != task.JobID {
				overlaps = append(overlaps, fmt.Sprintf("task %d of job %s ran beside job %s", task.Number, task.JobID, other))
			}
		}
		active[task.JobID]++
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		if active[task.JobID]--; active[task.JobID] == 0 {
			delete(active, task.JobID)
		}
		mu.Unlock()
		if string(task.Payload) == `"flaky"` && task.Attempt == 1 {
			return nil, errors.New("the first attempt fails")
		}
		return nil, nil
	}))
	const jobs = 40
	tasks := map[string]int{}
	for i := range jobs {
		jf := JobFile{Name: fmt.Sprint(i), Workers: 4, Tasks: repeat(1+i%3, "probe", `"ok"`)}
		if i%10 == 3 {
			// Its retry comes 20 ms later, while later jobs would run.
			jf.RetrySpec = RetrySpec{MaxAttempts: 2, Backoff: &BackoffSpec{Base: Duration(20 * time.Millisecond), Cap: Duration(20 * time.Millisecond)}}
			jf.Tasks = repeat(1, "probe", `"flaky"`)
		}
		if err := jf.Validate(reg); err != nil {
			t.Fatal(err)
		}
		job, err := db.CreateJob(ctx, jf.NewJob())
		if err != nil {
			t.Fatal(err)
		}
		tasks[job.UUID] = len(jf.Tasks)
	}

	var rec recorder
	allDone := make(chan struct{})
	var jobEvents int
	r, err := OpenRunner(ctx, db, RunnerConfig{MaxJobs: 1, Config: Config{Registry: reg, OnEvent: func(ev Event) {
		rec.add(ev)
		if ev.Type == store.EventJob {
			if jobEvents++; jobEvents == jobs {
				close(allDone)
			}
		}
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	select {
	case <-allDone:
	case <-time.After(60 * time.Second):
		t.Fatalf("%d of %d jobs finished", len(rec.all()), jobs)
	}
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, o := range overlaps {
		t.Error(o)
	}
	seen := map[string]int{}
	ended := map[string]bool{}
	for _, ev := range rec.all() {
		switch {
		case ended[ev.JobID]:
			t.Errorf("a callback of job %s after its job callback", ev.JobID)
		case ev.Type == store.EventTask:
			seen[ev.JobID]++
		default:
			ended[ev.JobID] = true
			if ev.Job.Outcome != store.Succeeded || seen[ev.JobID] != tasks[ev.JobID] {
				t.Errorf("job %s: %s after %d task callbacks, want succeeded after %d", ev.JobID, ev.Job.Outcome, seen[ev.JobID], tasks[ev.JobID])
			}
		}
	}
	if len(ended) != jobs {
		t.Errorf("%d jobs ended, want %d", len(ended), jobs)
	}
}
