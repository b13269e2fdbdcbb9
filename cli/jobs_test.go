package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestTasksTable: pcd tasks shows each exec task's command and exit code,
// and a failed task's error.
func TestTasksTable(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	if _, _, err := pcd(t, "echo alpha\nexit 7\n", "--db", db, "run", "--lines", "-", "-k"); err == nil {
		t.Fatal("run: want the job to fail")
	}
	if _, _, err := pcd(t, "", "--db", db, "run", "--", "printf", "%s\n", "a b", "it's"); err != nil {
		t.Fatal(err)
	}
	jobs, _, err := pcd(t, "", "--db", db, "jobs")
	if err != nil {
		t.Fatal(err)
	}
	ids := regexp.MustCompile(`(?m)^([0-9a-f]{8}) `).FindAllStringSubmatch(jobs, -1)
	if len(ids) != 2 || !strings.Contains(jobs, "ELAPSED") {
		t.Fatalf("jobs:\n%s", jobs)
	}
	out, _, err := pcd(t, "", "--db", db, "tasks", ids[1][1])
	if err != nil {
		t.Fatal(err)
	}
	// NUMBER STATE EXIT TIME CPU MEM ATTEMPTS COMMAND ERROR, where MEM is
	// "-" (below the runner's peak) or "N KiB" or "N.N MiB".
	rows := regexp.MustCompile(`(?m)^\s*(\d+)\s+(\w+)\s+(\S+)\s+\S+\s+\S+\s+(?:-|[\d.]+ [KMG]iB)\s+(\d+)\s+(.*)$`)
	want := []struct{ state, exit, rest string }{{"succeeded", "0", "echo alpha"}, {"failed", "7", "exit 7      exit status 7"}}
	got := rows.FindAllStringSubmatch(out, -1)
	if len(got) != 2 || !strings.HasPrefix(out, "NUMBER  STATE ") {
		t.Fatalf("tasks:\n%s", out)
	}
	for i, w := range want {
		if got[i][2] != w.state || got[i][3] != w.exit || strings.TrimSpace(got[i][5]) != w.rest {
			t.Errorf("row %d: %q, want %s, exit %s, %q", i+1, got[i][0], w.state, w.exit, w.rest)
		}
	}
	out, _, _ = pcd(t, "", "--db", db, "tasks", ids[0][1])
	if !strings.Contains(out, `printf '%s\n' 'a b' 'it'"'"'s'`) {
		t.Errorf("an argv command is not shown quoted as for sh:\n%s", out)
	}
}

// TestTaskTableFitsTheTerminal: on a terminal, the command and the error
// are cut so that each row fits.
func TestTaskTableFitsTheTerminal(t *testing.T) {
	t.Parallel()
	rows := [][]string{
		{"1", "failed", "1", "2ms", "1ms", "512 KiB", "1", strings.Repeat("long command ", 20), strings.Repeat("long error ", 20)},
		{"2", "succeeded", "0", "1.5s", "1.2s", "20.5 MiB", "1", "short", ""},
	}
	var b bytes.Buffer
	if err := taskTable(&b, true, rows, 80); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if n := utf8.RuneCountInString(line); n > 80 || strings.HasSuffix(line, " ") {
			t.Errorf("%d columns, or trailing spaces: %q", n, line)
		}
	}
	if !strings.Contains(b.String(), "long comm…") || !strings.Contains(b.String(), "long error…") {
		t.Errorf("the cut is not marked:\n%s", b.String())
	}
}

func TestHumanDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		850 * time.Microsecond:                     "850µs",
		12 * time.Millisecond:                      "12ms",
		3400 * time.Millisecond:                    "3.4s",
		2*time.Minute + 5*time.Second:              "2m05s",
		time.Hour + 2*time.Minute + 59*time.Second: "1h02m",
		76 * time.Hour:                             "3d04h",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestJobsBeforeTheFirstSubmit: pcd jobs on the default database, which
// the first submit makes, lists no jobs and creates nothing; a submit
// with no daemon says that the job waits.
func TestJobsBeforeTheFirstSubmit(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	t.Setenv("PCD_DB", "")
	out, _, err := pcd(t, "", "jobs")
	if err != nil || strings.TrimSpace(out) != "ID  NAME  STATE  DONE  FAILED  ELAPSED  CREATED" {
		t.Errorf("jobs: %v, %q; want the empty table", err, out)
	}
	if out, _, err = pcd(t, "", "jobs", "--json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("jobs --json: %v, %q; want []", err, out)
	}
	if _, err := os.Stat(filepath.Join(state, "pcd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pcd jobs made the state directory: %v", err)
	}
	_, stderr, err := pcd(t, "", "submit", "--", "true")
	if err != nil || !strings.Contains(stderr, "no daemon is running on ") || !strings.Contains(stderr, "waits until `pcd daemon` starts") {
		t.Errorf("submit with no daemon: %v, stderr %q; want a note that the job waits", err, stderr)
	}
}
