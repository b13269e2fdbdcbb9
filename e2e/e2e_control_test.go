package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/internal/pgtest"
)

// Job control as pueue users expect it, on both
// stores: priorities, start times, dependencies, pause and resume across
// a restart, --halt, pcd kill, groups, and cancel of several jobs.
//
// Its parts run at once, past go test's -parallel (the number of CPUs):
// each has a database of its own, and they spend most of their time
// waiting for start times and daemons.
func TestJobControl(t *testing.T) {
	var wg sync.WaitGroup
	for _, store := range bothStores {
		for _, part := range []struct {
			name string
			run  func(*testing.T, string)
		}{{"Scheduling", scheduling}, {"Halt", halting}, {"KillAndGroups", killAndGroups}} {
			wg.Go(func() {
				t.Run(store.name+"/"+part.name, func(t *testing.T) { part.run(t, store.db(t)) })
			})
		}
	}
	wg.Wait()
}

// bothStores make a new database of each kind for a test.
var bothStores = []struct {
	name string
	db   func(t *testing.T) string
}{
	{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "pcd.db") }},
	{"postgres", func(t *testing.T) string { return pgtest.URL(t) }},
}

// controlDaemon starts pcd daemon with args and waits until it runs.
func controlDaemon(t *testing.T, db string, args ...string) *proc {
	t.Helper()
	d := startWith(t, db, nil, append([]string{"daemon", "--log-level", "debug"}, args...)...)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.stderr.String(), "daemon started") {
		select {
		case <-d.done:
			t.Fatalf("daemon exited %d: %s", d.cmd.ProcessState.ExitCode(), d.stderr)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not started after 30s: %s", d.stderr)
		}
	}
	return d
}

func submitID(t *testing.T, db string, args ...string) string {
	t.Helper()
	r := pcd(t, db, append([]string{"submit"}, args...)...)
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 || len(id) != 36 {
		t.Fatalf("submit %v: exit %d, %q, %s", args, r.code, id, r.stderr)
	}
	return id
}

type jobJSON struct {
	ID         string     `json:"job_id"`
	State      string     `json:"state"`
	Paused     bool       `json:"paused"`
	Succeeded  int        `json:"succeeded"`
	Failed     int        `json:"failed"`
	Cancelled  int        `json:"cancelled"`
	ElapsedS   float64    `json:"elapsed_secs"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	StartAt    *time.Time `json:"start_at"`
}

func jobInfo(t *testing.T, db, id string) jobJSON {
	t.Helper()
	var j jobJSON
	r := pcd(t, db, "status", "--json", id)
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatalf("status --json %s: %v: %s%s", id, err, r.stdout, r.stderr)
	}
	return j
}

// waitJob waits until the job's state is one of states.
func waitJob(t *testing.T, db, id string, states ...string) jobJSON {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		j := jobInfo(t, db, id)
		for _, s := range states {
			if j.State == s {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s after 60 s, want %v", id, j.State, states)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// jobReason is the reason in a finished job's job callback.
func jobReason(t *testing.T, db, id string) string {
	t.Helper()
	r := pcd(t, db, "watch", "--json", id)
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var ev struct {
			Event  string `json:"event"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Event == "job" {
			return ev.Reason
		}
	}
	t.Fatalf("no job callback for %s: %s%s", id, r.stdout, r.stderr)
	return ""
}

func scheduling(t *testing.T, db string) {
	gate := filepath.Join(t.TempDir(), "gate")
	d := controlDaemon(t, db, "--max-jobs", "1")
	// A blocker holds the daemon's one slot until the gate opens.
	blocker := submitID(t, db, "--", "sh", "-c", "while [ ! -e "+gate+" ]; do sleep 0.02; done")
	waitJob(t, db, blocker, "running")
	low := submitID(t, db, "--name", "low", "--", "true")
	high := submitID(t, db, "--priority", "5", "--name", "high", "--", "true")
	later := submitID(t, db, "--in", "2s", "--priority", "9", "--", "true")
	failing := submitID(t, db, "--", "false")
	after := submitID(t, db, "--after", failing[:8], "--priority", "9", "--", "true")
	afterAny := submitID(t, db, "--after-any", failing+","+low[:8], "--", "true")
	paused := submitID(t, db, "--priority", "9", "--", "true")
	if r := pcd(t, db, "pause", paused[:8]); r.code != 0 || !strings.Contains(r.stdout, "paused 1 job") {
		t.Fatalf("pause: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	os.WriteFile(gate, nil, 0o600)

	h, l := waitJob(t, db, high, "succeeded"), waitJob(t, db, low, "succeeded")
	if !h.StartedAt.Before(*l.StartedAt) {
		t.Errorf("the high-priority job started at %v, after the older low one at %v", h.StartedAt, l.StartedAt)
	}
	waitJob(t, db, failing, "failed")
	if j := waitJob(t, db, after, "cancelled", "succeeded"); j.State != "cancelled" || j.StartedAt != nil {
		t.Errorf("a job --after a failed one: %s, started %v; want cancelled, never started", j.State, j.StartedAt)
	}
	if why := jobReason(t, db, after); !strings.Contains(why, failing) || !strings.Contains(why, "failed") {
		t.Errorf("its job callback's reason %q does not name the failed job", why)
	}
	if j := waitJob(t, db, afterAny, "succeeded", "cancelled"); j.State != "succeeded" {
		t.Errorf("a job --after-any a failed one: %s, want it run", j.State)
	}
	// --in 2s is 2 s from when pcd submit read its flags, a little
	// before the job's row was written.
	lj := waitJob(t, db, later, "succeeded")
	if lj.StartAt == nil || lj.StartAt.Sub(lj.CreatedAt) > 2*time.Second || lj.StartAt.Sub(lj.CreatedAt) < time.Second {
		t.Errorf("a job submitted --in 2s at %v starts at %v", lj.CreatedAt, lj.StartAt)
	} else if lj.StartedAt.Before(*lj.StartAt) {
		t.Errorf("a job submitted --in 2s, to start at %v, started at %v", lj.StartAt, lj.StartedAt)
	}
	// The paused job waits, across a daemon restart, until resumed.
	stopDaemon(t, d)
	d = controlDaemon(t, db, "--max-jobs", "1")
	time.Sleep(1500 * time.Millisecond)
	if j := jobInfo(t, db, paused); j.State != "pending" || !j.Paused {
		t.Fatalf("the paused job after a restart: %s, paused %v", j.State, j.Paused)
	}
	if r := pcd(t, db, "resume", paused); r.code != 0 {
		t.Fatalf("resume: exit %d: %s", r.code, r.stderr)
	}
	waitJob(t, db, paused, "succeeded")

	// A running job, paused, starts nothing new; its running task ends.
	gate2 := filepath.Join(t.TempDir(), "gate")
	long := submitID(t, db, "--workers", "1", "--", "sh", "-c", "while [ ! -e "+gate2+" ]; do sleep 0.02; done; echo {}", ":::", "1", "2", "3")
	waitJob(t, db, long, "running")
	if r := pcd(t, db, "pause", long); r.code != 0 {
		t.Fatalf("pause: %s", r.stderr)
	}
	// The gate opens once the daemon has taken the pause in: before, its
	// first task could end and the next start in between.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.stderr.String(), "job paused: starting no new task"); {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not take the pause in: %s", d.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	os.WriteFile(gate2, nil, 0o600)
	j := waitJob(t, db, long, "pending")
	time.Sleep(500 * time.Millisecond)
	if j = jobInfo(t, db, long); j.Succeeded != 1 || !j.Paused {
		t.Errorf("a paused running job: %d succeeded, paused %v; want its running task done and no other started", j.Succeeded, j.Paused)
	}
	pcd(t, db, "resume", "--all")
	if j := waitJob(t, db, long, "succeeded"); j.Succeeded != 3 {
		t.Errorf("resumed: %+v", j)
	}
	stopDaemon(t, d)
}

func halting(t *testing.T, db string) {
	// Task 3 fails at once; task 2 sleeps 30 s, the others their number
	// of seconds. Task 3 starts once task 1 ends, after its claim and its
	// start mark (commits that a loaded machine can slow): task 2 is
	// running then, however late.
	script := "if [ {} = 3 ]; then exit 7; fi; if [ {} = 2 ]; then sleep 30; fi; sleep {}; echo {}"
	start := time.Now()
	r := pcd(t, db, "run", "--halt", "now,fail=1", "-w", "2", "--", "sh", "-c", script, ":::", "1", "2", "3", "4", "5", "6")
	if took := time.Since(start); r.code != 1 || took > 20*time.Second || !strings.Contains(r.stderr, "halted (--halt now,fail=1): 1 of 6 tasks failed") {
		t.Errorf("--halt now,fail=1: exit %d in %v:\n%s%s", r.code, took, r.stdout, r.stderr)
	}
	if r.stdout != "1\n" {
		t.Errorf("--halt now: the running task 2 was not stopped, or others started: stdout %q", r.stdout)
	}
	// Tasks 1 and 5 start; 3 starts when 1 ends, and fails while 5 runs.
	// Task 5 finishes; task 4 never starts.
	r = pcd(t, db, "run", "--halt", "soon,fail=1", "-w", "2", "--", "sh", "-c", script, ":::", "1", "5", "3", "4")
	if r.code != 1 || r.stdout != "1\n5\n" || !strings.Contains(r.stderr, "halted (--halt soon,fail=1)") {
		t.Errorf("--halt soon,fail=1: exit %d, stdout %q (want the running tasks to finish, and 4 never start):\n%s", r.code, r.stdout, r.stderr)
	}
	// The policy applies as results commit: a task quick enough to end
	// before the commit that meets it still counts.
	r = pcd(t, db, "run", "--halt", "now,success=50%", "-w", "1", "--", "sh", "-c", "sleep 0.3; echo {}", ":::", "a", "b", "c", "d")
	if r.code != 1 || (r.stdout != "a\nb\n" && r.stdout != "a\nb\nc\n") {
		t.Errorf("--halt now,success=50%%: exit %d, stdout %q, want a and b (c only if it ended before the commit), never d", r.code, r.stdout)
	}
	if r := pcd(t, db, "submit", "--halt", "later,fail=x", "--", "true"); r.code != 2 || !strings.Contains(r.stderr, "--halt") {
		t.Errorf("a bad --halt: exit %d, %s", r.code, r.stderr)
	}
}

func killAndGroups(t *testing.T, db string) {
	d := controlDaemon(t, db, "--max-jobs", "4")
	job := submitID(t, db, "--max-attempts", "3", "--", "sh", "-c", "echo {}; exec sleep 60", ":::", "a", "b")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(pcd(t, db, "tasks", job).stdout, "2       running") {
		if time.Now().After(deadline) {
			t.Fatalf("tasks not running: %s", pcd(t, db, "tasks", job).stdout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := pcd(t, db, "kill", job[:8], "1"); r.code != 0 || !strings.Contains(r.stdout, "killed: failed") {
		t.Errorf("kill: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if r := pcd(t, db, "kill", "--requeue", job, "2"); r.code != 0 || !strings.Contains(r.stdout, "back to") {
		t.Errorf("kill --requeue: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	var tasks []struct {
		State    string `json:"state"`
		Attempts int    `json:"attempts"`
		Error    string `json:"error"`
	}
	for _, line := range strings.Split(strings.TrimSpace(pcd(t, db, "tasks", "--json", job).stdout), "\n") {
		var v struct {
			State    string `json:"state"`
			Attempts int    `json:"attempts"`
			Error    string `json:"error"`
		}
		json.Unmarshal([]byte(line), &v)
		tasks = append(tasks, v)
	}
	if len(tasks) != 2 || tasks[0].State != "failed" || tasks[0].Error != "killed (pcd kill)" || tasks[0].Attempts != 1 ||
		tasks[1].State == "failed" || tasks[1].Attempts != 0 {
		t.Errorf("after kill and kill --requeue: %+v; want task 1 failed with no retry, task 2 to run again with no attempt spent", tasks)
	}
	if r := pcd(t, db, "kill", job, "1"); r.code != 7 {
		t.Errorf("kill of a failed task: exit %d, want 7", r.code)
	}

	// A group of one job at a time, and one of one task at a time.
	if r := pcd(t, db, "group", "set", "solo", "--max-jobs", "1"); r.code != 0 {
		t.Fatalf("group set: %s", r.stderr)
	}
	if r := pcd(t, db, "group", "set", "narrow", "--workers", "1"); r.code != 0 {
		t.Fatalf("group set: %s", r.stderr)
	}
	g := pcd(t, db, "group")
	if !strings.Contains(g.stdout, "solo    1         -") || !strings.Contains(g.stdout, "narrow  -         1") {
		t.Errorf("pcd group:\n%s", g.stdout)
	}
	a := submitID(t, db, "--group", "solo", "--", "sleep", "0.4")
	b := submitID(t, db, "--group", "solo", "--", "sleep", "0.4")
	n := submitID(t, db, "--group", "narrow", "--workers", "4", "--", "sleep", ":::", "0.3", "0.3", "0.3", "0.3")
	ja, jb := waitJob(t, db, a, "succeeded"), waitJob(t, db, b, "succeeded")
	if jb.StartedAt.Before(*ja.FinishedAt) && ja.StartedAt.Before(*jb.FinishedAt) {
		t.Errorf("two jobs of a one-job group overlapped: %v-%v and %v-%v", ja.StartedAt, ja.FinishedAt, jb.StartedAt, jb.FinishedAt)
	}
	if jn := waitJob(t, db, n, "succeeded"); jn.ElapsedS < 1.1 {
		t.Errorf("4 tasks of 0.3 s in a one-worker group took %.2f s: they ran at once", jn.ElapsedS)
	}

	// Cancel of several jobs, then retry of all that were cancelled.
	x := submitID(t, db, "--in", "1h", "--", "true")
	y := submitID(t, db, "--in", "1h", "--", "true")
	if r := pcd(t, db, "cancel", x[:8], y); r.code != 0 || strings.Count(r.stdout, "cancelled job") != 2 {
		t.Errorf("cancel X Y: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if r := pcd(t, db, "cancel", "--all"); r.code != 0 {
		t.Errorf("cancel --all: exit %d: %s", r.code, r.stderr)
	}
	r := pcd(t, db, "retry", "--all", "--state", "cancelled")
	if r.code != 0 || !strings.Contains(r.stdout, x) || !strings.Contains(r.stdout, y) {
		t.Errorf("retry --all --state cancelled: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if r := pcd(t, db, "cancel"); r.code != 2 {
		t.Errorf("cancel with no job: exit %d, want 2", r.code)
	}
	pcd(t, db, "cancel", "--all")
	stopDaemon(t, d)
}

// The CLI's reading and output on both stores, driving the binary:
// commands' output and --keep-order in run and watch, flags after
// arguments, JOB N, the tasks table, the status overview, and pcd jobs on
// a default database that does not exist yet.
func TestCLIOnBothStores(t *testing.T) {
	for _, store := range bothStores {
		t.Run(store.name, func(t *testing.T) {
			db := store.db(t)
			// After --, everything is the command line: flags go before it.
			r := pcd(t, db, "run", "-k", "--", "sh", "-c", "sleep 0.$((4 - {})); echo out {}; echo err {} >&2", ":::", "1", "2", "3")
			if r.code != 0 || r.stdout != "out 1\nout 2\nout 3\n" || !strings.Contains(r.stderr, "err 2\n") {
				t.Fatalf("run -k: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			id := jobIDs(t, db)[0]
			w := pcd(t, db, "watch", id[:8], "--keep-order")
			if w.code != 0 || w.stdout != "out 1\nout 2\nout 3\n" {
				t.Errorf("watch JOB --keep-order: exit %d, stdout %q", w.code, w.stdout)
			}
			if l := pcd(t, db, "logs", id[:8], "2"); l.stdout != "out 2\n" || l.stderr != "err 2\n" {
				t.Errorf("logs JOB 2: %q %q", l.stdout, l.stderr)
			}
			tasks := pcd(t, db, "tasks", id, "--state", "succeeded")
			if !strings.Contains(tasks.stdout, "COMMAND") || !strings.Contains(tasks.stdout, `sh -c 'sleep 0.$((4 - 2)); echo out 2; echo err 2 >&2'`) {
				t.Errorf("tasks JOB --state succeeded:\n%s", tasks.stdout)
			}
			d := controlDaemon(t, db)
			st := pcd(t, db, "status")
			if !strings.Contains(st.stdout, fmt.Sprint(d.cmd.Process.Pid)) || !strings.Contains(st.stdout, "jobs:           1 succeeded") {
				t.Errorf("status with a daemon:\n%s%s", st.stdout, st.stderr)
			}
			stopDaemon(t, d)
		})
	}
	// The default database, before the first submit.
	state := t.TempDir()
	cmd := exec.Command(pcdBin, "jobs")
	cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+state, "PCD_DB=", raceEnv)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "ID  NAME  STATE") {
		t.Errorf("pcd jobs on the default database before any submit: %v: %s", err, out)
	}
}

// jobIDs are the database's job ids, newest first.
func jobIDs(t *testing.T, db string) []string {
	t.Helper()
	var jobs []struct {
		ID string `json:"job_id"`
	}
	r := pcd(t, db, "jobs", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &jobs); err != nil || len(jobs) == 0 {
		t.Fatalf("jobs --json: %v: %s%s", err, r.stdout, r.stderr)
	}
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	return ids
}

// A running daemon releases the callbacks of a job that pcd cancel
// finished while no run of it was going on there (it waited for its start
// time): at the cancel's wake-up, not at the daemon's next start.
func TestDaemonReleasesAJobCancelledElsewhere(t *testing.T) {
	for _, store := range bothStores {
		t.Run(store.name, func(t *testing.T) {
			db := store.db(t)
			d := controlDaemon(t, db)
			defer stopDaemon(t, d)
			id := strings.TrimSpace(pcd(t, db, "submit", "--in", "1h", "--", "true", ":::", "a", "b", "c").stdout)
			if len(id) != 36 {
				t.Fatalf("submit printed %q", id)
			}
			start := time.Now()
			if r := pcd(t, db, "cancel", id); r.code != 0 {
				t.Fatalf("cancel: exit %d: %s", r.code, r.stderr)
			}
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("pcd cancel took %v", took)
			}
			released := "job completed callback_id="
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.stderr.String(), "job="+id+" outcome=cancelled") || !strings.Contains(d.stderr.String(), released); {
				if time.Now().After(deadline) {
					t.Fatalf("the daemon did not release the cancelled job's callbacks in 30 s:\n%s", d.stderr)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if n := strings.Count(d.stderr.String(), "task completed"); n != 3 {
				t.Errorf("the daemon released %d task callbacks, want 3:\n%s", n, d.stderr)
			}
		})
	}
}
