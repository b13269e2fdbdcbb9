package cli

import (
	"errors"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func lines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }

// TestRunPrintsCommandOutput: pcd run of exec tasks prints what the
// commands printed, stdout to stdout and stderr to stderr, a task at a
// time; the callback lines step aside, and a failed task gets a note.
func TestRunPrintsCommandOutput(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	cmds := strings.Join([]string{
		"echo alpha",
		"echo beta >&2; exit 3",
		"echo g1; sleep 0.2; echo g2",
		"echo d1; sleep 0.1; echo d2",
	}, "\n")
	stdout, stderr, err := pcd(t, cmds, "--db", db, "run", "--lines", "-")
	if !errors.Is(err, ErrJobFailed) {
		t.Fatalf("run: %v, want the job to fail (task 2 exits 3); stderr:\n%s", err, stderr)
	}
	got := lines(stdout)
	for _, pair := range [][2]string{{"g1", "g2"}, {"d1", "d2"}} {
		i := slices.Index(got, pair[0])
		if i < 0 || i+1 >= len(got) || got[i+1] != pair[1] {
			t.Errorf("%s and %s are not together (the output is not grouped per task): %q", pair[0], pair[1], got)
		}
	}
	slices.Sort(got)
	if want := []string{"alpha", "d1", "d2", "g1", "g2"}; !slices.Equal(got, want) {
		t.Errorf("stdout holds %q, want the commands' stdout alone, %q", got, want)
	}
	for _, want := range []string{"beta\n", "pcd: task 2 of job ", " failed: exit status 3\n"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not hold %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stdout+stderr, "WorkTaskResult") {
		t.Errorf("callback lines printed without --verbose:\n%s\n%s", stdout, stderr)
	}

	// --verbose adds the callback lines, on stderr.
	stdout, stderr, _ = pcd(t, "echo hi\n", "--db", db, "run", "--lines", "-", "-v")
	if stdout != "hi\n" || !strings.Contains(stderr, "Starting Job ") || !strings.Contains(stderr, "WorkTaskResult(") {
		t.Errorf("--verbose: stdout %q, stderr %q; want the output on stdout and the callback lines on stderr", stdout, stderr)
	}
	// --no-output prints the callback lines instead, on stdout.
	stdout, _, _ = pcd(t, "echo hi\n", "--db", db, "run", "--lines", "-", "--no-output")
	if strings.Contains(stdout, "hi\n") || !strings.Contains(stdout, "kind=exec") {
		t.Errorf("--no-output: stdout %q; want callback lines, not the output", stdout)
	}
}

// TestKeepOrder: --keep-order prints tasks in task order in pcd run, and
// in pcd watch, which reads back the output of tasks it held.
func TestKeepOrder(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	cmds := "sleep 0.3; echo one\nsleep 0.1; echo two\necho three\necho four\n"
	stdout, stderr, err := pcd(t, cmds, "--db", db, "run", "--lines", "-", "--keep-order")
	if err != nil || stdout != "one\ntwo\nthree\nfour\n" {
		t.Fatalf("run -k: %v, stdout %q; want the tasks in order; stderr:\n%s", err, stdout, stderr)
	}
	stdout, _, err = pcd(t, "", "--db", db, "watch", "--all")
	if err != nil || stdout == "one\ntwo\nthree\nfour\n" {
		t.Fatalf("watch: %v, %q; want the output as the tasks completed (the test needs it out of order)", err, stdout)
	}
	stdout, stderr, err = pcd(t, "", "--db", db, "watch", "--all", "-k", "-v")
	if err != nil || stdout != "one\ntwo\nthree\nfour\n" {
		t.Errorf("watch -k: %v, stdout %q; want the tasks in order; stderr:\n%s", err, stdout, stderr)
	}
	if !regexp.MustCompile(`(?m)^Job [0-9a-f-]{36} completed`).MatchString(stderr) {
		t.Errorf("watch -k: no job line on stderr:\n%s", stderr)
	}
}

// TestShortEvents: --format short prints events in lines that fit a
// terminal; the long lines stay with --format long.
func TestShortEvents(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	job := writeFile(t, "job.json", `{"workers": 1, "tasks": [{"kind": "noop"}, {"kind": "fail", "payload": {"error": "no luck"}}]}`)
	stdout, _, err := pcd(t, "", "--db", db, "run", "--format", "short", job)
	if !errors.Is(err, ErrJobFailed) {
		t.Fatalf("run: %v", err)
	}
	want := regexp.MustCompile(`^job [0-9a-f-]{36} started: 2 tasks
[0-9a-f]{8} #1 noop succeeded \d+(µs|ms)
[0-9a-f]{8} #2 fail failed \d+(µs|ms): no luck
[0-9a-f]{8} job failed in \d+(µs|ms): 1 of 2 tasks failed, 0 cancelled
$`)
	if !want.MatchString(stdout) {
		t.Errorf("short events:\n%s", stdout)
	}
	for _, line := range lines(stdout) {
		if len(line) > 80 {
			t.Errorf("a line of %d characters: %q", len(line), line)
		}
	}
	if _, _, err := pcd(t, "", "--db", filepath.Join(t.TempDir(), "x.db"), "run", "--format", "shrt", job); !errors.Is(err, ErrUsage) {
		t.Errorf("--format shrt: %v, want a usage error", err)
	}
}
