package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/internal/pgtest"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/postgres"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// A program's own kind shares the database with pcd daemon: the daemon
// runs the jobs it knows, and leaves the program's job pending, not
// failed, with the reason in pcd status and pcd tasks; pcd run --resume
// refuses it and changes nothing; the program's own runner then runs it.
func TestProgramKindsWaitForTheirRunner(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "app.db")
		programKindsWait(t, db, func() store.Store {
			s, err := sqlite.Open(context.Background(), db, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, func() *proc { return startDaemon(t, db) })
	})
	t.Run("postgres", func(t *testing.T) {
		db := pgtest.URL(t)
		programKindsWait(t, db, func() store.Store {
			s, err := postgres.Open(context.Background(), db, postgres.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, func() *proc { return startPGDaemon(t, db) })
	})
}

func programKindsWait(t *testing.T, db string, open func() store.Store, daemon func() *proc) {
	ctx := context.Background()
	reg := engine.NewRegistry()
	resized := 0
	reg.Register("resize", engine.Func(func(ctx context.Context, t engine.Task) (json.RawMessage, error) {
		resized++
		return json.RawMessage(`"ok"`), nil
	}))
	st := open()
	app := engine.NewClient(st, engine.RunnerConfig{Role: engine.RoleRun, Config: engine.Config{Registry: reg}})
	job, err := app.Submit(ctx, engine.JobFile{Name: "thumbs", Workers: 2, Tasks: []engine.TaskSpec{
		{Kind: "resize", Payload: json.RawMessage(`{}`)}, {Kind: "noop"}, {Kind: "resize", Payload: json.RawMessage(`{}`)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	d := daemon()
	r := pcd(t, db, "submit", "--wait", "--", "true")
	if r.code != 0 {
		t.Fatalf("a job of pcd's own kinds beside the program's: exit %d, %s", r.code, r.stderr)
	}
	// The daemon says why it leaves the program's job.
	deadline := time.Now().Add(30 * time.Second)
	var status struct {
		Waiting []struct {
			ID      string `json:"job_id"`
			Waiting string `json:"waiting"`
		} `json:"waiting"`
	}
	for {
		r := pcd(t, db, "status", "--json")
		if err := json.Unmarshal([]byte(r.stdout), &status); err != nil {
			t.Fatalf("pcd status --json: %v: %s %s", err, r.stdout, r.stderr)
		}
		if len(status.Waiting) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no waiting job in pcd status after 30s: %s; daemon:\n%s", r.stdout, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	const reason = `waits for a runner that knows kind "resize"`
	if w := status.Waiting[0]; w.ID != job.UUID || w.Waiting != reason {
		t.Fatalf("pcd status shows %+v waiting, want job %s: %s", w, job.UUID, reason)
	}
	if r := pcd(t, db, "status"); !strings.Contains(r.stdout, job.UUID[:8]+" (thumbs) "+reason) {
		t.Errorf("pcd status does not say why the job waits:\n%s", r.stdout)
	}
	r = pcd(t, db, "tasks", job.UUID[:8])
	if !strings.Contains(r.stderr, reason) || strings.Count(r.stdout, "pending") != 3 {
		t.Errorf("pcd tasks: want 3 pending tasks and the reason; stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	if r := pcd(t, db, "run", "--resume", job.UUID[:8]); r.code == 0 || !strings.Contains(r.stderr, `kind "resize", which this runner does not know`) {
		t.Errorf("pcd run --resume of the program's job: exit %d, %s", r.code, r.stderr)
	}
	stopDaemon(t, d)
	if strings.Contains(d.stderr.String(), "unknown task kind") {
		t.Errorf("the daemon failed a task for its kind:\n%s", d.stderr)
	}

	st = open()
	defer st.Close()
	app = engine.NewClient(st, engine.RunnerConfig{Role: engine.RoleRun, Config: engine.Config{Registry: reg}})
	defer app.Close()
	left, err := app.Job(ctx, job.UUID)
	if err != nil || left.State != store.Pending || left.Done() != 0 {
		t.Fatalf("the program's job after pcd: %+v, %v; want pending, nothing done", left, err)
	}
	done, err := app.RunJob(ctx, job.UUID)
	if err != nil || done.State != store.Succeeded || resized != 2 {
		t.Fatalf("the program's runner: %+v, %v, %d resized; want succeeded, 2 resized", done, err, resized)
	}
	// A runner that does not know a kind refuses the job at once.
	other := engine.NewClient(st, engine.RunnerConfig{Role: engine.RoleRun})
	defer other.Close()
	again, err := app.Submit(ctx, engine.JobFile{Tasks: []engine.TaskSpec{{Kind: "resize", Payload: json.RawMessage(`{}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	app.Close()
	if _, err := other.RunJob(ctx, again.UUID); !errors.Is(err, engine.ErrUnknownKind) {
		t.Fatalf("RunJob of a job of an unknown kind: %v, want ErrUnknownKind", err)
	}
}
