package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// GNU parallel's arguments, side by side: the same command line through
// pcd run and through parallel prints the same. pcd's
// default is argv words, parallel -q's; pcd --shell is parallel's own.
func TestArgsLikeParallel(t *testing.T) {
	gnu, err := exec.LookPath("parallel")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("GNU parallel is not installed (.ci/run installs it): %v", err)
		}
		t.Skip("GNU parallel is not installed")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	tricky := []string{"dir/sub/file.tar.gz", "a b.txt", "noext", "/abs/path.x", ".hidden", "dir.d/file", "quote's",
		"/", "a/", "..", "x.", "x/.y", "", `$HOME`, "*", "two  spaces", "tab\there", `back\slash`, "-n", "é.ü"}
	list := filepath.Join(dir, "list")
	os.WriteFile(list, []byte(strings.Join(tricky, "\n")+"\n"), 0o600)
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("1\n2 two\n3"), 0o600) // no newline at the end
	all := append([]string{":::"}, tricky...)
	cases := []struct {
		name  string
		pcd   []string // after pcd run -k
		gnu   []string // after parallel -k
		stdin string
	}{
		{"replacement strings", append([]string{"--", "printf", `%s|%s|%s|%s|%s|%s\n`, "{}", "{.}", "{/}", "{//}", "{/.}", "{#}"}, all...),
			append([]string{"-q", "printf", `%s|%s|%s|%s|%s|%s\n`, "{}", "{.}", "{/}", "{//}", "{/.}", "{#}"}, all...), ""},
		{"cross product", []string{"--", "printf", `%s-%s<%s>\n`, "{1}", "{2/.}", "{#}", ":::", "a", "b", "c", ":::", "x/y.z", "w"},
			[]string{"-q", "printf", `%s-%s<%s>\n`, "{1}", "{2/.}", "{#}", ":::", "a", "b", "c", ":::", "x/y.z", "w"}, ""},
		{"no replacement string", []string{"--", "echo", ":::", "a", "b", ":::", "c d", "e"},
			[]string{"-q", "echo", ":::", "a", "b", ":::", "c d", "e"}, ""},
		{"{} of two sources", []string{"--", "printf", `<%s>\n`, "{}", ":::", "a", "b", ":::", "c d"},
			[]string{"-q", "printf", `<%s>\n`, "{}", ":::", "a", "b", ":::", "c d"}, ""},
		{"linked sources", []string{"--", "printf", `%s=%s\n`, "{1}", "{2}", ":::", "a", "b", "c", ":::+", "1", "2"},
			[]string{"-q", "printf", `%s=%s\n`, "{1}", "{2}", ":::", "a", "b", "c", ":::+", "1", "2"}, ""},
		{":::: files", []string{"--", "printf", `[%s][%s]\n`, "{1}", "{2}", "::::", list, other},
			[]string{"-q", "printf", `[%s][%s]\n`, "{1}", "{2}", "::::", list, other}, ""},
		{"stdin", []string{"--args", "-", "--", "printf", `<%s>\n`},
			[]string{"-q", "printf", `<%s>\n`}, strings.Join(tricky, "\n")},
		// The shells differ (parallel runs $SHELL, pcd /bin/sh): no echo.
		{"--shell", append([]string{"--shell", "--", `printf "%s|%s\n" {} {/.} | tr a-z A-Z`}, all...),
			append([]string{`printf "%s|%s\n" {} {/.} | tr a-z A-Z`}, all...), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := exec.Command(gnu, append([]string{"--will-cite", "-k"}, c.gnu...)...)
			want.Stdin = strings.NewReader(c.stdin)
			want.Env = append(os.Environ(), "HOME=/home/nobody")
			wantOut, err := want.Output()
			if err != nil {
				t.Fatalf("parallel: %v", err)
			}
			t.Setenv("HOME", "/home/nobody")
			r := pcdIn(t, dir, db, c.stdin, append([]string{"run", "-k"}, c.pcd...)...)
			if r.code != 0 {
				t.Fatalf("pcd run: exit %d: %s", r.code, r.stderr)
			}
			if r.stdout != string(wantOut) {
				t.Errorf("pcd and parallel differ:\npcd:\n%s\nparallel:\n%s", r.stdout, wantOut)
			}
		})
	}
}

// --halt now,fail=1, side by side with GNU parallel at -j1 and -j4, on
// both stores: the same tasks start (none after the failure that meets the
// policy), the exit code is 1, the job ends failed, and the tasks the halt
// stopped are recorded as cancelled with the attempt they ran and their
// time.
func TestHaltLikeParallel(t *testing.T) {
	gnu, err := exec.LookPath("parallel")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("GNU parallel is not installed (.ci/run installs it): %v", err)
		}
		t.Skip("GNU parallel is not installed")
	}
	cases := []struct {
		name, workers, script string
		inputs                []string
	}{
		// Task 3 fails at once; the others take 50 ms.
		{"j1", "1", "if [ {} = 3 ]; then exit 1; fi; sleep 0.05", []string{"1", "2", "3", "4", "5", "6", "7", "8"}},
		// Task 3 fails after 0.3 s, while 1, 2 and 4 run (1 s each).
		{"j4", "4", "if [ {} = 3 ]; then sleep 0.3; exit 1; fi; sleep 1", []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}},
	}
	started := func(t *testing.T, file string) string {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Fields(string(b))
		slices.Sort(lines)
		return strings.Join(lines, " ")
	}
	for _, c := range cases {
		dir := t.TempDir()
		starts := filepath.Join(dir, "parallel.starts")
		script := "echo {} >> " + starts + "; " + c.script
		cmd := exec.Command(gnu, append([]string{"--will-cite", "--halt", "now,fail=1", "-j", c.workers, script, ":::"}, c.inputs...)...)
		if err := cmd.Run(); cmd.ProcessState.ExitCode() != 1 {
			t.Fatalf("%s: parallel exited %d (%v), want 1", c.name, cmd.ProcessState.ExitCode(), err)
		}
		want := started(t, starts)
		for _, store := range bothStores {
			t.Run(c.name+"/"+store.name, func(t *testing.T) {
				db := store.db(t)
				starts := filepath.Join(t.TempDir(), "pcd.starts")
				script := "echo {} >> " + starts + "; " + c.script
				r := pcd(t, db, append([]string{"run", "--json", "--halt", "now,fail=1", "-w", c.workers, "--shell", "--", script, ":::"}, c.inputs...)...)
				if r.code != 1 {
					t.Fatalf("pcd run exited %d, want 1:\n%s", r.code, r.stderr)
				}
				if got := started(t, starts); got != want {
					t.Errorf("pcd started %q, parallel %q", got, want)
				}
				var jobs []struct {
					ID string `json:"job_id"`
				}
				if err := json.Unmarshal([]byte(pcd(t, db, "jobs", "--json").stdout), &jobs); err != nil || len(jobs) != 1 {
					t.Fatalf("pcd jobs --json: %v, %d jobs", err, len(jobs))
				}
				out := pcd(t, db, "tasks", "--json", jobs[0].ID)
				for _, line := range strings.Split(strings.TrimSpace(out.stdout), "\n") {
					var task struct {
						Number   int64   `json:"number"`
						State    string  `json:"state"`
						Attempts int     `json:"attempts"`
						Time     float64 `json:"time_secs"`
					}
					if err := json.Unmarshal([]byte(line), &task); err != nil {
						t.Fatalf("pcd tasks --json: %v: %q", err, line)
					}
					ran := slices.Contains(strings.Fields(want), strconv.FormatInt(task.Number, 10))
					switch {
					case task.Number == 3 && task.State != "failed":
						t.Errorf("task 3 is %s, want failed", task.State)
					case task.Number != 3 && ran && c.workers != "1" && (task.State != "cancelled" || task.Attempts != 1 || task.Time <= 0):
						t.Errorf("task %d, stopped by the halt, is %s with %d attempts in %vs; want cancelled, 1 attempt, its time", task.Number, task.State, task.Attempts, task.Time)
					case !ran && (task.State != "cancelled" || task.Attempts != 0):
						t.Errorf("task %d never started, and is %s with %d attempts; want cancelled, 0", task.Number, task.State, task.Attempts)
					}
				}
				if st := queryDB(t, db, "SELECT count(*) FROM jobs WHERE state = 'failed'"); st != 1 {
					t.Errorf("the halted job did not end failed")
				}
			})
		}
	}
}
