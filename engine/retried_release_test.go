package engine

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pcd-dev/pcd/internal/pgtest"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/postgres"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// A job cancelled while no runner ran it, then retried: the run of its
// new round releases the cancel's callbacks first, then its own, and
// the job counts as released on both stores.
func TestRetriedJobReleasesTheCancelsCallbacks(t *testing.T) {
	ctx := context.Background()
	for name, open := range map[string]func(t *testing.T) store.Store{
		"sqlite": func(t *testing.T) store.Store {
			db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "pcd.db"), sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return db
		},
		"postgres": func(t *testing.T) store.Store {
			db, err := postgres.Open(ctx, pgtest.URL(t), postgres.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return db
		},
	} {
		t.Run(name, func(t *testing.T) {
			db := open(t)
			defer db.Close()
			var seen []string
			client := NewClient(db, RunnerConfig{Role: RoleRun, Config: Config{OnEvent: func(e Event) {
				if e.Task != nil {
					seen = append(seen, string(e.Task.State))
				} else {
					seen = append(seen, "job "+string(e.Job.Outcome))
				}
			}}})
			defer client.Close()
			job, err := client.Submit(ctx, JobFile{Workers: 1, Tasks: []TaskSpec{{Kind: "noop"}, {Kind: "noop"}}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.Cancel(ctx, job.UUID); err != nil {
				t.Fatal(err)
			}
			if _, err := client.Retry(ctx, job.UUID); err != nil {
				t.Fatal(err)
			}
			done, err := client.RunJob(ctx, job.UUID)
			if err != nil || done.State != store.Succeeded {
				t.Fatalf("the retried run: %+v, %v", done, err)
			}
			want := "cancelled cancelled job cancelled succeeded succeeded job succeeded"
			if got := strings.Join(seen, " "); got != want {
				t.Errorf("released %q, want %q", got, want)
			}
			if ok, err := db.JobReleased(ctx, done.ID); err != nil || !ok {
				t.Errorf("JobReleased: %v, %v; want every callback released", ok, err)
			}
		})
	}
}
