package e2e_test

// End-to-end tests: they build the pcd binary and drive it as a user
// would, with real files, processes and signals.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	_ "modernc.org/sqlite"
)

// pcdBin is pcd built with the race detector: most tests run it.
var pcdBin string

var (
	plainOnce  sync.Once
	plainBin   string
	plainErr   error
	plainTests sync.Map // top-level test name → true
)

// usePlainBinary makes t, and its subtests, run pcd built without the
// race detector. The tests that push tens of thousands of tasks or
// hundreds of kills through it use it: the binary users run, at its own
// speed, reaches more kill points in the same time, and the race-built
// binary in the rest of the suite and the race-built packages' own tests
// keep the race checks.
func usePlainBinary(t *testing.T) {
	t.Helper()
	buildPlain(t)
	root, _, _ := strings.Cut(t.Name(), "/")
	plainTests.Store(root, true)
	t.Cleanup(func() { plainTests.Delete(root) })
}

// buildPlain builds pcd without the race detector, once.
func buildPlain(t testing.TB) string {
	t.Helper()
	plainOnce.Do(func() {
		bin := filepath.Join(filepath.Dir(pcdBin), "pcd-plain")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/pcd-dev/pcd").CombinedOutput()
		if err != nil {
			plainErr = fmt.Errorf("build pcd without -race: %w\n%s", err, out)
			return
		}
		plainBin = bin
	})
	if plainErr != nil {
		t.Fatal(plainErr)
	}
	return plainBin
}

// binary is the pcd binary t runs: pcdBin unless t called usePlainBinary.
func binary(t testing.TB) string {
	root, _, _ := strings.Cut(t.Name(), "/")
	if _, ok := plainTests.Load(root); ok {
		return plainBin
	}
	return pcdBin
}

// isPCD says whether exe is one of the test's pcd binaries.
func isPCD(exe string) bool { return exe == pcdBin || (plainBin != "" && exe == plainBin) }

// raceEnv stops the race-enabled binary from sleeping a second at exit; a
// race it finds still makes it exit 66, which fails the test.
const raceEnv = "GORACE=atexit_sleep_ms=0"

func TestMain(m *testing.M) {
	if out := os.Getenv("PCD_TEST_HOOK_OUT"); out != "" {
		os.Exit(hookHelper(out))
	}
	if path := os.Getenv("PCD_TEST_BIND"); path != "" {
		os.Exit(bindHelper(path))
	}
	dir, err := os.MkdirTemp("", "pcd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pcdBin = filepath.Join(dir, "pcd")
	build := exec.Command("go", "build", "-race", "-o", pcdBin, "github.com/pcd-dev/pcd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build pcd:", err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// pcd runs the binary with PCD_DB set to db and waits for it.
func pcd(t *testing.T, db string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = append(os.Environ(), "PCD_DB="+db, raceEnv)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("pcd %v: %v", args, err)
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

var (
	startLine = regexp.MustCompile(`^Starting Job ([0-9a-f-]{36})$`)
	taskLine  = regexp.MustCompile(`^Task job id=([0-9a-f-]{36}): WorkTaskResult\(id=([0-9a-f-]{36}), number=(\d+), kind=(\w+), time_secs=(\d+\.\d{4})(, state=\w+)?(, error='.*')?\)$`)
	jobLine   = regexp.MustCompile(`^Job ([0-9a-f-]{36}) completed: \{'elapsed_secs': (\d+\.\d{4})(, .*)?\}$`)
)

// parsed is the text output of pcd run.
type parsed struct {
	job      string
	numbers  map[int]int
	taskSecs []float64
	elapsed  float64
	order    []string // "start", "task", "job"
}

func parseOutput(t *testing.T, out string) parsed {
	t.Helper()
	p := parsed{numbers: map[int]int{}}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		switch {
		case startLine.MatchString(line):
			p.job = startLine.FindStringSubmatch(line)[1]
			p.order = append(p.order, "start")
		case taskLine.MatchString(line):
			m := taskLine.FindStringSubmatch(line)
			if m[1] != p.job {
				t.Errorf("task line for job %s, want %s", m[1], p.job)
			}
			n, _ := strconv.Atoi(m[3])
			p.numbers[n]++
			secs, _ := strconv.ParseFloat(m[5], 64)
			p.taskSecs = append(p.taskSecs, secs)
			p.order = append(p.order, "task")
		case jobLine.MatchString(line):
			m := jobLine.FindStringSubmatch(line)
			if m[1] != p.job {
				t.Errorf("job line for job %s, want %s", m[1], p.job)
			}
			p.elapsed, _ = strconv.ParseFloat(m[2], 64)
			p.order = append(p.order, "job")
		default:
			t.Errorf("unexpected output line %q", line)
		}
	}
	return p
}

func TestDemo(t *testing.T) {
	db := filepath.Join(t.TempDir(), "state", "pcd.db")
	r := pcd(t, db, "run", "--demo")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %s", r.code, r.stderr)
	}
	p := parseOutput(t, r.stdout)
	want := "start" + strings.Repeat(" task", 10) + " job"
	if got := strings.Join(p.order, " "); got != want {
		t.Fatalf("output lines %q, want %q", got, want)
	}
	for n := 1; n <= 10; n++ {
		if p.numbers[n] != 1 {
			t.Errorf("task %d printed %d times", n, p.numbers[n])
		}
	}
	// Lines come in completion order: the sleeps end shortest first.
	longest := 0.0
	for i, s := range p.taskSecs {
		if i > 0 && s+0.005 < p.taskSecs[i-1] {
			t.Errorf("task line %d (%.4f s) printed after a longer task (%.4f s)", i+1, s, p.taskSecs[i-1])
		}
		longest = max(longest, s)
	}
	if p.elapsed < longest {
		t.Errorf("elapsed_secs %.4f is less than the longest task's %.4f", p.elapsed, longest)
	}
}

func TestRunJSON(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "run", "--json", "../testdata/jobs/sleeps.json")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 7 {
		t.Fatalf("%d NDJSON lines, want 7 (start, 5 tasks, job):\n%s", len(lines), r.stdout)
	}
	var last int64
	for i, line := range lines {
		var ev struct {
			CallbackID  int64    `json:"callback_id"`
			Event       string   `json:"event"`
			Number      int      `json:"number"`
			TimeSecs    *float64 `json:"time_secs"`
			ElapsedSecs *float64 `json:"elapsed_secs"`
			Outcome     string   `json:"outcome"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %d is not JSON: %v", i+1, err)
		}
		switch {
		case i == 0:
			if ev.Event != "start" {
				t.Errorf("first event %q, want start", ev.Event)
			}
			continue
		case i == len(lines)-1:
			if ev.Event != "job" || ev.ElapsedSecs == nil || ev.Outcome != "succeeded" {
				t.Errorf("last line %s, want a succeeded job event with elapsed_secs", line)
			}
		default:
			if ev.Event != "task" || ev.TimeSecs == nil || ev.Number < 1 {
				t.Errorf("line %d: %s, want a task event", i+1, line)
			}
		}
		if ev.CallbackID <= last {
			t.Errorf("line %d: callback_id %d not after %d", i+1, ev.CallbackID, last)
		}
		last = ev.CallbackID
	}
}

func TestExitCodeWhenATaskFails(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "run", "../testdata/jobs/some-fail.json")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "state=failed, error='upstream said no'") {
		t.Errorf("no failed task line in:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "failed: 1 of 3 tasks failed") {
		t.Errorf("stderr %q does not say the job failed", r.stderr)
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestBadJobFilesChangeNothing(t *testing.T) {
	cases := map[string]string{
		"not-json.json":        "line 3, column 21: invalid character",
		"empty.json":           "empty input",
		"unknown-kind.json":    `task 2: unknown task kind "slep"`,
		"missing-kind.json":    `task 3: missing "kind"`,
		"missing-secs.json":    `task 1: sleep: missing "secs"`,
		"negative-sleep.json":  "task 2: sleep: secs must not be negative, got -1",
		"bad-duration.json":    `task 1: sleep: secs: not a duration such as "250ms": "ten seconds"`,
		"no-tasks.json":        "no tasks",
		"unknown-field.json":   `unknown field "worker"`,
		"wrong-type.json":      `"workers" must be int, got string`,
		"cut-short.json":       "the JSON is cut short",
		"two-objects.json":     "line 2, column 1: unexpected data after the job object",
		"task-wrong-type.json": `task 2: "max_attempts" must be int, got string`,
		// What encoding/json lets pass, refused (strictJSON).
		"field-case.json":         `task 2: unknown field "KIND" (names are case-sensitive: "kind")`,
		"duplicate-key.json":      `task 1: key "kind" is given twice in one object`,
		"not-utf8.json":           `"name": the JSON is not valid UTF-8`,
		"payload-field-case.json": `task 1: exec: payload: unknown field "ARGV"`,
	}
	files, _ := filepath.Glob("../testdata/bad/*.json")
	if len(files) != len(cases) {
		t.Fatalf("%d files in testdata/bad, %d cases: keep them in step", len(files), len(cases))
	}
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.db")
	if r := pcd(t, existing, "run", "../testdata/jobs/sleeps.json"); r.code != 0 {
		t.Fatalf("setup run: exit %d: %s", r.code, r.stderr)
	}
	before := fileSum(t, existing)
	// An empty idempotency key is refused too.
	if r := pcd(t, existing, "submit", "--key", "", "--", "true"); r.code != 2 || !strings.Contains(r.stderr, "--key is empty") {
		t.Errorf("--key '': exit %d, %s", r.code, r.stderr)
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			fresh := filepath.Join(dir, name+".db")
			for _, db := range []string{fresh, existing} {
				r := pcd(t, db, "run", filepath.Join("../testdata/bad", name))
				if r.code != 2 {
					t.Errorf("exit %d, want 2", r.code)
				}
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr %q does not contain %q", r.stderr, want)
				}
				if n := strings.Count(r.stderr, "\n"); n != 1 {
					t.Errorf("stderr has %d lines, want 1: %q", n, r.stderr)
				}
			}
			if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
				t.Error("a bad job file created a database")
			}
			if fileSum(t, existing) != before {
				t.Error("a bad job file changed the database")
			}
		})
	}
}

func TestRefusesUnusableDatabase(t *testing.T) {
	dir := t.TempDir()
	notDB := filepath.Join(dir, "notes.txt")
	os.WriteFile(notDB, []byte("remember the milk\n"), 0o600)

	newer := filepath.Join(dir, "newer.db")
	if r := pcd(t, newer, "run", "../testdata/jobs/sleeps.json"); r.code != 0 {
		t.Fatalf("setup: %s", r.stderr)
	}
	raw, err := sql.Open("sqlite", newer)
	if err != nil {
		t.Fatal(err)
	}
	_, err = raw.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future.sql', 0)")
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{notDB: "not a SQLite database", newer: "newer than this pcd"} {
		before := fileSum(t, path)
		r := pcd(t, path, "run", "--demo")
		if r.code != 3 || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: exit %d, stderr %q; want 3 and %q", filepath.Base(path), r.code, r.stderr, want)
		}
		if fileSum(t, path) != before {
			t.Errorf("%s was changed", filepath.Base(path))
		}
	}
	// Paths where no database can be: a symlink to nothing (nothing is
	// created at its target), a place under /proc.
	dangling := filepath.Join(dir, "dangling.db")
	target := filepath.Join(dir, "missing", "target.db")
	if err := os.Symlink(target, dangling); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{dangling, "/proc/self/pcd.db"} {
		r := pcd(t, path, "submit", "--", "true")
		if r.code != 3 || !strings.Contains(r.stderr, "no database can be opened or made") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("%s: exit %d, stderr %q; want 3 and one line", path, r.code, r.stderr)
		}
	}
	if _, err := os.Lstat(filepath.Dir(target)); err == nil {
		t.Errorf("a database was made through the dangling symlink")
	}
}

// TestSignalLetsRunningTasksFinish sends SIGINT mid-job: the running tasks
// finish and are recorded, no new task starts, and the rest stay pending.
func TestSignalLetsRunningTasksFinish(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	job := `{"workers": 2, "tasks": [` + strings.TrimSuffix(strings.Repeat(`{"kind":"sleep","payload":{"secs":0.4}},`, 12), ",") + `]}`
	jobFile := filepath.Join(dir, "job.json")
	os.WriteFile(jobFile, []byte(job), 0o600)

	cmd := exec.Command(pcdBin, "run", jobFile)
	cmd.Env = append(os.Environ(), "PCD_DB="+db, raceEnv)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	var out []string
	for lines.Scan() {
		out = append(out, lines.Text())
		if strings.HasPrefix(lines.Text(), "Task ") {
			break // the first pair of tasks is done; the second pair is running
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for lines.Scan() { // the same scanner: it may have read ahead
		out = append(out, lines.Text())
	}
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("exit %d, want 130; stderr %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "it is paused: `pcd run --resume") {
		t.Errorf("stderr %q does not say the job was stopped and paused", stderr.String())
	}
	printed := 0
	for _, l := range out {
		if strings.HasPrefix(l, "Task ") {
			printed++
		}
		if strings.HasPrefix(l, "Job ") {
			t.Errorf("a stopped job printed its completion: %s", l)
		}
	}
	raw, err := sql.Open("sqlite", rawDSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var done, pending, attempts int
	raw.QueryRow("SELECT count(*) FROM results WHERE state = 'succeeded'").Scan(&done)
	raw.QueryRow(`SELECT count(*), coalesce(sum(attempts), 0) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.seq = t.seq)
		AND NOT EXISTS (SELECT 1 FROM running u WHERE u.job_id = t.job_id AND u.seq = t.seq)`).Scan(&pending, &attempts)
	if done != printed || done+pending != 12 {
		t.Errorf("%d tasks succeeded, %d printed, %d pending; want printed = succeeded and 12 in all", done, printed, pending)
	}
	if done < 2 || done >= 12 {
		t.Errorf("%d tasks done: the running ones should finish and the rest should not start", done)
	}
	if want := fmt.Sprintf("stopped with %d of 12 tasks done", done); !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q does not say %q", stderr.String(), want)
	}
	if attempts != 0 {
		t.Errorf("pending tasks spent %d attempts", attempts)
	}
	daemonLeavesPaused(t, db)
}

// daemonLeavesPaused checks that a daemon leaves alone the one job in db,
// which its pcd run's user stopped: it runs a job submitted after it, and
// the stopped job's count of results does not move.
func daemonLeavesPaused(t *testing.T, db string) {
	t.Helper()
	stopped := queryString(t, db, "SELECT uuid FROM jobs")
	if p := queryDB(t, db, "SELECT paused FROM jobs"); p != 1 {
		t.Fatalf("the stopped job's paused is %d, want 1", p)
	}
	before := queryDB(t, db, "SELECT count(*) FROM results")
	d := startDaemon(t, db)
	defer stopDaemon(t, d)
	later := strings.TrimSpace(pcd(t, db, "submit", "--sleep", "1").stdout)
	waitFor(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL AND uuid = '"+later+"'", 1)
	if n := queryDB(t, db, "SELECT count(*) FROM results WHERE job_id = (SELECT id FROM jobs WHERE uuid = '"+stopped+"')"); n != before {
		t.Errorf("the daemon ran the stopped job: %d results, %d before", n, before)
	}
	if st := pcd(t, db, "status").stdout; !strings.Contains(st, "1 paused") {
		t.Errorf("pcd status does not count the stopped job as paused:\n%s", st)
	}
}

// rawDSN opens db from a test as any other reader would: waiting, not
// failing, while pcd holds a lock for a moment (a checkpoint, say).
func rawDSN(db string) string { return db + "?_pragma=busy_timeout(10000)" }

// otherConn is another process's connection to db (this test's), inside
// the transaction that begin starts: "BEGIN IMMEDIATE" holds the write
// lock, "BEGIN" with a read holds a snapshot. It ends at the test's end.
func otherConn(t *testing.T, db, begin string) *sql.Conn {
	t.Helper()
	raw, err := sql.Open("sqlite", rawDSN(db))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := raw.Conn(ctx)
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.ExecContext(ctx, "ROLLBACK")
		conn.Close()
		raw.Close()
	})
	if _, err := conn.ExecContext(ctx, begin); err != nil {
		t.Fatal(err)
	}
	return conn
}

// pcd run on a SQLite file leaves no directory of live output behind in
// the user's runtime directory.
func TestRunLeavesNoLiveDirectory(t *testing.T) {
	tmp := t.TempDir()
	cmd := exec.Command(pcdBin, "run", "--", "true", ":::", "a", "b")
	cmd.Env = append(os.Environ(), "PCD_DB="+filepath.Join(t.TempDir(), "pcd.db"), "TMPDIR="+tmp, "XDG_RUNTIME_DIR=", raceEnv)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pcd run: %v\n%s", err, out)
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "pcd-*", "*.live"))
	if len(left) > 0 {
		t.Errorf("pcd run left %v behind", left)
	}
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "pcd-*")); len(dirs) != 1 {
		t.Errorf("the runtime directory was not used (%v): the test tests nothing", dirs)
	}
}
