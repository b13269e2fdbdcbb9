package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/internal/pgtest"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/postgres"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// TestDifferential runs random sequences of operations (submit, run part
// of a job, fail, kill, halt, cancel, retry, pause, resume, prune) on a
// SQLite and a PostgreSQL store side by side, through the Client, and
// after each step compares what a user can see: each job's state and
// counts, each task's state, attempts and error, the callbacks in order,
// and how each operation ended (its exit code's class). Any difference
// is a rule the two stores keep differently.
//
// PCD_DIFF_SEED=N replays one sequence; PCD_DIFF_RUNS sets how many run.
func TestDifferential(t *testing.T) {
	runs := 12
	if n, err := strconv.Atoi(os.Getenv("PCD_DIFF_RUNS")); err == nil && n > 0 {
		runs = n
	}
	seeds := make([]uint64, runs)
	for i := range seeds {
		seeds[i] = rand.Uint64()
	}
	if s, err := strconv.ParseUint(os.Getenv("PCD_DIFF_SEED"), 10, 64); err == nil {
		seeds = []uint64{s}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			differential(t, seed, 30)
		})
	}
}

func differential(t *testing.T, seed uint64, steps int) {
	ctx := context.Background()
	lite, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	pg, err := postgres.Open(ctx, pgtest.URL(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	worlds := []*world{newWorld("sqlite", lite), newWorld("postgres", pg)}
	rng := rand.New(rand.NewPCG(seed, 0))
	var log []string
	for step := range steps {
		op := randomOp(rng, len(worlds[0].jobs))
		log = append(log, op.String())
		t.Logf("step %d: %s", step, op)
		var ends []string
		for _, w := range worlds {
			ends = append(ends, w.apply(t, op))
		}
		if ends[0] != ends[1] {
			t.Fatalf("seed %d, step %d (%s) ended %q on sqlite, %q on postgres; steps:\n%s",
				seed, step, op, ends[0], ends[1], strings.Join(log, "\n"))
		}
		a, b := worlds[0].view(t), worlds[1].view(t)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("seed %d, step %d (%s): the stores differ:\n%s\nsteps:\n%s",
				seed, step, op, diffViews(a, b), strings.Join(log, "\n"))
		}
	}
}

// op is one operation of a sequence. Job is an index into the jobs
// submitted so far (it may name one that was pruned).
type op struct {
	name string
	job  int
	// submit: each task's failures before it succeeds (0: it succeeds),
	// and the job's --halt.
	fails []int
	halt  string
	// run: how many tasks start before the run stops (or, with kill, the
	// task that starts after them is killed first, requeued or not).
	runs    int
	kill    bool
	requeue bool
}

func (o op) String() string {
	switch o.name {
	case "submit":
		return fmt.Sprintf("submit fails=%v halt=%q", o.fails, o.halt)
	case "run":
		return fmt.Sprintf("run job %d: %d tasks, kill=%v requeue=%v", o.job, o.runs, o.kill, o.requeue)
	}
	return fmt.Sprintf("%s job %d", o.name, o.job)
}

func randomOp(rng *rand.Rand, jobs int) op {
	if jobs == 0 || rng.IntN(5) == 0 {
		o := op{name: "submit", halt: []string{"", "", "now,fail=1", "soon,fail=1"}[rng.IntN(4)]}
		for range 1 + rng.IntN(5) {
			o.fails = append(o.fails, []int{0, 0, 0, 1, 2}[rng.IntN(5)])
		}
		return o
	}
	o := op{job: rng.IntN(jobs)}
	switch n := rng.IntN(20); {
	case n < 8:
		o.name, o.runs = "run", rng.IntN(5)
		o.kill = rng.IntN(4) == 0
		o.requeue = o.kill && rng.IntN(2) == 0
	case n < 10:
		o.name = "cancel"
	case n < 13:
		o.name = "retry"
	case n < 15:
		o.name = "pause"
	case n < 17:
		o.name = "resume"
	case n < 18:
		o.name = "prune"
	default:
		o.name = "fail" // run the job to its end
		o.runs = 1 << 20
	}
	return o
}

// world is one store and the jobs submitted to it, by index.
type world struct {
	name   string
	st     store.Store
	reg    *engine.Registry
	client *engine.Client
	jobs   []string         // uuids
	index  map[int64]int    // job row id to index
	limit  atomic.Int64     // tasks a run may start; the next one holds
	starts atomic.Int64     // tasks started in this run
	held   chan engine.Task // a task holding, past the limit
}

func newWorld(name string, st store.Store) *world {
	w := &world{name: name, st: st, reg: engine.NewRegistry(), index: map[int64]int{}, held: make(chan engine.Task, 4)}
	// step fails while its attempt is at most the payload's count; a
	// task that starts past the run's limit holds until it is stopped.
	w.reg.Register("step", engine.Func(func(ctx context.Context, t engine.Task) (json.RawMessage, error) {
		if w.starts.Add(1) > w.limit.Load() {
			w.held <- t
			<-ctx.Done()
			return nil, context.Cause(ctx)
		}
		var fails int
		if err := json.Unmarshal(t.Payload, &fails); err != nil {
			return nil, err
		}
		if t.Attempt <= fails {
			return nil, fmt.Errorf("attempt %d fails", t.Attempt)
		}
		return json.RawMessage(strconv.Itoa(t.Attempt)), nil
	}))
	w.client = engine.NewClient(st, engine.RunnerConfig{Config: engine.Config{Registry: w.reg}})
	return w
}

// apply runs o, and says how it ended: its exit code's class.
func (w *world) apply(t *testing.T, o op) string {
	ctx := context.Background()
	if o.name == "submit" {
		jf := engine.JobFile{Name: fmt.Sprint("job", len(w.jobs)), Workers: 1, Schedule: engine.Schedule{Halt: o.halt}}
		for _, f := range o.fails {
			jf.Tasks = append(jf.Tasks, engine.TaskSpec{Kind: "step", Payload: json.RawMessage(strconv.Itoa(f))})
		}
		job, err := w.client.Submit(ctx, jf)
		if err == nil {
			w.index[job.ID] = len(w.jobs)
			w.jobs = append(w.jobs, job.UUID)
		}
		return endOf(err)
	}
	id := w.jobs[o.job]
	var err error
	switch o.name {
	case "run", "fail":
		err = w.run(t, id, o)
	case "cancel":
		_, err = w.client.Cancel(ctx, id)
	case "retry":
		_, err = w.client.Retry(ctx, id)
	case "pause":
		_, err = w.client.Pause(ctx, id)
	case "resume":
		_, err = w.client.Resume(ctx, id)
	case "prune":
		var res engine.PruneResult
		res, err = w.client.Prune(ctx, time.Now().Add(time.Hour), false, false)
		if err == nil {
			return fmt.Sprintf("pruned %d, kept %d", res.Jobs, res.Kept)
		}
	}
	return endOf(err)
}

// run runs a job with a runner of its own until o.runs tasks have started
// and the next one holds; with o.kill, that one is killed and the run
// goes on to the next that holds. The run is then stopped hard: the task
// holding is interrupted.
func (w *world) run(t *testing.T, id string, o op) error {
	ctx := context.Background()
	for len(w.held) > 0 {
		<-w.held // held in a run that ended first
	}
	w.limit.Store(int64(o.runs))
	w.starts.Store(0)
	r := engine.NewClient(w.st, engine.RunnerConfig{Role: engine.RoleRun, Config: engine.Config{Registry: w.reg}})
	defer r.Close()
	ran := make(chan error, 1)
	go func() {
		_, err := r.RunJob(ctx, id)
		ran <- err
	}()
	killed := false
	for {
		select {
		case err := <-ran:
			return err
		case held := <-w.held:
			if o.kill && !killed {
				killed = true
				kill, cancel := context.WithTimeout(ctx, time.Minute)
				_, err := r.Kill(kill, held.ID, o.requeue)
				cancel()
				if err != nil {
					tk, _ := r.Task(ctx, held.ID)
					t.Fatalf("%s: kill task %d: %v; the task: %+v", w.name, held.Number, err, tk)
				}
				continue
			}
			stopped, cancel := context.WithCancel(ctx)
			cancel()
			if err := r.Stop(stopped); err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: stop: %v", w.name, err)
			}
		}
	}
}

// endOf is how an operation ended, as its exit code tells it.
func endOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, engine.ErrStopped):
		return "stopped"
	case errors.Is(err, store.ErrConflict):
		return "conflict"
	case errors.Is(err, store.ErrNotFound):
		return "not found"
	case errors.Is(err, engine.ErrBadJob):
		return "bad job"
	}
	return "error: " + err.Error()
}

// view is what a user sees of a world.
type view struct {
	Jobs      []string
	Tasks     []string
	Callbacks []string
}

func (w *world) view(t *testing.T) view {
	ctx := context.Background()
	var v view
	for i, id := range w.jobs {
		j, err := w.client.Job(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			v.Jobs = append(v.Jobs, fmt.Sprintf("job %d: gone", i))
			continue
		}
		if err != nil {
			t.Fatalf("%s: job %d: %v", w.name, i, err)
		}
		v.Jobs = append(v.Jobs, fmt.Sprintf("job %d: %s round %d, %d/%d done (%d ok, %d failed, %d cancelled), paused %v, halting %q",
			i, j.State, j.Round, j.Done(), j.Total, j.Succeeded, j.Failed, j.Cancelled, j.Paused && !j.Finished(), j.Halting))
		tasks, err := w.client.Tasks(ctx, id, engine.TaskFilter{})
		if err != nil {
			t.Fatalf("%s: tasks of job %d: %v", w.name, i, err)
		}
		for _, tk := range tasks {
			v.Tasks = append(v.Tasks, fmt.Sprintf("job %d task %d: %s, %d attempts, %d interrupts, error %q",
				i, tk.Seq, tk.State, tk.Attempts, tk.Interrupts, tk.Error))
		}
	}
	cbs, err := w.client.Callbacks(ctx, 0, nil, 1<<20)
	if err != nil {
		t.Fatalf("%s: callbacks: %v", w.name, err)
	}
	for _, cb := range cbs {
		ev, err := engine.EventFromCallback(cb)
		if err != nil {
			t.Fatalf("%s: callback %d: %v", w.name, cb.ID, err)
		}
		i := w.index[cb.JobID]
		if ev.Task != nil {
			v.Callbacks = append(v.Callbacks, fmt.Sprintf("job %d round %d task %d %s (%d attempts) %q",
				i, cb.Round, ev.Task.Number, ev.Task.State, ev.Task.Attempts, ev.Task.Error))
		} else {
			v.Callbacks = append(v.Callbacks, fmt.Sprintf("job %d round %d %s: %d ok, %d failed, %d cancelled of %d",
				i, cb.Round, ev.Job.Outcome, ev.Job.Succeeded, ev.Job.Failed, ev.Job.Cancelled, ev.Job.Total))
		}
	}
	return v
}

// diffViews lists the lines where two views differ.
func diffViews(a, b view) string {
	var out []string
	cmp := func(what string, x, y []string) {
		for i := range max(len(x), len(y)) {
			var p, q string
			if i < len(x) {
				p = x[i]
			}
			if i < len(y) {
				q = y[i]
			}
			if p != q {
				out = append(out, fmt.Sprintf("%s %d:\n  sqlite:   %s\n  postgres: %s", what, i, p, q))
			}
		}
	}
	cmp("job", a.Jobs, b.Jobs)
	cmp("task", a.Tasks, b.Tasks)
	cmp("callback", a.Callbacks, b.Callbacks)
	return strings.Join(out, "\n")
}
