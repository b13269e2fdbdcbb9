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
	db, cleanup := exampleDB()
	defer cleanup()

	reg := engine.NewRegistry()
	reg.Register("greet", engine.Func(func(ctx context.Context, t engine.Task) (json.RawMessage, error) {
		var name string
		if err := json.Unmarshal(t.Payload, &name); err != nil {
			return nil, err
		}
		return json.Marshal("hello, " + name)
	}))
	client := engine.NewClient(db, engine.RunnerConfig{
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
	defer client.Close()
	job, err := client.Submit(ctx, engine.JobFile{Name: "greetings", Workers: 1, Tasks: []engine.TaskSpec{
		{Kind: "greet", Payload: json.RawMessage(`"Ada"`)},
		{Kind: "greet", Payload: json.RawMessage(`"Grace"`)},
	}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.RunJob(ctx, job.UUID); err != nil {
		log.Fatal(err)
	}
	// Output:
	// task 1 succeeded: "hello, Ada"
	// task 2 succeeded: "hello, Grace"
	// job greetings succeeded: 2 of 2 succeeded
}

// A payload a kind refuses is refused at submit, with nothing written.
func ExampleClient_Submit() {
	ctx := context.Background()
	db, cleanup := exampleDB()
	defer cleanup()
	client := engine.NewClient(db, engine.RunnerConfig{})
	_, err := client.Submit(ctx, engine.JobFile{Tasks: []engine.TaskSpec{
		{Kind: "sleep", Payload: json.RawMessage(`{"secs": -1}`)},
	}})
	fmt.Println(err)
	jobs, _ := client.Jobs(ctx, store.JobFilter{Limit: 10})
	fmt.Println(len(jobs), "jobs")
	// Output:
	// task 1: sleep: secs must not be negative, got -1
	// 0 jobs
}

// A daemon client runs every job of the database, in one process, until
// stopped; another process (here, a second handle on the same file)
// submits a job, which wakes it, and follows the job's callbacks with
// Watch, as pcd watch does.
func ExampleClient_Run() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pcd-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "jobs.db")

	// The daemon's process.
	runnerDB, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer runnerDB.Close()
	daemon := engine.NewClient(runnerDB, engine.RunnerConfig{Role: engine.RoleDaemon})
	defer daemon.Close()
	if err := daemon.Open(ctx); err != nil { // the runner lock: one daemon per file
		log.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- daemon.Run(ctx) }()

	// The submitter's process.
	submitterDB, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer submitterDB.Close()
	submitter := engine.NewClient(submitterDB, engine.RunnerConfig{})
	job, err := submitter.Submit(ctx, engine.JobFile{Name: "nightly", Workers: 1, Tasks: []engine.TaskSpec{
		{Kind: "sleep", Payload: json.RawMessage(`{"secs": 0.01}`)},
		{Kind: "noop"},
	}})
	if err != nil {
		log.Fatal(err)
	}
	err = submitter.Watch(ctx, engine.WatchOptions{Jobs: []string{job.UUID}, OnEvent: func(e engine.Event) error {
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

	if err := daemon.Stop(ctx); err != nil {
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
func ExampleClient_RunJob_resume() {
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
	cfg := engine.RunnerConfig{Role: engine.RoleRun, Config: engine.Config{Registry: reg}}
	job, err := engine.NewClient(db, cfg).Submit(ctx, engine.JobFile{Workers: 1, Tasks: []engine.TaskSpec{
		{Kind: "step", Payload: json.RawMessage(`"a"`)},
		{Kind: "step", Payload: json.RawMessage(`"b"`)},
		{Kind: "step", Payload: json.RawMessage(`"c"`)},
	}})
	if err != nil {
		log.Fatal(err)
	}
	run := func() (store.Job, error) {
		client := engine.NewClient(db, cfg) // a new process
		defer client.Close()
		finished := make(chan struct{})
		defer close(finished)
		go func() {
			select {
			case <-stopAt:
				hard, cancel := context.WithCancel(ctx)
				cancel()
				_ = client.Stop(hard)
			case <-finished:
			}
		}()
		return client.RunJob(ctx, job.UUID)
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

// Cancel stops a running job: it returns once the runner has stopped the
// job's tasks, so no task of it starts after. The job's callbacks say
// which tasks were cancelled.
func ExampleClient_Cancel() {
	ctx := context.Background()
	db, cleanup := exampleDB()
	defer cleanup()
	started := make(chan struct{}, 10)
	reg := engine.NewRegistry()
	reg.Register("wait", engine.Func(func(ctx context.Context, t engine.Task) (json.RawMessage, error) {
		started <- struct{}{}
		<-ctx.Done() // runs until cancelled
		return nil, ctx.Err()
	}))
	client := engine.NewClient(db, engine.RunnerConfig{Config: engine.Config{Registry: reg}})
	defer client.Close()
	if err := client.Start(ctx); err != nil { // a daemon, in the background
		log.Fatal(err)
	}
	job, err := client.Submit(ctx, engine.JobFile{Name: "long", Workers: 2, Tasks: []engine.TaskSpec{
		{Kind: "wait"}, {Kind: "wait"}, {Kind: "wait"}, {Kind: "wait"}, {Kind: "wait"},
	}})
	if err != nil {
		log.Fatal(err)
	}
	<-started
	<-started // two workers: two tasks run
	done, err := client.Cancel(ctx, job.UUID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("job %s: %d of %d cancelled, %d tasks ever started\n", done.State, done.Cancelled, done.Total, len(started)+2)
	if err := client.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// job cancelled: 5 of 5 cancelled, 2 tasks ever started
}

// Subscribe follows every committed callback, in callback order, whoever
// runs the jobs; here, until the job's own callback arrives.
func ExampleClient_Subscribe() {
	ctx := context.Background()
	db, cleanup := exampleDB()
	defer cleanup()
	client := engine.NewClient(db, engine.RunnerConfig{Role: engine.RoleRun})
	defer client.Close()
	job, err := client.Submit(ctx, engine.JobFile{Name: "two", Workers: 1, Tasks: []engine.TaskSpec{{Kind: "noop"}, {Kind: "noop"}}})
	if err != nil {
		log.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() {
		_, err := client.RunJob(ctx, job.UUID)
		ran <- err
	}()

	var last int64
	done := errors.New("the job is done")
	err = client.Subscribe(ctx, 0, func(e engine.Event) error {
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
	client := engine.NewClient(db, engine.RunnerConfig{Role: engine.RoleRun, Config: engine.Config{Registry: reg,
		OnEvent: func(e engine.Event) {
			if e.Task != nil {
				fmt.Printf("task %d %s: %s\n", e.Task.Number, e.Task.State, e.Task.Result)
			}
		}}})
	defer client.Close()

	bad, _ := engine.TaskOf("resize", Resize{Image: "a.png", Width: 0})
	_, err := client.Submit(ctx, engine.JobFile{Tasks: []engine.TaskSpec{bad}})
	fmt.Println(err)
	_, err = client.Submit(ctx, engine.JobFile{Tasks: []engine.TaskSpec{{Kind: "resize", Payload: json.RawMessage(`{"img": "a.png"}`)}}})
	fmt.Println(err)

	good, _ := engine.TaskOf("resize", Resize{Image: "a.png", Width: 640})
	job, err := client.Submit(ctx, engine.JobFile{Workers: 1, Tasks: []engine.TaskSpec{good}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.RunJob(ctx, job.UUID); err != nil {
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
func ExampleClient_SubmitTx() {
	ctx := context.Background()
	db, cleanup := exampleDB()
	defer cleanup()
	client := engine.NewClient(db, engine.RunnerConfig{})

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
		if _, err := client.SubmitTx(ctx, tx, ship); err != nil {
			log.Fatal(err)
		}
		if commit {
			if err := tx.Commit(); err != nil {
				log.Fatal(err)
			}
		}
	}
	order("kettle", true)
	order("teapot", false) // rolled back: no order, no job

	jobs, err := client.Jobs(ctx, store.JobFilter{Limit: 10})
	if err != nil {
		log.Fatal(err)
	}
	for _, j := range jobs {
		fmt.Println(j.Name, j.State)
	}
	// Output:
	// ship kettle pending
}

// exampleDB opens a database in a new temporary directory; cleanup
// closes and removes it.
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
