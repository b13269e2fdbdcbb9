package e2e_test

// The crash-recovery suite: it kills pcd at every failpoint and at random
// moments, restarts it, and checks the invariants of ARCHITECTURE.md.
//
// The default run is short. PCD_SOAK=10m runs the random-kill test for as
// long as it is asked, with the same checks.

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/internal/failpoint"
	"github.com/pcd-dev/pcd/store/postgres"
)

// checkInvariants asserts, on a database whose jobs have all finished:
// every task has exactly one final result and one task-callback record per
// round it ran in; every job has one job-callback record per round, after
// all its task records; integrity_check is ok. It returns the number of
// callback records.
func checkInvariants(t *testing.T, db string) int {
	t.Helper()
	raw := openRaw(t, db)
	defer raw.Close()
	q := func(query string) int {
		t.Helper()
		var n int
		if err := raw.QueryRow(query).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	if !postgres.IsURL(db) {
		var integrity string
		if err := raw.QueryRow("PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
			t.Errorf("integrity_check: %q %v", integrity, err)
		}
	}
	checks := []struct {
		what  string
		query string
	}{
		{"unfinished jobs", "SELECT count(*) FROM jobs WHERE finished_at IS NULL"},
		{"tasks without a final result", `SELECT count(*) FROM tasks t WHERE NOT EXISTS
			(SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq)`},
		{"results for no task", `SELECT count(*) FROM results r WHERE NOT EXISTS
			(SELECT 1 FROM tasks t WHERE t.job_id = r.job_id AND t.seq = r.seq)`},
		{"start marks left behind", "SELECT count(*) FROM running"},
		{"tasks of no job", "SELECT count(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = t.job_id)"},
		{"callbacks of no job", "SELECT count(*) FROM callbacks c WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = c.job_id)"},
		{"tasks without exactly one task callback", `SELECT count(*) FROM tasks t WHERE
			(SELECT count(*) FROM callbacks c WHERE c.job_id = t.job_id AND c.task_seq = t.seq AND c.event = 'task') != 1`},
		{"task callbacks for no task", `SELECT count(*) FROM callbacks c WHERE c.event = 'task' AND NOT EXISTS
			(SELECT 1 FROM tasks t WHERE t.job_id = c.job_id AND t.seq = c.task_seq)`},
		{"jobs without exactly one job callback", `SELECT count(*) FROM jobs j WHERE
			(SELECT count(*) FROM callbacks c WHERE c.job_id = j.id AND c.event = 'job') != 1`},
		{"job callbacks before a task callback of their job", `SELECT count(*) FROM callbacks j WHERE j.event = 'job' AND
			EXISTS (SELECT 1 FROM callbacks c WHERE c.job_id = j.job_id AND c.event = 'task' AND c.id > j.id)`},
		{"jobs whose counts disagree with their tasks", `SELECT count(*) FROM jobs j WHERE
			j.succeeded != (SELECT count(*) FROM results r WHERE r.job_id = j.id AND r.state = 'succeeded') OR
			j.failed != (SELECT count(*) FROM results r WHERE r.job_id = j.id AND r.state = 'failed') OR
			j.total != (SELECT count(*) FROM tasks t WHERE t.job_id = j.id)`},
		{"tasks run twice (attempts > 1 without a retry)", `SELECT count(*) FROM results r JOIN tasks t ON t.job_id = r.job_id AND t.seq = r.seq
			WHERE r.attempts > t.max_attempts OR (r.attempts > 1 AND t.max_attempts = 1)`},
		{"final tasks still in the index of waiting tasks", `SELECT count(*) FROM tasks t WHERE t.not_before IS NOT NULL
			AND EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq AND r.state != 'cancelled')`},
		{"callbacks never delivered", "SELECT count(*) FROM callbacks c JOIN jobs j ON j.id = c.job_id WHERE c.id > j.released_id"},
	}
	if postgres.IsURL(db) {
		// Each runner's release cursor is its own (releases).
		checks[len(checks)-1].query = `SELECT count(*) FROM callbacks c LEFT JOIN releases r ON r.job_id = c.job_id AND r.runner_id = c.runner_id
			WHERE c.id > coalesce(r.released_id, 0)`
	}
	for _, c := range checks {
		if n := q(c.query); n != 0 {
			t.Errorf("invariant violated: %d %s", n, c.what)
		}
	}
	return q("SELECT count(*) FROM callbacks")
}

// checkWatch asserts that a watch that ran through the crashes printed
// every callback record exactly once.
func checkWatch(t *testing.T, out string, records int) {
	t.Helper()
	seen := map[int64]int{}
	for _, ev := range parseEvents(t, out) {
		seen[ev.CallbackID]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("watch printed callback %d %d times", id, n)
		}
	}
	if len(seen) != records {
		t.Errorf("watch printed %d callbacks, the database has %d", len(seen), records)
	}
}

// stopWatch waits until the watch has printed n callbacks, then stops it.
func stopWatch(t *testing.T, w *proc, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(w.stdout.String(), `"callback_id"`) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	w.cmd.Process.Signal(syscall.SIGINT)
	w.wait(t, 10*time.Second)
}

// startWith runs pcd in the background with extra environment, such as a
// failpoint; the test kills it if it is left.
func startWith(t *testing.T, db string, env []string, args ...string) *proc {
	t.Helper()
	return startIn(t, db, env, nil, args...)
}

func startIn(t *testing.T, db string, env []string, stdin io.Reader, args ...string) *proc {
	t.Helper()
	return startBinary(t, binary(t), db, env, stdin, args...)
}

// startBinary is startIn with the pcd binary to run.
func startBinary(t *testing.T, bin, db string, env []string, stdin io.Reader, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "PCD_DB="+db, raceEnv), env...)
	cmd.Stdin = stdin
	return startProc(t, cmd)
}

// startProc starts cmd in the background, its output kept; the test
// kills it if it is left.
func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stdout: new(buffer), stderr: new(buffer), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func killedBySIGKILL(p *proc) bool {
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// runToEnd starts a daemon and waits until every job has finished.
func runToEnd(t *testing.T, db string) {
	t.Helper()
	d := startDaemon(t, db)
	deadline := time.Now().Add(30 * time.Second)
	for queryDB(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NULL") > 0 {
		if time.Now().After(deadline) {
			raw, _ := sql.Open("sqlite", rawDSN(db))
			rows, _ := raw.Query(`SELECT j.id, j.sealed, j.total, j.succeeded + j.failed + j.cancelled, j.state,
				(SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq)),
				(SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.not_before IS NOT NULL AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq)),
				(SELECT count(*) FROM running u WHERE u.job_id = j.id)
				FROM jobs j WHERE j.finished_at IS NULL`)
			for rows.Next() {
				var id, sealed, total, done, left, waiting, running int
				var state string
				rows.Scan(&id, &sealed, &total, &done, &state, &left, &waiting, &running)
				t.Logf("unfinished job %d: sealed %d, %d/%d done, state %s, %d without a result, %d waiting, %d marked running",
					id, sealed, done, total, state, left, waiting, running)
			}
			rows.Close()
			raw.Close()
			t.Fatalf("jobs unfinished after 30s; daemon:\n%s", d.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopDaemon(t, d)
}

func TestCrashAtEveryFailpoint(t *testing.T) {
	usePlainBinary(t)
	daemonPoints := map[string]string{
		failpoint.AfterTaskStart:       "2", // counts commits that mark tasks running
		failpoint.CompleteBeforeCommit: "3",
		failpoint.CompleteAfterCommit:  "3",
		failpoint.BeforeDeliver:        "5",
		failpoint.AfterDeliver:         "5",
		failpoint.FinishBeforeCommit:   "1",
		failpoint.FinishAfterCommit:    "1",
	}
	for _, point := range failpoint.All {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			db := filepath.Join(dir, "pcd.db")
			// Tasks long enough that their starts commit before their
			// results, and that a slow disk still takes several group
			// commits for the job (the counts above need 3).
			secs := "0.02"
			if point == failpoint.CompleteBeforeCommit || point == failpoint.CompleteAfterCommit {
				secs = "0.1"
			}
			job := writeJob(t, dir, "job.json", 30, `{"kind":"sleep","payload":{"secs":`+secs+`}}`)
			fail := []string{"PCD_FAILPOINT=" + point}
			if n, ok := daemonPoints[point]; ok {
				fail[0] += ":" + n
			}
			var watch *proc
			switch point {
			case failpoint.SubmitBeforeCommit, failpoint.SubmitAfterCommit, failpoint.DuringMigration:
				// Killed while submitting: the job is there whole or not at all.
				p := startWith(t, db, fail, "submit", "--key", "nightly", job)
				p.wait(t, time.Minute)
				if !killedBySIGKILL(p) {
					t.Fatalf("not killed at %s: exit %d, %s", point, p.cmd.ProcessState.ExitCode(), p.stderr)
				}
				if p.stdout.String() != "" {
					t.Fatalf("printed %q before dying", p.stdout)
				}
				wantJobs := 0
				if point == failpoint.SubmitAfterCommit {
					wantJobs = 1
				}
				if point != failpoint.DuringMigration {
					if n := queryDB(t, db, "SELECT count(*) FROM jobs"); n != wantJobs {
						t.Fatalf("%d jobs after a kill at %s, want %d", n, point, wantJobs)
					}
					if n := queryDB(t, db, "SELECT count(*) FROM tasks"); n != 30*wantJobs {
						t.Fatalf("%d tasks after a kill at %s, want %d", n, point, 30*wantJobs)
					}
				}
				// Submitting again with the key gives the one job.
				r := pcd(t, db, "submit", "--key", "nightly", job)
				if r.code != 0 {
					t.Fatalf("resubmit: exit %d: %s", r.code, r.stderr)
				}
				if n := queryDB(t, db, "SELECT count(*) FROM jobs"); n != 1 {
					t.Fatalf("%d jobs after resubmitting with the key, want 1", n)
				}
				watch = start(t, db, nil, "watch", "--all", "--follow", "--json")
			default:
				if r := pcd(t, db, "submit", "--workers", "3", job); r.code != 0 {
					t.Fatalf("submit: %s", r.stderr)
				}
				watch = start(t, db, nil, "watch", "--all", "--follow", "--json")
				d := startWith(t, db, fail, "daemon")
				d.wait(t, time.Minute)
				if !killedBySIGKILL(d) {
					t.Fatalf("daemon not killed at %s: exit %d\n%s", fail[0], d.cmd.ProcessState.ExitCode(), d.stderr)
				}
			}
			runToEnd(t, db)
			records := checkInvariants(t, db)
			if records != 31 {
				t.Errorf("%d callback records, want 31", records)
			}
			stopWatch(t, watch, records)
			checkWatch(t, watch.stdout.String(), records)
			if point == failpoint.AfterTaskStart {
				if n := queryDB(t, db, "SELECT count(*) FROM tasks WHERE interrupts = 1"); n < 1 {
					t.Errorf("no task counts the interruption")
				}
			}
		})
	}
}

// TestRandomKills SIGKILLs a daemon running several jobs at random
// moments, restarts it each time, and checks every invariant at the end.
func TestRandomKills(t *testing.T) {
	usePlainBinary(t)
	soak, _ := time.ParseDuration(os.Getenv("PCD_SOAK"))
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	t.Logf("seed time %v", time.Now())
	load := &killLoad{dir: dir, rng: rng}
	submit := func() { load.submit(t, db) }
	submit()
	watch := start(t, db, nil, "watch", "--all", "--follow", "--json")
	kills := 0
	killed := map[int]bool{}
	startTime := time.Now()
	for kills < 20 || time.Since(startTime) < soak {
		if soak > 0 && queryDB(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NULL") == 0 {
			submit()
		}
		var d *proc
		if rng.IntN(5) == 0 {
			// Sometimes during start-up and recovery.
			d = start(t, db, nil, "daemon", "--max-jobs", "3")
			time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
		} else {
			d = startDaemon(t, db, "--max-jobs", "3")
			// The daemon has recovered: nothing the last one's tasks
			// started may still run.
			if left := leftovers(db, d.cmd.Process.Pid); len(left) > 0 {
				t.Fatalf("after kill %d: processes of a dead runner's tasks still run: %v", kills, left)
			}
			if kills > 0 {
				checkRuns(t, db, dir, killed)
			}
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		}
		d.cmd.Process.Kill()
		d.wait(t, 10*time.Second)
		killed[d.cmd.Process.Pid] = true
		kills++
		noLeftoversAfterKill(t, db, kills)
		if n := queryDB(t, db, frontierPassesUnfinished); n != 0 {
			t.Fatalf("after kill %d: %d jobs say every task up to done_through is final, and one is not", kills, n)
		}
	}
	runToEnd(t, db)
	if left := leftovers(db, 0); len(left) > 0 {
		t.Errorf("processes of tasks outlived their runner: %v", left)
	}
	if doubles, _ := filepath.Glob(filepath.Join(dir, "double.*")); len(doubles) > 0 {
		t.Errorf("%d tasks ran twice at the same moment: %v", len(doubles), doubles)
	}
	if checkRuns(t, db, dir, killed) == 0 {
		t.Errorf("no command logged its run")
	}
	records := checkInvariants(t, db)
	if want := load.tasks + load.jobs; records != want {
		t.Errorf("%d callback records, want %d", records, want)
	}
	stopWatch(t, watch, records)
	checkWatch(t, watch.stdout.String(), records)
	interrupted := queryDB(t, db, "SELECT count(*) FROM tasks WHERE interrupts > 0")
	failed := queryDB(t, db, "SELECT count(*) FROM results WHERE state = 'failed'")
	t.Logf("kills %d, jobs %d, tasks %d, callbacks %d, tasks interrupted %d, failed after 3 interruptions %d, in %v",
		kills, load.jobs, load.tasks, records, interrupted, failed, time.Since(startTime).Round(time.Second))
}

// killLoad submits the random-kill tests' jobs: no-ops, short sleeps, a
// mix, tasks that fail and retry, and commands that detect running twice
// at once (doubleRunScript).
type killLoad struct {
	dir                string
	rng                *rand.Rand
	tasks, jobs, execs int
}

func (l *killLoad) submit(t *testing.T, db string) {
	t.Helper()
	rng := l.rng
	for _, spec := range []struct {
		n    int
		task func() string
	}{
		{2000, func() string { return `{"kind":"noop"}` }},
		{2000, func() string { return fmt.Sprintf(`{"kind":"sleep","payload":{"secs":%.4f}}`, rng.Float64()*0.004) }},
		{1000, func() string {
			if rng.IntN(2) == 0 {
				return `{"kind":"noop"}`
			}
			return fmt.Sprintf(`{"kind":"sleep","payload":{"secs":%.4f}}`, rng.Float64()*0.01)
		}},
		// Tasks that fail and retry twice, 5-10 ms apart: their waits go
		// through the database across the kills. The commands among them
		// log each run (checkRuns).
		{300, func() string {
			if rng.IntN(3) != 0 {
				return `{"kind":"fail","payload":{"error":"again"},"max_attempts":3,"backoff":{"base":"10ms","cap":"10ms"}}`
			}
			return fmt.Sprintf(`{"kind":"exec","payload":{"argv":["sh","-c",%q]},"max_attempts":3,"backoff":{"base":"10ms","cap":"10ms"}}`,
				logRun(l.dir)+"; exit 1")
		}},
		// Commands with a grandchild, each under a lock of its own: a
		// second copy running while the first still does finds the
		// lock taken and leaves a mark.
		{100, func() string {
			l.execs++
			return fmt.Sprintf(`{"kind":"exec","payload":{"argv":["sh","-c",%q,"sh","%d"]}}`, doubleRunScript(l.dir), l.execs)
		}},
	} {
		var b strings.Builder
		for range spec.n {
			b.WriteString(spec.task())
			b.WriteString(",")
		}
		path := filepath.Join(l.dir, fmt.Sprintf("job%d.json", l.jobs))
		body := `{"workers": 25, "tasks": [` + strings.TrimSuffix(b.String(), ",") + `]}`
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if r := pcd(t, db, "submit", path); r.code != 0 {
			t.Fatalf("submit: %s", r.stderr)
		}
		l.tasks += spec.n
		l.jobs++
	}
}

// doubleRunScript is an exec task's script: under a lock named by its
// first argument it runs a grandchild for 0.2-0.6 s, longer than a
// restart; if the lock is taken, another copy of the task is still
// running, and it leaves a mark, double.N, in dir.
func doubleRunScript(dir string) string {
	return logRun(dir) + `; flock -n -E 99 "` + dir + `/lock.$1" sh -c 'sleep 0.$(($$ % 5 + 2)) & wait'; s=$?; ` +
		`[ $s -ne 99 ] || touch "` + dir + `/double.$1"; exit $s`
}

// logRun is a command that appends the run's PCD_RUN_ID (task uuid and
// attempt) and its runner's pid to dir/runs.log, a line at a time
// (O_APPEND); and the same with "stopped" if its runner stops it
// (SIGTERM: a stop, or a job run that failed and will run again).
func logRun(dir string) string {
	log := `"` + dir + `/runs.log"`
	return `trap 'echo "$PCD_RUN_ID $PCD_RUNNER_PID stopped" >> ` + log + `; exit 143' TERM; echo "$PCD_RUN_ID $PCD_RUNNER_PID" >> ` + log
}

// checkRuns asserts, from the runs that logRun logged, that no runner ran
// an attempt twice, that no attempt is numbered beyond the task's
// max_attempts, and that an attempt ran again only after the run before
// was stopped by its runner, or its runner was killed (an interruption,
// which the database counts only for tasks whose start mark had
// committed; a command starts before its mark commits), or the database
// counted an interruption. killed holds the pids of runners killed, or
// which lost their lease and rejoined, as a new runner in the same
// process. It returns the number of runs.
func checkRuns(t *testing.T, db, dir string, killed map[int]bool) (runs int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "runs.log"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0 // no command has run yet
	}
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		attempt int
		runner  int
	}
	byTask := map[string][]run{}
	stopped := map[string]map[run]int{} // runs stopped by their runner
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		var task, attempt string
		var ok bool
		if len(f) >= 2 {
			task, attempt, ok = strings.Cut(f[0], ".")
		}
		a, err1 := strconv.Atoi(attempt)
		var p int
		var err2 error
		if ok {
			p, err2 = strconv.Atoi(f[1])
		}
		if !ok || err1 != nil || err2 != nil || len(f) > 3 || (len(f) == 3 && f[2] != "stopped") {
			t.Fatalf("runs.log: %q is not a run id and a pid", line)
		}
		if len(f) == 3 {
			if stopped[task] == nil {
				stopped[task] = map[run]int{}
			}
			stopped[task][run{a, p}]++
			continue
		}
		byTask[task] = append(byTask[task], run{a, p})
		runs++
	}
	raw := openRaw(t, db)
	defer raw.Close()
	maxAttempts, interrupts := map[string]int{}, map[string]int{}
	rows, err := raw.Query("SELECT uuid, max_attempts, interrupts FROM tasks WHERE kind = 'exec'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var task string
		var n, i int
		if err := rows.Scan(&task, &n, &i); err != nil {
			t.Fatal(err)
		}
		maxAttempts[task], interrupts[task] = n, i
	}
	rows.Close()
	bad := 0
	for task, rs := range byTask {
		var why string
		seen := map[run]int{}
		// Repeats while the run before was not stopped and its runner
		// lived: only the database's count of interruptions explains them.
		unkilled := 0
		for i, r := range rs {
			switch {
			case r.attempt < 1 || r.attempt > maxAttempts[task]:
				why = fmt.Sprintf("attempt %d of at most %d", r.attempt, maxAttempts[task])
			case seen[r] > stopped[task][r] && !killed[r.runner]:
				why = fmt.Sprintf("attempt %d twice on runner %d", r.attempt, r.runner)
			}
			for _, before := range rs[:i] {
				if before.attempt == r.attempt && before.runner != r.runner && !killed[before.runner] && stopped[task][before] == 0 {
					if unkilled++; unkilled > interrupts[task] {
						why = fmt.Sprintf("attempt %d on runner %d, then on %d, which was not killed, with %d interruptions",
							r.attempt, before.runner, r.runner, interrupts[task])
					}
					break
				}
			}
			seen[r]++
		}
		if why != "" {
			if bad++; bad <= 10 {
				t.Errorf("task %s ran %s (runs %v, %d interruptions)", task, why, rs, interrupts[task])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d tasks ran an attempt twice", bad)
	}
	return runs
}

// checkRunsOf is checkRuns, where the daemons that lost their lease
// (and rejoined) count as killed: they interrupted their tasks.
func checkRunsOf(t *testing.T, db, dir string, daemons []*proc, killed map[int]bool) (runs int) {
	t.Helper()
	for _, d := range daemons {
		if strings.Contains(d.stderr.String(), "lost the lease") {
			killed[d.cmd.Process.Pid] = true
		}
	}
	return checkRuns(t, db, dir, killed)
}

// finishLoad waits, at most within, until the kill load's jobs have
// finished on db, then checks the crash suite's invariants, the callback
// records, the watch that ran throughout, and that no command ran beside
// its rerun (their number is doubles).
func finishLoad(t *testing.T, db, dir string, load *killLoad, watch *proc, daemons []*proc, within time.Duration) (records, doubles int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for queryDB(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NULL") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("jobs unfinished %v after the last fault; a daemon:\n%s", within, tail(daemons[0].stderr.String(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitReleased(t, db)
	records = checkInvariants(t, db)
	if want := load.tasks + load.jobs; records != want {
		t.Errorf("%d callback records, want %d", records, want)
	}
	stopWatch(t, watch, records)
	checkWatch(t, watch.stdout.String(), records)
	found, _ := filepath.Glob(filepath.Join(dir, "double.*"))
	if len(found) > 0 {
		t.Errorf("%d commands ran beside their rerun: %v", len(found), found)
	}
	return records, len(found)
}

// leftovers lists the processes started by tasks of db (they carry PCD_DB
// from the runner, and are not pcd) that do not descend from one of the
// runners' pids: none may outlive the runner that started them.
func leftovers(db string, runners ...int) []int {
	var out []int
	for _, pid := range procPIDs() {
		proc := "/proc/" + strconv.Itoa(pid)
		env, err := os.ReadFile(proc + "/environ")
		if err != nil || !bytes.Contains(env, []byte("\x00PCD_DB="+db+"\x00")) {
			continue
		}
		if exe, _ := os.Readlink(proc + "/exe"); isPCD(exe) {
			continue
		}
		if len(alive([]int{pid})) == 0 {
			continue // a zombie about to be reaped
		}
		mine := false
		for p := pid; p > 1 && !mine; {
			if slices.Contains(runners, p) {
				mine = true
				break
			}
			b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat")
			if err != nil {
				break
			}
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
			p, _ = strconv.Atoi(f[1])
		}
		if !mine {
			out = append(out, pid)
		}
	}
	return out
}

// noLeftoversAfterKill checks, where the runner had a PID namespace
// (root), that nothing its tasks started outlives it by a second: the
// kernel killed it with the namespace, before any runner started again.
// runners are the runners still alive.
func noLeftoversAfterKill(t *testing.T, db string, kills int, runners ...int) {
	t.Helper()
	if os.Geteuid() != 0 {
		return // no namespace: the next runner kills what is left
	}
	deadline := time.Now().Add(time.Second)
	for {
		left := leftovers(db, runners...)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after kill %d: processes of the dead runner's tasks still run a second later: %v", kills, left)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// frontierPassesUnfinished counts jobs whose saved finished prefix
// (done_through) covers a task with no final result.
const frontierPassesUnfinished = `SELECT count(*) FROM jobs j WHERE EXISTS (SELECT 1 FROM tasks t
	WHERE t.job_id = j.id AND t.seq <= j.done_through
	AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq))`

// TestRunRecoversAndResumes kills a pcd run mid-job, then shows that the
// next pcd run says so, and that pcd run --resume finishes the job.
func TestRunRecoversAndResumes(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	// Tasks long enough that their start marks commit before their
	// results: the third commit of start marks comes mid-job.
	job := writeJob(t, dir, "job.json", 20, `{"kind":"sleep","payload":{"secs":0.1}}`)
	p := startWith(t, db, []string{"PCD_FAILPOINT=" + failpoint.AfterTaskStart + ":3"}, "run", "--workers", "2", job)
	p.wait(t, time.Minute)
	if !killedBySIGKILL(p) {
		t.Fatalf("pcd run was not killed: exit %d", p.cmd.ProcessState.ExitCode())
	}
	id := parseOutput(t, strings.SplitN(p.stdout.String(), "\n", 2)[0]+"\n").job
	if queryDB(t, db, "SELECT count(*) FROM running") == 0 {
		t.Fatal("no task was left running by the kill")
	}

	r := pcd(t, db, "run", "../testdata/jobs/sleeps.json")
	if r.code != 0 || !strings.Contains(r.stderr, "1 other unfinished job in") {
		t.Fatalf("run beside an unfinished job: exit %d, stderr %q", r.code, r.stderr)
	}
	if queryDB(t, db, "SELECT count(*) FROM running") != 0 {
		t.Error("the next pcd run did not recover the interrupted tasks")
	}
	r = pcd(t, db, "run", "--resume", id[:8])
	if r.code != 0 {
		t.Fatalf("run --resume: exit %d: %s", r.code, r.stderr)
	}
	if out := parseOutput(t, r.stdout); out.job != id || out.order[len(out.order)-1] != "job" {
		t.Errorf("resumed run printed %q", r.stdout)
	}
	checkInvariants(t, db)
	if n := queryDB(t, db, "SELECT count(*) FROM tasks WHERE interrupts = 1"); n == 0 {
		t.Error("no task counts its interruption")
	}
	if r := pcd(t, db, "run", "--resume", id); r.code != 7 {
		t.Errorf("resuming a finished job: exit %d, want 7", r.code)
	}
}

func TestConcurrentSubmitsWithOneKey(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	job := writeJob(t, dir, "job.json", 50, `{"kind":"noop"}`)
	pcd(t, db, "submit", "--sleep", "1") // create the database first
	const n = 6
	ids := make(chan string, n)
	for range n {
		go func() {
			r := pcd(t, db, "submit", "--key", "deploy-42", job)
			if r.code != 0 {
				t.Errorf("submit: exit %d: %s", r.code, r.stderr)
			}
			ids <- strings.TrimSpace(r.stdout)
		}()
	}
	first := <-ids
	for range n - 1 {
		if id := <-ids; id != first {
			t.Errorf("submits with one key printed %s and %s", first, id)
		}
	}
	if got := queryDB(t, db, "SELECT count(*) FROM jobs WHERE key = 'deploy-42'"); got != 1 {
		t.Errorf("%d jobs with the key, want 1", got)
	}
	if got := queryDB(t, db, "SELECT count(*) FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.key = 'deploy-42'"); got != 50 {
		t.Errorf("%d tasks in the keyed job, want 50", got)
	}
}

// TestKillDuringChunkedSubmit kills a big submit after its first chunk
// has committed: the job stays invisible (pcd jobs, a daemon), the next
// runner to start deletes what was written, and the submit can be made
// again.
func TestKillDuringChunkedSubmit(t *testing.T) {
	usePlainBinary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	// Big enough that its first chunk (store.SubmitChunk of writing)
	// holds a part of it on a machine several times faster than this.
	const n = 200_000
	job := writeJob(t, dir, "big.json", n, `{"kind":"noop"}`)
	p := startWith(t, db, []string{"PCD_FAILPOINT=" + failpoint.SubmitChunkAfterCommit + ":1"}, "submit", "--key", "big", job)
	p.wait(t, 2*time.Minute)
	if !killedBySIGKILL(p) {
		t.Fatalf("submit not killed after its first chunk (is the job too small to be chunked?): exit %d, %s",
			p.cmd.ProcessState.ExitCode(), p.stderr)
	}
	written := queryDB(t, db, "SELECT count(*) FROM tasks")
	if written == 0 || written >= n {
		t.Fatalf("%d tasks written when the submit was killed, want some of %d", written, n)
	}
	if r := pcd(t, db, "jobs", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("pcd jobs shows the half-written job: exit %d, %.300s %s", r.code, r.stdout, r.stderr)
	}
	// A daemon does not run it, and deletes it when it starts.
	d := startDaemon(t, db)
	deadline := time.Now().Add(time.Minute)
	for queryDB(t, db, "SELECT count(*) FROM tasks") > 0 || queryDB(t, db, "SELECT count(*) FROM jobs") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the half-written job is still there a minute after the daemon started:\n%s", d.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := queryDB(t, db, "SELECT count(*) FROM callbacks"); n != 0 {
		t.Errorf("%d callbacks: the half-written job ran", n)
	}
	stopDaemon(t, d)
	if !strings.Contains(d.stderr.String(), "deleted the half-written jobs") {
		t.Errorf("the daemon did not say it deleted the half-written job:\n%s", d.stderr)
	}
	// The key is free again: the submit made again gives the whole job.
	if r := pcd(t, db, "submit", "--key", "big", job); r.code != 0 {
		t.Fatalf("resubmit: exit %d: %s", r.code, r.stderr)
	}
	if got := queryDB(t, db, "SELECT total FROM jobs WHERE staging = 0"); got != n {
		t.Fatalf("resubmitted job has %d tasks, want %d", got, n)
	}
}
