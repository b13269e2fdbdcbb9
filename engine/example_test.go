package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
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
	db, err := store.Open(ctx, filepath.Join(dir, "jobs.db"), store.Options{})
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
	dir, err := os.MkdirTemp("", "pcd-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := store.Open(ctx, filepath.Join(dir, "jobs.db"), store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	_, err = engine.Submit(ctx, db, nil, engine.JobFile{Tasks: []engine.TaskSpec{
		{Kind: "sleep", Payload: json.RawMessage(`{"secs": -1}`)},
	}})
	fmt.Println(err)
	jobs, _ := db.ListJobs(ctx, "", 10)
	fmt.Println(len(jobs), "jobs")
	// Output:
	// task 1: sleep: secs must not be negative, got -1
	// 0 jobs
}
