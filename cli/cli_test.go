package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The tests name their databases; a user's PCD_* settings (PCD_DB
	// above all) must not reach them.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "PCD_") {
			os.Unsetenv(name)
		}
	}
	goleak.VerifyTestMain(m)
}

// pcd runs the command line in this process, with its output in buffers.
// Tests that call it do not run in parallel: urfave/cli's help, version
// and completion flags are package globals it writes as it parses.
func pcd(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = Run(context.Background(), append([]string{"pcd"}, args...), Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut})
	return out.String(), errOut.String(), err
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRunPrintsTheCallbackLines: pcd run of a job file prints a task line
// per task, in the long format, then the job line with its elapsed time.
func TestRunPrintsTheCallbackLines(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	job := writeFile(t, "job.json", `{"name": "three", "workers": 1, "tasks": [{"kind": "noop"}, {"kind": "noop"}, {"kind": "fail", "payload": {"error": "no luck"}}]}`)
	stdout, stderr, err := pcd(t, "", "--db", db, "run", job)
	var failed jobFailed
	if !errors.As(err, &failed) {
		t.Fatalf("run: %v, want the job-failed error; stderr:\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	task := regexp.MustCompile(`^Task job id=[0-9a-f-]{36}: WorkTaskResult\(id=[0-9a-f-]{36}, number=(\d), kind=(noop|fail), time_secs=\d+\.\d{4}`)
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "Starting Job ") {
		t.Fatalf("%d lines, want the start, 3 tasks and the job:\n%s", len(lines), stdout)
	}
	lines = lines[1:]
	for i, line := range lines[:3] {
		m := task.FindStringSubmatch(line)
		if m == nil || m[1] != string(rune('1'+i)) {
			t.Errorf("line %d is not task %d's: %q", i+1, i+1, line)
		}
	}
	if !strings.Contains(lines[2], "state=failed") || !strings.Contains(lines[2], "no luck") {
		t.Errorf("the failed task's line does not say why: %q", lines[2])
	}
	if !strings.HasPrefix(lines[3], "Job ") || !strings.Contains(lines[3], "'outcome': 'failed'") {
		t.Errorf("the last line is not the job's: %q", lines[3])
	}
}

// TestUsageErrorsWriteNothing: a bad flag or source is a usage error, and
// leaves no database behind.
func TestUsageErrorsWriteNothing(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	job := writeFile(t, "job.json", `{"tasks": [{"kind": "noop"}]}`)
	cases := [][]string{
		{"run", "--workers", "0", job},
		{"run", "--queue-size", "-1", job},
		{"run", "--demo", job},
		{"submit", "--max-payload", "0", job},
		{"daemon", "--max-jobs", "0"},
		{"prune"},
		{"run", writeFile(t, "bad.json", `{"tasks": [{"kind": "slep"}]}`)},
	}
	for _, args := range cases {
		_, _, err := pcd(t, "", append([]string{"--db", db}, args...)...)
		if !errors.Is(err, ErrUsage) && !errors.Is(err, engine.ErrBadJob) {
			t.Errorf("pcd %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a usage error created the database: %v", err)
	}
}

// TestReadersOnAMissingDatabase: pcd jobs on a path given explicitly that
// does not exist says so and creates nothing.
func TestReadersOnAMissingDatabase(t *testing.T) {
	db := filepath.Join(t.TempDir(), "nope.db")
	if _, _, err := pcd(t, "", "--db", db, "jobs"); !errors.Is(err, store.ErrNoDatabase) {
		t.Fatalf("jobs on a missing database: %v, want ErrNoDatabase", err)
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pcd jobs created the database")
	}
}

func TestErrorLine(t *testing.T) {
	t.Parallel()
	if got := ErrorLine(errors.New("bad \x1b[2Jkind\nnext")); got != `bad \x1b[2Jkind\nnext` {
		t.Errorf("escaped: %q", got)
	}
	long := errors.New("job file x: task 1: noop: takes no payload, got " + strings.Repeat("é", 5000) + " (the end)")
	got := ErrorLine(long)
	if len(got) > maxErrorLine+100 || !strings.HasPrefix(got, "job file x: task 1") || !strings.HasSuffix(got, "(the end)") {
		t.Errorf("cut: %d bytes, %.60q … %q", len(got), got, got[max(len(got)-20, 0):])
	}
	if !strings.Contains(got, "bytes cut") || !utf8Valid(got) {
		t.Errorf("the cut is not marked, or splits a character: %q", got[maxErrorLine*3/4-10:maxErrorLine*3/4+40])
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestPrintable(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain":             "plain",
		"tab\there":         `tab\there`,
		"bell\a":            `bell\x07`,
		"rtl\u202eevil":     `rtl\u202eevil`,
		"bad \xff byte":     `bad \xff byte`,
		"c1 \u009b control": `c1 \u009b control`,
		"ünïcödé is fine ✓": "ünïcödé is fine ✓",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFlagsAfterArguments: a command's flags may follow its arguments, as
// docs/commands.md's synopses write them; a lone "-" stays an argument.
func TestFlagsAfterArguments(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	job := writeFile(t, "job.json", `{"name": "late flags", "tasks": [{"kind": "noop"}, {"kind": "fail", "payload": {"error": "no"}}]}`)
	if _, stderr, err := pcd(t, "", "run", job, "--db", db, "--quiet"); !errors.Is(err, ErrJobFailed) {
		t.Fatalf("run JOB --db --quiet: %v, want the job to fail; stderr:\n%s", err, stderr)
	}
	jobs, _, err := pcd(t, "", "jobs", "--db", db, "--json")
	if err != nil {
		t.Fatal(err)
	}
	id := regexp.MustCompile(`"job_id": "([0-9a-f-]{36})"`).FindStringSubmatch(jobs)
	if id == nil {
		t.Fatalf("no job id in %q", jobs)
	}
	status, _, err := pcd(t, "", "status", id[1][:8], "--db", db, "--json")
	if err != nil || !strings.HasPrefix(status, "{") || !strings.Contains(status, `"name": "late flags"`) {
		t.Errorf("status ID --json: %v, %q; want the job as JSON", err, status)
	}
	tasks, _, err := pcd(t, "", "tasks", id[1][:8], "--state", "failed", "--db", db, "--json")
	if err != nil || strings.Count(tasks, `"state":"failed"`) != 1 || strings.Contains(tasks, `"state":"succeeded"`) {
		t.Errorf("tasks ID --state failed --json: %v, %q; want the one failed task", err, tasks)
	}
	if _, _, err := pcd(t, `{"kind": "noop"}`+"\n", "submit", "-", "--db", db, "--max-payload", "100"); err != nil {
		t.Errorf("submit - --max-payload 100: %v", err)
	}
}
