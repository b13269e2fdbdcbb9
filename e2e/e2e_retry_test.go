package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/internal/pgtest"
)

// retryJob writes the job that found double runs and a deadlock: 300
// commands, every third of which fails, with 3 attempts 10-50 ms apart,
// 20 workers. Each command logs its run (logRun).
func retryJob(t *testing.T, dir string) string {
	t.Helper()
	tasks := make([]string, 300)
	for i := range tasks {
		script := logRun(dir)
		if (i+1)%3 == 0 {
			script += "; exit 1"
		}
		tasks[i] = fmt.Sprintf(`{"kind":"exec","payload":{"argv":["sh","-c",%q]},"max_attempts":3,"backoff":{"base":"10ms","cap":"50ms"}}`, script)
	}
	path := filepath.Join(dir, "retry.json")
	if err := os.WriteFile(path, []byte(`{"workers":20,"tasks":[`+strings.Join(tasks, ",")+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Retried attempts run once each, with pcd run and with a daemon, on both
// stores: with no kill, every task runs at most max_attempts times, and no
// attempt twice. (A due-task read raced an attempt's commit and queued
// the same attempt again; on PostgreSQL the due-task claim and the group
// commit deadlocked.)
func TestRetriesRunEachAttemptOnce(t *testing.T) {
	for _, store := range bothStores {
		t.Run(store.name, func(t *testing.T) {
			dir := t.TempDir()
			db := store.db(t)
			job := retryJob(t, dir)
			if r := pcd(t, db, "run", job); r.code != 1 || !strings.Contains(r.stderr, "100 of 300 tasks failed") {
				t.Fatalf("pcd run exit %d, want 1 with 100 of 300 failed:\n%s", r.code, tail(r.stderr, 2000))
			}
			d := controlDaemon(t, db)
			if r := pcd(t, db, "submit", job); r.code != 0 {
				t.Fatalf("submit: exit %d: %s", r.code, r.stderr)
			}
			for deadline := time.Now().Add(2 * time.Minute); queryDB(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NULL") > 0; {
				if time.Now().After(deadline) {
					t.Fatalf("the daemon's jobs are unfinished after 2 minutes:\n%s", tail(d.stderr.String(), 4000))
				}
				time.Sleep(20 * time.Millisecond)
			}
			stopDaemon(t, d)
			if strings.Contains(d.stderr.String(), "job run failed") {
				t.Errorf("the daemon failed a job run:\n%s", tail(d.stderr.String(), 4000))
			}
			if runs := checkRuns(t, db, dir, nil); runs != 2*(200+3*100) {
				t.Errorf("%d runs, want %d", runs, 2*(200+3*100))
			}
			if n := queryDB(t, db, "SELECT count(*) FROM results WHERE state = 'failed' AND attempts = 3"); n != 2*100 {
				t.Errorf("%d tasks failed after 3 attempts, want %d", n, 2*100)
			}
		})
	}
}

// tail is the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// Retries and takeovers under load on PostgreSQL: three daemons share
// three retrying jobs, and one is SIGKILLed twice while the others claim
// due retries and commit; the survivors take its tasks over meanwhile.
// No statement deadlocks or ends over a lock conflict, every attempt runs
// once (a rerun only after its runner was killed), and each task has its
// one result.
func TestPostgresRetriesAndTakeoversUnderLoad(t *testing.T) {
	db := pgtest.URL(t)
	dir := t.TempDir()
	job := retryJob(t, dir)
	env := []string{"PCD_LEASE=3s"}
	var daemons []*proc
	for range 3 {
		daemons = append(daemons, startPGDaemon(t, db, env...))
	}
	for range 3 {
		if r := pcd(t, db, "submit", job); r.code != 0 {
			t.Fatalf("submit: exit %d: %s", r.code, r.stderr)
		}
	}
	killed := map[int]bool{}
	logs := []*proc{}
	for _, at := range []int{150, 500} {
		for deadline := time.Now().Add(2 * time.Minute); lines(filepath.Join(dir, "runs.log")) < at; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d runs after 2 minutes:\n%s", at, tail(daemons[0].stderr.String(), 4000))
			}
		}
		victim := daemons[0]
		victim.cmd.Process.Kill()
		victim.wait(t, 30*time.Second)
		killed[victim.cmd.Process.Pid] = true
		logs = append(logs, victim)
		daemons = append(daemons[1:], startPGDaemon(t, db, env...))
	}
	for deadline := time.Now().Add(3 * time.Minute); queryDB(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NULL") > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("jobs unfinished after 3 minutes:\n%s", tail(daemons[0].stderr.String(), 4000))
		}
	}
	// The dead daemons' callbacks of the last jobs are released by a
	// survivor's next look for gone runners: wait for it, not for a time.
	unreleased := `SELECT count(*) FROM callbacks c LEFT JOIN releases r ON r.job_id = c.job_id AND r.runner_id = c.runner_id
		WHERE c.id > coalesce(r.released_id, 0)`
	for deadline := time.Now().Add(time.Minute); queryDB(t, db, unreleased) > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d callbacks unreleased a minute after the jobs finished", queryDB(t, db, unreleased))
		}
	}
	for _, d := range daemons {
		stopDaemon(t, d)
	}
	for _, d := range append(logs, daemons...) {
		for _, bad := range []string{"deadlock", "lock conflict", "job run failed"} {
			if strings.Contains(d.stderr.String(), bad) {
				t.Errorf("a daemon logged %q:\n%s", bad, tail(d.stderr.String(), 4000))
			}
		}
	}
	checkRuns(t, db, dir, killed)
	checkInvariants(t, db)
	if n := queryDB(t, db, "SELECT count(*) FROM results"); n != 900 {
		t.Errorf("%d results, want 900", n)
	}
	if n := queryDB(t, db, "SELECT count(*) FROM results WHERE state = 'failed' AND attempts = 3"); n != 300 {
		t.Errorf("%d tasks failed after 3 attempts, want 300", n)
	}
	t.Logf("interrupted tasks: %d", queryDB(t, db, "SELECT count(*) FROM tasks WHERE interrupts > 0"))
}

// lines counts the lines of the file at path (0 if there is none).
func lines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// A retried task whose next attempt is interrupted by three runner deaths
// fails, on both stores; it leaves the index of waiting tasks (it once
// kept its last retry's due time there) and says why it failed.
func TestRetriedTaskFailedByInterruptionsIsNotWaiting(t *testing.T) {
	for _, store := range bothStores {
		t.Run(store.name, func(t *testing.T) {
			db, dir := store.db(t), t.TempDir()
			env := []string{"PCD_LEASE=1s"}
			s := uniqueSleep(60)
			t.Cleanup(func() { killAll(processesWith("sleep", s)) })
			// The first attempt fails; the second sleeps until its runner dies.
			script := fmt.Sprintf(`[ -e %q ] || { touch %q; exit 1; }; exec sleep %s`, dir+"/tried", dir+"/tried", s)
			job := filepath.Join(dir, "job.json")
			body := fmt.Sprintf(`{"tasks":[{"kind":"exec","payload":{"argv":["sh","-c",%q]},"max_attempts":3,"backoff":{"base":"10ms","cap":"10ms"}}]}`, script)
			if err := os.WriteFile(job, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			if r := pcd(t, db, "submit", job); r.code != 0 {
				t.Fatalf("submit: exit %d: %s", r.code, r.stderr)
			}
			for kill := 1; kill <= 3; kill++ {
				d := startPGDaemon(t, db, env...)
				sleeping := waitProcesses(t, 1, 30*time.Second, "sleep", s)
				// Its start mark has committed: the death interrupts it.
				waitFor(t, db, "SELECT count(*) FROM running WHERE pgid IS NOT NULL", 1)
				d.cmd.Process.Kill()
				d.wait(t, 10*time.Second)
				deadline := time.Now().Add(10 * time.Second)
				for len(alive(sleeping)) > 0 {
					if time.Now().After(deadline) {
						t.Fatalf("kill %d: the command outlived its runner", kill)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			d := startPGDaemon(t, db, env...)
			waitFor(t, db, "SELECT count(*) FROM results", 1)
			stopDaemon(t, d)
			var state, why string
			queryRow(t, db, "SELECT state, error FROM results", &state, &why)
			if state != "failed" || !strings.Contains(why, "interrupted") {
				t.Errorf("the task ended %s (%q), want failed for its interruptions", state, why)
			}
			if n := queryDB(t, db, "SELECT count(*) FROM tasks WHERE not_before IS NOT NULL"); n != 0 {
				t.Errorf("the failed task is still in the index of waiting tasks")
			}
		})
	}
}
