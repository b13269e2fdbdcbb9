package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openDB(t *testing.T) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func createJob(t *testing.T, db *sqlite.DB, workers, queue int, tasks ...TaskSpec) store.Job {
	t.Helper()
	jf := JobFile{Name: t.Name(), Workers: workers, QueueSize: queue, Tasks: tasks}
	job, err := db.CreateJob(context.Background(), jf.NewJob())
	if err != nil {
		t.Fatal(err)
	}
	return job
}

func repeat(n int, kind, payload string) []TaskSpec {
	out := make([]TaskSpec, n)
	for i := range out {
		out[i] = TaskSpec{Kind: kind, Payload: json.RawMessage(payload)}
	}
	return out
}

// recorder collects events; it is safe for concurrent use.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// checkCallbacks asserts exactly one task event per task and one job event,
// last, with ids increasing.
func checkCallbacks(t *testing.T, events []Event, total int) {
	t.Helper()
	seen := map[int64]int{}
	jobs := 0
	var last int64
	for i, e := range events {
		if e.CallbackID <= last {
			t.Errorf("event %d: callback id %d not after %d", i, e.CallbackID, last)
		}
		last = e.CallbackID
		switch {
		case e.Task != nil:
			seen[e.Task.Number]++
			if jobs > 0 {
				t.Errorf("task %d event after the job event", e.Task.Number)
			}
		case e.Job != nil:
			jobs++
		}
	}
	if jobs != 1 {
		t.Errorf("%d job events, want 1", jobs)
	}
	if len(seen) != total {
		t.Errorf("events for %d tasks, want %d", len(seen), total)
	}
	for n, c := range seen {
		if c != 1 || n < 1 || n > int64(total) {
			t.Errorf("task %d: %d events", n, c)
		}
	}
}

func rawDB(t *testing.T, db *sqlite.DB) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", db.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

func count(t *testing.T, raw *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := raw.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestRunCompletesEveryTaskOnce(t *testing.T) {
	db := openDB(t)
	job := createJob(t, db, 8, 10, repeat(2000, "noop", "")...)
	var rec recorder
	done, err := newJobController(db, Config{OnEvent: rec.add}).Run(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != store.Succeeded || done.Succeeded != 2000 || !done.Finished() {
		t.Fatalf("job ended %+v", done)
	}
	checkCallbacks(t, rec.all(), 2000)
	raw := rawDB(t, db)
	if n := count(t, raw, "SELECT count(*) FROM callbacks WHERE event = 'task'"); n != 2000 {
		t.Errorf("%d task callback records, want 2000", n)
	}
	if n := count(t, raw, "SELECT count(*) FROM callbacks c JOIN jobs j ON j.id = c.job_id WHERE c.id > j.released_id"); n != 0 {
		t.Errorf("%d callbacks not marked delivered", n)
	}
	// A second run of a finished job does nothing.
	var again recorder
	if _, err := newJobController(db, Config{OnEvent: again.add}).Run(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	if len(again.all()) != 0 {
		t.Errorf("second run released %d callbacks", len(again.all()))
	}
}

// gate is a kind whose tasks block until released.
type gate struct {
	began   *atomic.Int64
	started chan int64
	release chan struct{}
}

func newGate(n int) gate {
	return gate{began: new(atomic.Int64), started: make(chan int64, n), release: make(chan struct{})}
}

func (gate) Validate(json.RawMessage) error { return nil }
func (g gate) Run(ctx context.Context, t Task) (json.RawMessage, error) {
	g.began.Add(1)
	g.started <- t.Number
	select {
	case <-g.release:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestQueueIsBounded(t *testing.T) {
	const workers, queue, total = 2, 5, 60
	db := openDB(t)
	job := createJob(t, db, workers, queue, repeat(total, "gate", "")...)
	g := newGate(total)
	reg := NewRegistry()
	reg.Register("gate", g)
	ctl := newJobController(db, Config{Registry: reg})
	var produced, maxAhead atomic.Int64
	ctl.onProduce = func(store.Task) {
		ahead := produced.Add(1) - g.began.Load()
		for {
			m := maxAhead.Load()
			if ahead <= m || maxAhead.CompareAndSwap(m, ahead) {
				break
			}
		}
	}
	errc := make(chan error, 1)
	go func() {
		_, err := ctl.Run(context.Background(), job.ID)
		errc <- err
	}()
	for range workers {
		<-g.started
	}
	// Both workers are blocked: the producer fills the queue and blocks.
	deadline := time.Now().Add(10 * time.Second)
	for produced.Load() < workers+queue {
		if time.Now().After(deadline) {
			t.Fatalf("producer queued %d tasks, want %d", produced.Load(), workers+queue)
		}
		time.Sleep(time.Millisecond)
	}
	// Give an unbounded producer the chance to run ahead.
	time.Sleep(100 * time.Millisecond)
	if got := produced.Load(); got != workers+queue {
		t.Fatalf("with %d blocked workers and a queue of %d, the producer queued %d tasks", workers, queue, got)
	}
	close(g.release)
	for range total - workers {
		<-g.started
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if produced.Load() != total {
		t.Errorf("produced %d, want %d", produced.Load(), total)
	}
	// Queued but not yet started: at most the queue plus what each worker
	// has taken and not begun.
	if m := maxAhead.Load(); m > queue+workers {
		t.Errorf("up to %d tasks queued ahead of the workers, want at most %d", m, queue+workers)
	}
}

func TestPanicFailsOnlyThatTask(t *testing.T) {
	db := openDB(t)
	reg := NewRegistry()
	reg.Register("maybe", Func(func(_ context.Context, t Task) (json.RawMessage, error) {
		if t.Number == 3 {
			panic("boom")
		}
		return json.RawMessage(`{"ok":true}`), nil
	}))
	job := createJob(t, db, 4, 4, repeat(6, "maybe", "")...)
	var rec recorder
	done, err := newJobController(db, Config{Registry: reg, OnEvent: rec.add}).Run(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != store.Failed || done.Failed != 1 || done.Succeeded != 5 {
		t.Fatalf("job ended %s with %d failed, %d succeeded", done.State, done.Failed, done.Succeeded)
	}
	for _, e := range rec.all() {
		if e.Task == nil {
			continue
		}
		if e.Task.Number == 3 && (e.Task.State != store.Failed || e.Task.Error != "panic: boom") {
			t.Errorf("task 3: %+v", e.Task)
		}
		if e.Task.Number != 3 && string(e.Task.Result) != `{"ok":true}` {
			t.Errorf("task %d result %s", e.Task.Number, e.Task.Result)
		}
	}
	checkCallbacks(t, rec.all(), 6)
}

// A kind the runner does not know, met as the job runs (tasks of it were
// appended, say), is not failed: the task stays pending, unstarted, for
// a runner that knows it, and this runner's run of the job stops.
func TestUnknownKindAtRunTimeWaits(t *testing.T) {
	db := openDB(t)
	job := createJob(t, db, 1, 1, TaskSpec{Kind: "gone"}, TaskSpec{Kind: "noop"})
	done, err := newJobController(db, Config{}).Run(context.Background(), job.ID)
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("run: %v, want ErrStopped", err)
	}
	tasks, _ := db.Tasks(context.Background(), job.ID)
	if done.Finished() || done.Failed != 0 || tasks[0].State != store.Pending || tasks[0].Attempts != 0 {
		t.Fatalf("job %+v, task 1 %+v; want the job unfinished and task 1 pending, unstarted", done, tasks[0])
	}
}

// fakeClock's monotonic reading moves only when a test says so, while its
// wall clock jumps by an hour at every read.
type fakeClock struct {
	mono  atomic.Int64
	reads atomic.Int64
}

func (c *fakeClock) Now() time.Time {
	jump := time.Hour
	if c.reads.Add(1)%2 == 0 {
		jump = -jump
	}
	return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).Add(jump * time.Duration(c.reads.Load()))
}
func (c *fakeClock) Mono() time.Duration     { return time.Duration(c.mono.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.mono.Add(int64(d)) }
func (c *fakeClock) kind() Func {
	return func(context.Context, Task) (json.RawMessage, error) {
		c.advance(250 * time.Millisecond)
		return nil, nil
	}
}

func TestDurationsUseTheMonotonicClock(t *testing.T) {
	db := openDB(t)
	clock := &fakeClock{}
	reg := NewRegistry()
	reg.Register("tick", clock.kind())
	job := createJob(t, db, 1, 1, repeat(4, "tick", "")...)
	var rec recorder
	done, err := newJobController(db, Config{Registry: reg, Clock: clock, OnEvent: rec.add}).Run(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rec.all() {
		if e.Task != nil && e.Task.TimeSecs != 0.25 {
			t.Errorf("task %d time_secs %v, want 0.25", e.Task.Number, e.Task.TimeSecs)
		}
		if e.Job != nil && e.Job.ElapsedSecs != 1 {
			t.Errorf("elapsed_secs %v, want 1", e.Job.ElapsedSecs)
		}
	}
	if done.Elapsed != time.Second {
		t.Errorf("stored elapsed %v, want 1s", done.Elapsed)
	}
}

// TestStopAndResume drains a run midway, then resumes it: no task runs
// twice, elapsed adds up over both runs, and each callback appears once.
func TestStopAndResume(t *testing.T) {
	db := openDB(t)
	clock := &fakeClock{}
	var ctl *jobController
	var ran atomic.Int64
	reg := NewRegistry()
	reg.Register("tick", Func(func(context.Context, Task) (json.RawMessage, error) {
		clock.advance(100 * time.Millisecond)
		if ran.Add(1) == 5 {
			ctl.Drain()
		}
		return nil, nil
	}))
	job := createJob(t, db, 1, 2, repeat(20, "tick", "")...)
	var rec recorder
	ctl = newJobController(db, Config{Registry: reg, Clock: clock, OnEvent: rec.add})
	first, err := ctl.Run(context.Background(), job.ID)
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("drained run: %v, want ErrStopped", err)
	}
	if first.Finished() {
		t.Fatal("a drained job finished")
	}
	afterFirst := ran.Load()
	clock.advance(time.Hour) // time between the runs does not count
	done, err := newJobController(db, Config{Registry: reg, Clock: clock, OnEvent: rec.add}).Run(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ran.Load() != 20 {
		t.Errorf("%d task runs over both runs (%d in the first), want 20", ran.Load(), afterFirst)
	}
	checkCallbacks(t, rec.all(), 20)
	if done.Elapsed != 2*time.Second {
		t.Errorf("elapsed %v over both runs, want 2s", done.Elapsed)
	}
}

func TestCancelLeavesRunningTasksPending(t *testing.T) {
	db := openDB(t)
	const total = 6
	job := createJob(t, db, 3, 3, repeat(total, "gate", "")...)
	g := newGate(total)
	reg := NewRegistry()
	reg.Register("gate", g)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := newJobController(db, Config{Registry: reg}).Run(ctx, job.ID)
		errc <- err
	}()
	for range 3 {
		<-g.started
	}
	cancel()
	if err := <-errc; !errors.Is(err, ErrStopped) {
		t.Fatalf("cancelled run: %v, want ErrStopped", err)
	}
	tasks, _ := db.Tasks(context.Background(), job.ID)
	for _, task := range tasks {
		if task.State != store.Pending || task.Attempts != 0 {
			t.Errorf("task %d: %s after %d attempts, want pending with none spent", task.Seq, task.State, task.Attempts)
		}
	}
}

// TestCommitFailureKeepsResultsWithCallbacks fails a group commit between
// a result and its callback: afterwards every task has both or neither,
// and a second run completes the job with one callback per task.
func TestCommitFailureKeepsResultsWithCallbacks(t *testing.T) {
	db := openDB(t)
	job := createJob(t, db, 4, 8, repeat(300, "noop", "")...)
	injected := errors.New("disk on fire")
	db.Hooks.BetweenResultAndCallback = func(_, seq int64) error {
		if seq == 150 {
			return injected
		}
		return nil
	}
	var rec recorder
	if _, err := newJobController(db, Config{OnEvent: rec.add}).Run(context.Background(), job.ID); !errors.Is(err, injected) {
		t.Fatalf("run: %v, want the injected error", err)
	}
	raw := rawDB(t, db)
	if n := count(t, raw, `SELECT count(*) FROM tasks t WHERE EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq) !=
		EXISTS (SELECT 1 FROM callbacks c WHERE c.job_id = t.job_id AND c.task_seq = t.seq)`); n != 0 {
		t.Fatalf("%d tasks have a result without a callback or a callback without a result", n)
	}
	if n := count(t, raw, "SELECT count(*) FROM callbacks"); n != len(rec.all()) {
		t.Errorf("%d callbacks committed, %d released", n, len(rec.all()))
	}
	db.Hooks.BetweenResultAndCallback = nil
	if _, err := newJobController(db, Config{OnEvent: rec.add}).Run(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	checkCallbacks(t, rec.all(), 300)
}

func TestRedeliversUndeliveredCallbacks(t *testing.T) {
	db := openDB(t)
	job := createJob(t, db, 2, 2, repeat(5, "noop", "")...)
	var rec recorder
	if _, err := newJobController(db, Config{OnEvent: rec.add}).Run(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	raw := rawDB(t, db)
	// As if the process died after committing the last two but before
	// delivering them.
	if _, err := raw.Exec("UPDATE jobs SET released_id = (SELECT max(id) - 2 FROM callbacks)"); err != nil {
		t.Fatal(err)
	}
	var again recorder
	if _, err := newJobController(db, Config{OnEvent: again.add}).Run(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	got := again.all()
	if len(got) != 2 || got[0].Task == nil || got[1].Job == nil {
		t.Fatalf("redelivered %+v, want the last task event and the job event", got)
	}
	all := rec.all()
	if got[0].CallbackID != all[len(all)-2].CallbackID || got[1].CallbackID != all[len(all)-1].CallbackID {
		t.Error("redelivered callbacks carry different ids")
	}
	if n := count(t, raw, "SELECT count(*) FROM callbacks c JOIN jobs j ON j.id = c.job_id WHERE c.id > j.released_id"); n != 0 {
		t.Errorf("%d callbacks still undelivered", n)
	}
}

func TestRecoverCountsInterruptionsAndFailsAfterThree(t *testing.T) {
	db := openDB(t)
	job := createJob(t, db, 2, 2, repeat(3, "noop", "")...)
	raw := rawDB(t, db)
	crash := func() {
		t.Helper()
		// As if a runner had started tasks 1 and 2 and then died.
		if _, err := raw.Exec(`INSERT OR IGNORE INTO running (job_id, seq, started_at) SELECT job_id, seq, 0 FROM tasks t
			WHERE seq IN (1, 2) AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq)`); err != nil {
			t.Fatal(err)
		}
		if _, err := recoverRunner(context.Background(), db, nil); err != nil {
			t.Fatal(err)
		}
	}
	crash()
	crash()
	tasks, _ := db.Tasks(context.Background(), job.ID)
	for _, task := range tasks[:2] {
		if task.State != store.Pending || task.Interrupts != 2 || task.Attempts != 0 {
			t.Fatalf("task %d after 2 restarts: %s, %d interrupts, %d attempts", task.Seq, task.State, task.Interrupts, task.Attempts)
		}
	}
	raw.Exec("UPDATE tasks SET interrupts = 0 WHERE seq = 2") // task 2 finished a run in between
	crash()
	tasks, _ = db.Tasks(context.Background(), job.ID)
	if tasks[0].State != store.Failed || tasks[0].Error != "interrupted by 3 restarts" {
		t.Errorf("task 1 after 3 restarts: %s %q", tasks[0].State, tasks[0].Error)
	}
	if tasks[1].State != store.Pending || tasks[2].State != store.Pending {
		t.Errorf("tasks 2 and 3: %s, %s; want pending", tasks[1].State, tasks[2].State)
	}
	// The job goes on, and the failed task has exactly one callback.
	var rec recorder
	done, err := newJobController(db, Config{OnEvent: rec.add}).Run(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != store.Failed || done.Failed != 1 || done.Succeeded != 2 {
		t.Errorf("job ended %s with %d failed, %d succeeded", done.State, done.Failed, done.Succeeded)
	}
	checkCallbacks(t, rec.all(), 3)
}

func TestRetriesWithBackoffHoldNoWorker(t *testing.T) {
	db := openDB(t)
	var mu sync.Mutex
	var starts []string
	tries := map[int64]int{}
	reg := NewRegistry()
	reg.Register("flaky", Func(func(_ context.Context, task Task) (json.RawMessage, error) {
		mu.Lock()
		defer mu.Unlock()
		tries[task.Number]++
		starts = append(starts, fmt.Sprintf("%d.%d", task.Number, task.Attempt))
		if task.Number == 1 && tries[1] < 3 {
			return nil, fmt.Errorf("attempt %d failed", tries[1])
		}
		return nil, nil
	}))
	jf := JobFile{Workers: 1, QueueSize: 4, RetrySpec: RetrySpec{MaxAttempts: 3,
		Backoff: &BackoffSpec{Base: Duration(100 * time.Millisecond), Cap: Duration(200 * time.Millisecond)}},
		Tasks: repeat(3, "flaky", "")}
	if err := jf.Validate(reg); err != nil {
		t.Fatal(err)
	}
	job, err := db.CreateJob(context.Background(), jf.NewJob())
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	done, err := newJobController(db, Config{Registry: reg, OnEvent: rec.add}).Run(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != store.Succeeded {
		t.Fatalf("job %s", done.State)
	}
	// One worker: tasks 2 and 3 ran while task 1 waited out its backoff.
	if got := strings.Join(starts, " "); got != "1.1 2.1 3.1 1.2 1.3" {
		t.Errorf("runs in order %q, want 1.1 2.1 3.1 1.2 1.3", got)
	}
	checkCallbacks(t, rec.all(), 3)
	for _, e := range rec.all() {
		if e.Task != nil && e.Task.Number == 1 && e.Task.Attempts != 3 {
			t.Errorf("task 1's callback says %d attempts, want 3", e.Task.Attempts)
		}
	}
	attempts, err := db.Attempts(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range attempts {
		got = append(got, fmt.Sprintf("%d.%d:%s", a.Seq, a.Attempt, a.State))
		if a.Seq == 1 && a.Attempt == 2 {
			if gap := a.StartedAt.Sub(attempts[0].FinishedAt); gap < 50*time.Millisecond {
				t.Errorf("attempt 2 started %v after attempt 1, before its backoff (>= 50ms)", gap)
			}
		}
	}
	want := "1.1:failed 1.2:failed 1.3:succeeded 2.1:succeeded 3.1:succeeded"
	if strings.Join(got, " ") != want {
		t.Errorf("attempts %q, want %q", strings.Join(got, " "), want)
	}
}

func TestTaskTimeoutFailsTheAttempt(t *testing.T) {
	db := openDB(t)
	jf := JobFile{Workers: 1, QueueSize: 1, Tasks: []TaskSpec{{Kind: "sleep", Payload: json.RawMessage(`{"secs": 5}`),
		RetrySpec: RetrySpec{Timeout: Duration(50 * time.Millisecond)}}}}
	job, err := db.CreateJob(context.Background(), jf.NewJob())
	if err != nil {
		t.Fatal(err)
	}
	done, err := newJobController(db, Config{}).Run(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	tasks, _ := db.Tasks(context.Background(), job.ID)
	if done.Failed != 1 || tasks[0].Error != "timed out after 50ms" {
		t.Errorf("job %s, task error %q; want a timeout", done.State, tasks[0].Error)
	}
}

// TestDaemonStopsOnCorruptionFoundInBackground: a file too large for the
// check at open is checked once the daemon runs, and corruption stops it.
func TestDaemonStopsOnCorruptionFoundInBackground(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pcd.db")
	db, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	createJob(t, db, 2, 2, repeat(3000, "noop", "")...)
	db.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 2; i < len(b)/2+8192; i++ {
		b[i] = 0xA5
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err = sqlite.Open(context.Background(), path, sqlite.Options{FullCheckMax: 4096})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := OpenRunner(ctx, db, RunnerConfig{})
	if err != nil {
		t.Fatalf("open runner: %v", err)
	}
	defer r.Close()
	err = r.Run(ctx)
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("daemon returned %v, want ErrCorrupt", err)
	}
}

func TestRegisterRefusesADuplicate(t *testing.T) {
	reg := NewRegistry()
	mustPanic := func(what string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", what)
			}
		}()
		f()
	}
	mustPanic("registering a built-in name", func() { reg.Register("sleep", Noop{}) })
	reg.Register("mine", Noop{})
	mustPanic("registering a name twice", func() { reg.Register("mine", Fail{}) })
	mustPanic("replacing an unknown kind", func() { reg.Replace("other", Noop{}) })
	reg.Replace("mine", Fail{})
	if k, err := reg.Lookup("mine"); err != nil || k != (Fail{}) {
		t.Errorf("after Replace: %v, %v", k, err)
	}
}

// TestRetriedAttemptRunsOnce: while tasks fail and wait out short
// backoffs under load, no attempt of a task runs twice and no task runs
// more than max_attempts times. A due-task read that raced an attempt's
// commit once queued the attempt it had just seen committed, again.
func TestRetriedAttemptRunsOnce(t *testing.T) {
	db := openDB(t)
	var mu sync.Mutex
	runs := map[string]int{}
	perTask := map[int64]int{}
	reg := NewRegistry()
	reg.Register("every-third-fails", Func(func(_ context.Context, task Task) (json.RawMessage, error) {
		mu.Lock()
		runs[fmt.Sprintf("%d.%d", task.Number, task.Attempt)]++
		perTask[task.Number]++
		mu.Unlock()
		if task.Number%3 == 0 {
			return nil, errors.New("exit 1")
		}
		return nil, nil
	}))
	for round := range 3 {
		jf := JobFile{Workers: 20, QueueSize: 100, RetrySpec: RetrySpec{MaxAttempts: 3,
			Backoff: &BackoffSpec{Base: Duration(10 * time.Millisecond), Cap: Duration(50 * time.Millisecond)}},
			Tasks: repeat(300, "every-third-fails", "")}
		if err := jf.Validate(reg); err != nil {
			t.Fatal(err)
		}
		job, err := db.CreateJob(context.Background(), jf.NewJob())
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		clear(runs)
		clear(perTask)
		mu.Unlock()
		done, err := newJobController(db, Config{Registry: reg}).Run(context.Background(), job.ID)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if done.State != store.Failed || done.Done() != 300 {
			t.Fatalf("round %d: job %s at %d/300", round, done.State, done.Done())
		}
		mu.Lock()
		for run, n := range runs {
			if n > 1 {
				t.Errorf("round %d: attempt %s ran %d times", round, run, n)
			}
		}
		for n, c := range perTask {
			want := 1
			if n%3 == 0 {
				want = 3
			}
			if c != want {
				t.Errorf("round %d: task %d ran %d times, want %d", round, n, c, want)
			}
		}
		mu.Unlock()
	}
}
