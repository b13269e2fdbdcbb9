package e2e_test

import (
	"bufio"
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store/postgres"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// proc is a pcd process running in the background.
type proc struct {
	cmd    *exec.Cmd
	stdout *buffer
	stderr *buffer
	done   chan struct{}
}

func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%v still running after %v; stderr:\n%s", p.cmd.Args, d, p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

// start runs pcd in the background with stdin; the test kills it if it is
// left.
func start(t *testing.T, db string, stdin io.Reader, args ...string) *proc {
	t.Helper()
	return startIn(t, db, nil, stdin, args...)
}

// buffer is a bytes.Buffer safe to read while a process writes to it.
type buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startDaemon starts pcd daemon and waits until it listens.
func startDaemon(t *testing.T, db string, args ...string) *proc {
	t.Helper()
	d := start(t, db, nil, append([]string{"daemon", "--log-level", "debug"}, args...)...)
	waitListening(t, d, db)
	return d
}

// waitListening waits until the daemon d listens on db.
func waitListening(t *testing.T, d *proc, db string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !sqlite.RunnerListening(db) {
		select {
		case <-d.done:
			t.Fatalf("daemon exited %d: %s", d.cmd.ProcessState.ExitCode(), d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not listening after 30s: %s", d.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopDaemon sends SIGTERM and expects a clean exit.
func stopDaemon(t *testing.T, d *proc) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("daemon exit %d after SIGTERM; stderr:\n%s", code, d.stderr)
	}
}

// event is one NDJSON line of pcd watch --json.
type event struct {
	CallbackID int64  `json:"callback_id"`
	Event      string `json:"event"`
	JobID      string `json:"job_id"`
	Number     int64  `json:"number"`
	State      string `json:"state"`
	Outcome    string `json:"outcome"`
	Total      int64  `json:"total"`
}

func parseEvents(t *testing.T, out string) []event {
	t.Helper()
	var evs []event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var ev event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("bad NDJSON line %q: %v", line, err)
		}
		if ev.Event == "start" {
			continue
		}
		evs = append(evs, ev)
	}
	return evs
}

// checkExactlyOnce asserts that each callback id appears once, ids
// increase, each job has each task number 1..total once, and one job
// event, after its tasks.
func checkExactlyOnce(t *testing.T, evs []event, totals map[string]int64) {
	t.Helper()
	var last int64
	tasks := map[string]map[int64]int{}
	jobEvents := map[string]int{}
	for _, ev := range evs {
		if ev.CallbackID <= last {
			t.Errorf("callback %d after %d: shown twice or out of order", ev.CallbackID, last)
		}
		last = ev.CallbackID
		switch ev.Event {
		case "task":
			if jobEvents[ev.JobID] > 0 {
				t.Errorf("job %s: task %d after the job event", ev.JobID, ev.Number)
			}
			if tasks[ev.JobID] == nil {
				tasks[ev.JobID] = map[int64]int{}
			}
			tasks[ev.JobID][ev.Number]++
		case "job":
			jobEvents[ev.JobID]++
		}
	}
	for job, total := range totals {
		if jobEvents[job] != 1 {
			t.Errorf("job %s: %d job events, want 1", job, jobEvents[job])
		}
		if int64(len(tasks[job])) != total {
			t.Errorf("job %s: events for %d tasks, want %d", job, len(tasks[job]), total)
		}
		for n, c := range tasks[job] {
			if c != 1 || n < 1 || n > total {
				t.Errorf("job %s task %d: %d events", job, n, c)
			}
		}
	}
}

func writeJob(t *testing.T, dir, name string, n int, task string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	body := `{"name": "` + name + `", "workers": 4, "tasks": [` + strings.TrimSuffix(strings.Repeat(task+",", n), ",") + `]}`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDaemonRunsJobsFromConcurrentSubmits(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	d := startDaemon(t, db, "--max-jobs", "2")
	follower := start(t, db, nil, "watch", "--all", "--follow", "--json")

	var wg sync.WaitGroup
	ids := make([]string, 3)
	for i := range ids {
		file := writeJob(t, dir, fmt.Sprintf("job%d.json", i), 40, `{"kind":"sleep","payload":{"secs":0.005}}`)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := pcd(t, db, "submit", file)
			if r.code != 0 {
				t.Errorf("submit: exit %d: %s", r.code, r.stderr)
			}
			ids[i] = strings.TrimSpace(r.stdout)
		}()
	}
	wg.Wait()
	totals := map[string]int64{}
	for _, id := range ids {
		if len(id) != 36 {
			t.Fatalf("submit printed %q, want a job id alone", id)
		}
		totals[id] = 40
	}
	r := pcd(t, db, append([]string{"watch", "--json"}, ids...)...)
	if r.code != 0 {
		t.Fatalf("watch: exit %d: %s", r.code, r.stderr)
	}
	checkExactlyOnce(t, parseEvents(t, r.stdout), totals)

	// The follower saw the same, live.
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(follower.stdout.String(), `"event":"job"`) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	follower.cmd.Process.Signal(syscall.SIGINT)
	follower.wait(t, 10*time.Second)
	checkExactlyOnce(t, parseEvents(t, follower.stdout.String()), totals)
	stopDaemon(t, d)
}

func TestWatchFollowsAcrossDaemonRestart(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	file := writeJob(t, dir, "restart.json", 30, `{"kind":"sleep","payload":{"secs":0.1}}`)
	r := pcd(t, db, "submit", "--workers", "3", file)
	if r.code != 0 {
		t.Fatalf("submit: %s", r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	watch := start(t, db, nil, "watch", "--json", id[:8])

	for restart := range 3 {
		d := startDaemon(t, db)
		// Let it complete a few tasks, then stop it: the running ones finish.
		want := strings.Count(watch.stdout.String(), `"event":"task"`) + 3
		deadline := time.Now().Add(20 * time.Second)
		for strings.Count(watch.stdout.String(), `"event":"task"`) < want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if restart < 2 {
			stopDaemon(t, d)
		} else {
			if code := watch.wait(t, 30*time.Second); code != 0 {
				t.Fatalf("watch exit %d: %s", code, watch.stderr)
			}
			stopDaemon(t, d)
		}
	}
	checkExactlyOnce(t, parseEvents(t, watch.stdout.String()), map[string]int64{id: 30})
}

func TestHardStopPutsTasksBackToPending(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	file := writeJob(t, dir, "long.json", 6, `{"kind":"sleep","payload":{"secs":30}}`)
	r := pcd(t, db, "submit", "--workers", "2", file)
	id := strings.TrimSpace(r.stdout)
	d := startDaemon(t, db, "--grace", "100ms")
	waitFor(t, db, "SELECT count(*) FROM jobs WHERE state = 'running'", 1)
	stopDaemon(t, d) // the grace runs out: the two sleeping tasks are interrupted
	if n := queryDB(t, db, `SELECT count(*) FROM tasks t WHERE attempts = 0 AND NOT EXISTS (SELECT 1 FROM running u WHERE u.job_id = t.job_id AND u.seq = t.seq)
		AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq)`); n != 6 {
		t.Fatalf("%d tasks pending with no attempt spent, want 6", n)
	}
	r = pcd(t, db, "status", "--json", id)
	// Nothing runs it now: it waits for a runner (DESIGN invariant 11).
	if !strings.Contains(r.stdout, `"state": "pending"`) || !strings.Contains(r.stdout, `"done": 0`) {
		t.Errorf("status after a hard stop:\n%s", r.stdout)
	}
}

func queryDB(t *testing.T, db, q string) int { return queryDBAny(t, db, q) }

func queryDBAny(t testing.TB, db, q string) int {
	t.Helper()
	raw := openRaw(t, db)
	defer raw.Close()
	var n int
	if err := raw.QueryRow(q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// openRaw opens the database for the test's own SQL: a SQLite file, or a
// postgres:// URL (with pgx's database/sql driver).
func openRaw(t testing.TB, db string) *sql.DB {
	t.Helper()
	driver, dsn := "sqlite", rawDSN(db)
	if postgres.IsURL(db) {
		driver, dsn = "pgx", db
	}
	raw, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// waitFor polls q until it returns at least want.
func waitFor(t *testing.T, db, q string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n := queryDB(t, db, q); n >= want {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%s = %d after 30s, want %d", q, n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStreamSubmitRunsWhileReading(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	d := startDaemon(t, db)
	pr, pw := io.Pipe()
	sub := start(t, db, pr, "submit", "--workers", "8", "-")
	line := `{"kind":"noop"}` + "\n"
	w := bufio.NewWriter(pw)
	for range 5000 {
		w.WriteString(line)
	}
	w.Flush()
	// Stdin is still open, and the daemon is already running the first tasks.
	waitFor(t, db, "SELECT count(*) FROM results WHERE state = 'succeeded'", 1)
	if queryDB(t, db, "SELECT sealed FROM jobs") != 0 {
		t.Fatal("job sealed before EOF")
	}
	for range 5000 {
		w.WriteString(line)
	}
	w.Flush()
	pw.Close()
	if code := sub.wait(t, time.Minute); code != 0 {
		t.Fatalf("submit exit %d: %s", code, sub.stderr)
	}
	id := strings.TrimSpace(sub.stdout.String())
	r := pcd(t, db, "watch", "--json", id)
	if r.code != 0 {
		t.Fatalf("watch exit %d: %s", r.code, r.stderr)
	}
	checkExactlyOnce(t, parseEvents(t, r.stdout), map[string]int64{id: 10000})
	stopDaemon(t, d)
}

func TestSecondDaemonIsRefused(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	d := startDaemon(t, db)
	r := pcd(t, db, "daemon")
	if r.code != 4 {
		t.Fatalf("second daemon: exit %d, want 4; stderr %s", r.code, r.stderr)
	}
	if want := fmt.Sprintf("held by pid %d", d.cmd.Process.Pid); !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q does not name the daemon (%s)", r.stderr, want)
	}
	// pcd run hands its job to the daemon instead of refusing.
	r = pcd(t, db, "run", "../testdata/jobs/sleeps.json")
	if r.code != 0 || !strings.Contains(r.stderr, "was handed to it") {
		t.Fatalf("run beside a daemon: exit %d, stderr %s", r.code, r.stderr)
	}
	p := parseOutput(t, r.stdout)
	if len(p.numbers) != 5 || p.order[len(p.order)-1] != "job" {
		t.Errorf("handed-off run printed %q", r.stdout)
	}
	stopDaemon(t, d)
}

func TestCancelStopsRunningJob(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	file := writeJob(t, dir, "slow.json", 20, `{"kind":"sleep","payload":{"secs":60}}`)
	id := strings.TrimSpace(pcd(t, db, "submit", "--workers", "2", file).stdout)
	d := startDaemon(t, db)
	waitFor(t, db, "SELECT count(*) FROM jobs WHERE state = 'running'", 1)
	r := pcd(t, db, "cancel", id[:6])
	if r.code != 0 || !strings.Contains(r.stdout, "20 tasks cancelled") {
		t.Fatalf("cancel: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	w := pcd(t, db, "watch", "--json", id)
	if w.code != 1 {
		t.Errorf("watch of a cancelled job: exit %d, want 1", w.code)
	}
	evs := parseEvents(t, w.stdout)
	checkExactlyOnce(t, evs, map[string]int64{id: 20})
	if last := evs[len(evs)-1]; last.Outcome != "cancelled" {
		t.Errorf("job outcome %q, want cancelled", last.Outcome)
	}
	// The daemon stopped the two running sleeps at once rather than after 60s.
	stopDaemon(t, d)
	if !strings.Contains(d.stderr.String(), "outcome=cancelled") {
		t.Errorf("daemon did not log the cancelled job:\n%s", d.stderr)
	}
	// Cancelling again is refused.
	if r := pcd(t, db, "cancel", id); r.code != 7 || !strings.Contains(r.stderr, "already cancelled") {
		t.Errorf("second cancel: exit %d, stderr %q; want 7", r.code, r.stderr)
	}
}

func TestRetryRunsFailedTasksAgain(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "run", "../testdata/jobs/some-fail.json")
	if r.code != 1 {
		t.Fatalf("run: exit %d", r.code)
	}
	id := parseOutput(t, r.stdout).job
	if r := pcd(t, db, "retry", id); r.code != 0 || !strings.Contains(r.stdout, "1 task back to pending") {
		t.Fatalf("retry: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	d := startDaemon(t, db)
	w := pcd(t, db, "watch", "--json", id)
	stopDaemon(t, d)
	if w.code != 1 {
		t.Errorf("watch exit %d, want 1: the fail task fails again", w.code)
	}
	evs := parseEvents(t, w.stdout)
	jobs, failTask := 0, 0
	for _, ev := range evs {
		if ev.Event == "job" {
			jobs++
		}
		if ev.Event == "task" && ev.Number == 2 {
			failTask++
		}
	}
	if jobs != 2 || failTask != 2 || len(evs) != 6 {
		t.Errorf("%d events: %d job events and %d for the failed task, want 6, 2 and 2", len(evs), jobs, failTask)
	}
	tr := pcd(t, db, "tasks", "--json", "--state", "failed", id)
	if !strings.Contains(tr.stdout, `"attempts":2`) {
		t.Errorf("the retried task does not show 2 attempts:\n%s", tr.stdout)
	}
}

func TestBadInputExitCodes(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	if r := pcd(t, filepath.Join(dir, "missing.db"), "jobs"); r.code != 8 || !strings.Contains(r.stderr, "no database") {
		t.Errorf("missing database: exit %d, stderr %q; want 8", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); err == nil {
		t.Error("a read command created the database")
	}
	// Enough jobs that two share a first hex digit.
	var ids []string
	for range 17 {
		ids = append(ids, strings.TrimSpace(pcd(t, db, "submit", "--sleep", "1").stdout))
	}
	first := map[byte]int{}
	var shared string
	for _, id := range ids {
		if first[id[0]]++; first[id[0]] == 2 {
			shared = id[:1]
		}
	}
	before := fileSum(t, db)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status", "0000dead"}, 5, "not found"},
		{[]string{"status", "zz"}, 5, "hex digits"},
		{[]string{"status", shared}, 6, "ambiguous id"},
		{[]string{"cancel", shared}, 6, "ambiguous id"},
		{[]string{"tasks", "--state", "done", ids[0]}, 2, `unknown state "done"`},
		{[]string{"retry", ids[0]}, 7, "still pending"},
		{[]string{"jobs", "--limit", "0"}, 2, "--limit must be positive"},
		{[]string{"watch"}, 2, "give job ids, or --all"},
	} {
		r := pcd(t, db, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("pcd %v: exit %d, stderr %q; want %d and one line with %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	if fileSum(t, db) != before {
		t.Error("bad input changed the database")
	}
}

func TestMalformedNDJSONLine(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	pcd(t, db, "submit", "--sleep", "1") // the database exists
	before := fileSum(t, db)
	in := `{"kind":"noop"}` + "\n" + `{"kind":"noop"}` + "\n" + `{"kind":"noop",}` + "\n"
	p := start(t, db, strings.NewReader(in), "submit", "-")
	if code := p.wait(t, time.Minute); code != 2 {
		t.Fatalf("exit %d, want 2; stderr %s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "line 3") {
		t.Errorf("stderr %q does not name line 3", p.stderr)
	}
	if fileSum(t, db) != before {
		t.Error("a stream whose only batch was broken changed the database")
	}
}

func TestSubmitWaitFollowsTheJob(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	d := startDaemon(t, db)
	r := pcd(t, db, "submit", "--wait", "../testdata/jobs/some-fail.json")
	if r.code != 1 {
		t.Fatalf("submit --wait of a failing job: exit %d, want 1; stderr %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 5 || len(lines[0]) != 36 || !strings.HasPrefix(lines[4], "Job "+lines[0]+" completed") {
		t.Fatalf("output %q, want the id, 3 task lines and the job line", r.stdout)
	}
	stopDaemon(t, d)
}

// TestWatchShowsProgressOnATerminal runs watch under script(1), which
// gives it a terminal, and looks for the progress line.
func TestWatchShowsProgressOnATerminal(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) is not installed")
	}
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "run", "../testdata/jobs/sleeps.json")
	id := parseOutput(t, r.stdout).job
	cmd := exec.Command(script, "-qec", pcdBin+" watch "+id+" >/dev/null", "/dev/null")
	cmd.Env = append(os.Environ(), "PCD_DB="+db, raceEnv)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("watch under script: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "(0/5, 0 tasks/hr)") || !strings.Contains(string(out), "5 tasks done, 0 failed") {
		t.Errorf("no progress line on the terminal:\n%q", out)
	}
	// Not on a terminal: no progress line.
	if r := pcd(t, db, "watch", id); r.stderr != "" {
		t.Errorf("progress line without a terminal: %q", r.stderr)
	}
}
