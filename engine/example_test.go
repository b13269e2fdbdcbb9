package engine_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// Register a kind of your own, submit a job of it, and run the job to its
// job callback in this process.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pcd-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(ctx, filepath.Join(dir, "jobs.db"), sqlite.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	reg := engine.NewRegistry()
	reg.Register("greet", engine.Func(func(ctx context.Context, t engine.Task) (json.RawMessage, error) {
		var name string
		if err := json.Unmarshal(t.Payload, &name); err != nil {
			return nil, err
		}
		return json.Marshal("hello, " + name)
	}))
	job, err := engine.Submit(ctx, db, reg, engine.JobFile{Name: "greetings", Workers: 1, Tasks: []engine.TaskSpec{
		{Kind: "greet", Payload: json.RawMessage(`"Ada"`)},
		{Kind: "greet", Payload: json.RawMessage(`"Grace"`)},
	}})
	if err != nil {
		log.Fatal(err)
	}

	r, err := engine.OpenRunner(ctx, db, engine.RunnerConfig{
		Role: engine.RoleRun,
		Config: engine.Config{Registry: reg, OnEvent: func(e engine.Event) {
			// After each callback's record commits, in callback order.
			switch {
			case e.Task != nil:
				fmt.Printf("task %d %s: %s\n", e.Task.Number, e.Task.State, e.Task.Result)
			case e.Job != nil:
				fmt.Printf("job %s %s: %d of %d succeeded\n", e.Job.Name, e.Job.Outcome, e.Job.Succeeded, e.Job.Total)
			}
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	if _, err := r.RunJob(ctx, job.ID); err != nil {
		log.Fatal(err)
	}
	// Output:
	// task 1 succeeded: "hello, Ada"
	// task 2 succeeded: "hello, Grace"
	// job greetings succeeded: 2 of 2 succeeded
}

// A payload a kind refuses is refused at submit, with nothing written.
func ExampleSubmit() {
	ctx := context.Background()
	db, cleanup := exampleDB()
	defer cleanup()
	_, err := engine.Submit(ctx, db, nil, engine.JobFile{Tasks: []engine.TaskSpec{
		{Kind: "sleep", Payload: json.RawMessage(`{"secs": -1}`)},
	}})
	fmt.Println(err)
	jobs, _ := db.ListJobs(ctx, store.JobFilter{Limit: 10})
	fmt.Println(len(jobs), "jobs")
	// Output:
	// task 1: sleep: secs must not be negative, got -1
	// 0 jobs
}

// A daemon runner runs in one process; another process (here, a second
// handle on the same file) submits a job and wakes it. The submitter
// follows the job's callbacks with Watch, as pcd watch does.
func ExampleRunner_Run() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pcd-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "jobs.db")

	// The runner's process.
	runnerDB, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer runnerDB.Close()
	r, err := engine.OpenRunner(ctx, runnerDB, engine.RunnerConfig{Role: engine.RoleDaemon})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	stopped := make(chan error, 1)
	go func() { stopped <- r.Run(ctx) }()

	// The submitter's process.
	client, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	job, err := engine.Submit(ctx, client, nil, engine.JobFile{Name: "nightly", Workers: 1, Tasks: []engine.TaskSpec{
		{Kind: "sleep", Payload: json.RawMessage(`{"secs": 0.01}`)},
		{Kind: "noop"},
	}})
	if err != nil {
		log.Fatal(err)
	}
	err = engine.Watch(ctx, client, engine.WatchOptions{JobIDs: []int64{job.ID}, OnEvent: func(e engine.Event) error {
		if e.Task != nil {
			fmt.Printf("task %d (%s) %s\n", e.Task.Number, e.Task.Kind, e.Task.State)
		} else {
			fmt.Printf("job %s %s\n", e.Job.Name, e.Job.Outcome)
		}
		return nil
	}})
	if err != nil {
		log.Fatal(err)
	}

	if err := r.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	if err := <-stopped; err != nil {
		log.Fatal(err)
	}
	// Output:
	// task 1 (sleep) succeeded
	// task 2 (noop) succeeded
	// job nightly succeeded
}

// A runner stopped in the middle of a job (a hard stop, as when the
// process is killed: running tasks are cut short) leaves its progress in
// the database; the next runner resumes the job, and the tasks that
// finished do not run again.
func ExampleRunner_RunJob_resume() {
	ctx := context.Background()
	db, cleanup := exampleDB()
	defer cleanup()

	ran := map[string]int{}
	stopAt := make(chan struct{})
	reg := engine.NewRegistry()
	reg.Register("step", engine.Func(func(ctx context.Context, t engine.Task) (json.RawMessage, error) {
		var name string
		if err := json.Unmarshal(t.Payload, &name); err != nil {
			return nil, err
		}
		ran[name]++
		if name == "b" && ran[name] == 1 {
			close(stopAt) // the first time b runs, the process "dies"
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, nil
	}))
	job, err := engine.Submit(ctx, db, reg, engine.JobFile{Workers: 1, Tasks: []engine.TaskSpec{
		{Kind: "step", Payload: json.RawMessage(`"a"`)},
		{Kind: "step", Payload: json.RawMessage(`"b"`)},
		{Kind: "step", Payload: json.RawMessage(`"c"`)},
	}})
	if err != nil {
		log.Fatal(err)
	}
	run := func() (store.Job, error) {
		r, err := engine.OpenRunner(ctx, db, engine.RunnerConfig{Role: engine.RoleRun, Config: engine.Config{Registry: reg}})
		if err != nil {
			log.Fatal(err)
		}
		defer r.Close()
		finished := make(chan struct{})
		defer close(finished)
		go func() {
			select {
			case <-stopAt:
				hard, cancel := context.WithCancel(ctx)
				cancel()
				_ = r.Stop(hard)
			case <-finished:
			}
		}()
		return r.RunJob(ctx, job.ID)
	}
	first, err := run()
	fmt.Printf("first run: %v; %d of %d done\n", errors.Is(err, engine.ErrStopped), first.Done(), first.Total)
	stopAt = make(chan struct{}) // no stop this time
	second, err := run()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("second run: %s; a ran %d time(s), b %d, c %d\n", second.State, ran["a"], ran["b"], ran["c"])
	// Output:
	// first run: true; 1 of 3 done
	// second run: succeeded; a ran 1 time(s), b 2, c 1
}

// Subscribe follows every committed callback, in callback order, whoever
// runs the jobs; here, until the job's own callback arrives.
func ExampleSubscribe() {
	ctx := context.Background()
	db, cleanup := exampleDB()
	defer cleanup()
	job, err := engine.Submit(ctx, db, nil, engine.JobFile{Name: "two", Workers: 1, Tasks: []engine.TaskSpec{{Kind: "noop"}, {Kind: "noop"}}})
	if err != nil {
		log.Fatal(err)
	}
	r, err := engine.OpenRunner(ctx, db, engine.RunnerConfig{Role: engine.RoleRun})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	ran := make(chan error, 1)
	go func() {
		_, err := r.RunJob(ctx, job.ID)
		ran <- err
	}()

	var last int64
	done := errors.New("the job is done")
	err = engine.Subscribe(ctx, db, 0, func(e engine.Event) error {
		last = e.CallbackID // save it to resume from after a restart
		if e.Job != nil {
			fmt.Printf("job %s: %s\n", e.Job.Name, e.Job.Outcome)
			return done
		}
		fmt.Printf("task %d: %s\n", e.Task.Number, e.Task.State)
		return nil
	})
	if !errors.Is(err, done) {
		log.Fatal(err)
	}
	if err := <-ran; err != nil {
		log.Fatal(err)
	}
	fmt.Println("callbacks seen up to id", last)
	// Output:
	// task 1: succeeded
	// task 2: succeeded
	// job two: succeeded
	// callbacks seen up to id 3
}

// Resize is the payload of a typed kind: KindOf decodes it, strictly, and
// calls its Validate at submit.
type Resize struct {
	Image string `json:"image"`
	Width int    `json:"width"`
}

func (r Resize) Validate() error {
	if r.Width <= 0 {
		return fmt.Errorf("width must be positive, got %d", r.Width)
	}
	return nil
}

// A kind with typed arguments and result: bad arguments are refused at
// submit, good ones reach the function decoded.
func ExampleKindOf() {
	ctx := context.Background()
	db, cleanup := exampleDB()
	defer cleanup()
	reg := engine.NewRegistry()
	reg.Register("resize", engine.KindOf(func(ctx context.Context, r Resize) (string, error) {
		return fmt.Sprintf("%s at %dpx", r.Image, r.Width), nil
	}))

	bad, _ := engine.TaskOf("resize", Resize{Image: "a.png", Width: 0})
	_, err := engine.Submit(ctx, db, reg, engine.JobFile{Tasks: []engine.TaskSpec{bad}})
	fmt.Println(err)
	_, err = engine.Submit(ctx, db, reg, engine.JobFile{Tasks: []engine.TaskSpec{{Kind: "resize", Payload: json.RawMessage(`{"img": "a.png"}`)}}})
	fmt.Println(err)

	good, _ := engine.TaskOf("resize", Resize{Image: "a.png", Width: 640})
	job, err := engine.Submit(ctx, db, reg, engine.JobFile{Workers: 1, Tasks: []engine.TaskSpec{good}})
	if err != nil {
		log.Fatal(err)
	}
	r, err := engine.OpenRunner(ctx, db, engine.RunnerConfig{Role: engine.RoleRun, Config: engine.Config{Registry: reg,
		OnEvent: func(e engine.Event) {
			if e.Task != nil {
				fmt.Printf("task %d %s: %s\n", e.Task.Number, e.Task.State, e.Task.Result)
			}
		}}})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	if _, err := r.RunJob(ctx, job.ID); err != nil {
		log.Fatal(err)
	}
	// Output:
	// task 1: resize: width must be positive, got 0
	// task 1: resize: payload does not decode as engine_test.Resize: unknown field "img"
	// task 1 succeeded: "a.png at 640px"
}

// A program that keeps its own rows in the same SQLite file submits a job
// in its own transaction: the job commits with the order that needs it,
// or not at all.
func ExampleSubmitTx() {
	ctx := context.Background()
	db, cleanup := exampleDB()
	defer cleanup()

	// The program's own handle on the file, and its own table.
	app, err := sql.Open("sqlite", db.Path()+"?_pragma=busy_timeout(5000)")
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	if _, err := app.ExecContext(ctx, "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)"); err != nil {
		log.Fatal(err)
	}
	order := func(item string, commit bool) {
		tx, err := app.BeginTx(ctx, nil)
		if err != nil {
			log.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (item) VALUES (?)", item); err != nil {
			log.Fatal(err)
		}
		ship := engine.JobFile{Name: "ship " + item, Tasks: []engine.TaskSpec{{Kind: "noop"}}}
		if _, err := engine.SubmitTx(ctx, db, tx, nil, ship); err != nil {
			log.Fatal(err)
		}
		if commit {
			if err := tx.Commit(); err != nil {
				log.Fatal(err)
			}
			_ = db.Wake() // the runner would look within a second anyway
		}
	}
	order("kettle", true)
	order("teapot", false) // rolled back: no order, no job

	jobs, err := db.ListJobs(ctx, store.JobFilter{Limit: 10})
	if err != nil {
		log.Fatal(err)
	}
	for _, j := range jobs {
		fmt.Println(j.Name, j.State)
	}
	// Output:
	// ship kettle pending
}

// exampleDB opens a database in a new temporary directory, as Example
// does; cleanup closes and removes it.
func exampleDB() (*sqlite.DB, func()) {
	dir, err := os.MkdirTemp("", "pcd-example-")
	if err != nil {
		log.Fatal(err)
	}
	db, err := sqlite.Open(context.Background(), filepath.Join(dir, "jobs.db"), sqlite.Options{})
	if err != nil {
		os.RemoveAll(dir)
		log.Fatal(err)
	}
	return db, func() {
		db.Close()
		os.RemoveAll(dir)
	}
}
