package jobfile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// writeTasks writes a job file of n noop tasks with the job's settings
// after its tasks, where a decoder that stops at "tasks" would miss them.
func writeTasks(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"name": "big", "tasks": [`)
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		b.WriteString(`{"kind": "noop"}`)
	}
	b.WriteString(`], "workers": 3, "max_attempts": 2}`)
	path := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadStreamsItsTasks(t *testing.T) {
	const n = 3*fileBatch + 17
	path := writeTasks(t, n)
	jf, err := Read(path, testKinds{})
	if err != nil {
		t.Fatal(err)
	}
	if len(jf.Tasks) != 0 || jf.count != n {
		t.Fatalf("%d tasks held, %d counted; want none held and %d counted", len(jf.Tasks), jf.count, n)
	}
	db := openDB(t)
	job, err := db.CreateJob(context.Background(), jf.NewJob())
	if err != nil {
		t.Fatal(err)
	}
	if job.Total != n || job.Workers != 3 || job.Name != "big" {
		t.Errorf("job: total %d, workers %d, name %q; want %d, 3, big", job.Total, job.Workers, job.Name, n)
	}
	tasks, err := db.PendingTasks(context.Background(), job.ID, 0, n+1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != n || tasks[n-1].Seq != n {
		t.Fatalf("%d tasks stored, want %d", len(tasks), n)
	}
	for _, task := range []int{0, fileBatch, n - 1} {
		if got := tasks[task].Retry.MaxAttempts; got != 2 {
			t.Errorf("task %d: max_attempts %d, want the job's 2 (given after the tasks)", task+1, got)
		}
	}
}

// TestJobFileChangedWhileReadChangesNothing: the tasks are read twice; if
// the file changes in between, the job is not created at all.
func TestJobFileChangedWhileReadChangesNothing(t *testing.T) {
	path := writeTasks(t, fileBatch+10)
	jf, err := Read(path, testKinds{})
	if err != nil {
		t.Fatal(err)
	}
	shorter := writeTasks(t, fileBatch+9)
	if err := os.Rename(shorter, path); err != nil {
		t.Fatal(err)
	}
	db := openDB(t)
	_, err = db.CreateJob(context.Background(), jf.NewJob())
	if err == nil || !strings.Contains(err.Error(), "changed while it was read") {
		t.Fatalf("create from a changed file: %v", err)
	}
	if jobs, _ := db.ListJobs(context.Background(), store.JobFilter{Limit: 10}); len(jobs) != 0 {
		t.Errorf("%d jobs created from a changed file", len(jobs))
	}
}

// testKinds knows the kinds noop, which takes no payload, and echo, which
// takes any.
type testKinds struct{ max int }

func (k testKinds) Validate(kind string, payload json.RawMessage) error {
	switch kind {
	case "noop":
		if len(payload) > 0 && string(payload) != "null" {
			return errors.New("takes no payload")
		}
		return nil
	case "echo":
		return nil
	}
	return fmt.Errorf("unknown task kind %q", kind)
}

func (k testKinds) MaxPayload() int { return k.max }

func openDB(t *testing.T) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
