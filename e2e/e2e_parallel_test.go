package e2e_test

import (
	"bytes"
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

// The flags that parallel users type, side by side with GNU parallel:
// -j N and -jN, --tag, --dry-run, --joblog, --bar, --eta, {#} and {%}.
func TestParallelFlagsLikeParallel(t *testing.T) {
	gnu := gnuParallel(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	same := func(t *testing.T, pcdArgs, gnuArgs []string) {
		t.Helper()
		want, err := exec.Command(gnu, append([]string{"--will-cite"}, gnuArgs...)...).Output()
		if err != nil {
			t.Fatalf("parallel %q: %v", gnuArgs, err)
		}
		r := pcd(t, db, pcdArgs...)
		if r.code != 0 {
			t.Fatalf("pcd %q: exit %d: %s", pcdArgs, r.code, r.stderr)
		}
		if r.stdout != string(want) {
			t.Errorf("pcd %q and parallel %q differ:\npcd:\n%s\nparallel:\n%s", pcdArgs, gnuArgs, r.stdout, want)
		}
	}
	t.Run("-j", func(t *testing.T) {
		same(t, []string{"run", "-k", "-j", "1", "--", "echo", "{%}", "{#}", ":::", "a", "b", "c"}, []string{"-k", "-j", "1", "echo", "{%}", "{#}", ":::", "a", "b", "c"})
		same(t, []string{"run", "-k", "-j1", "--", "echo", "{%}", "{#}", ":::", "a", "b", "c"}, []string{"-k", "-j1", "echo", "{%}", "{#}", ":::", "a", "b", "c"})
	})
	t.Run("--tag", func(t *testing.T) {
		same(t, []string{"run", "-k", "--tag", "--shell", "--", `printf "x\ny"`, ":::", "a", "b c"}, []string{"-k", "--tag", `printf "x\ny"`, ":::", "a", "b c"})
		same(t, []string{"run", "-k", "--tag", "--", "echo", ":::", "a", "b", ":::", "1", "2"}, []string{"-k", "--tag", "echo", ":::", "a", "b", ":::", "1", "2"})
	})
	t.Run("--dry-run", func(t *testing.T) {
		args := []string{"a", "b c", "d'e", "$HOME", "x=y", "p/q.r"}
		same(t, append([]string{"run", "--dry-run", "--", "echo", ":::"}, args...), append([]string{"--dry-run", "-k", "-q", "echo", ":::"}, args...))
		same(t, append([]string{"run", "--dry-run", "--shell", "--", "echo {} | tr a-z A-Z", ":::"}, args...), append([]string{"--dry-run", "-k", "echo {} | tr a-z A-Z", ":::"}, args...))
		if n := queryDB(t, db, "SELECT count(*) FROM jobs WHERE name LIKE 'echo%|%'"); n != 0 {
			t.Errorf("--dry-run wrote %d jobs", n)
		}
	})
	t.Run("--joblog", func(t *testing.T) {
		logs := map[string]string{"pcd": filepath.Join(dir, "pcd.log"), "parallel": filepath.Join(dir, "parallel.log")}
		script := "printf {}; exit {}"
		if err := exec.Command(gnu, "--will-cite", "-j1", "--joblog", logs["parallel"], script, ":::", "0", "1", "22").Run(); err == nil {
			t.Fatal("parallel: want a failure")
		}
		if r := pcd(t, db, "run", "-j1", "--joblog", logs["pcd"], "--shell", "--", script, ":::", "0", "1", "22"); r.code != 1 {
			t.Fatalf("pcd run --joblog: exit %d, want 1: %s", r.code, r.stderr)
		}
		// Starttime and JobRuntime differ run to run; the rest is equal.
		fields := func(name string) []string {
			b, err := os.ReadFile(logs[name])
			if err != nil {
				t.Fatal(err)
			}
			var rows []string
			for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
				f := strings.Split(line, "\t")
				if len(f) != 9 {
					t.Fatalf("%s's joblog line %q: %d fields, want 9", name, line, len(f))
				}
				if f[0] != "Seq" {
					if _, err := strconv.ParseFloat(f[2], 64); err != nil {
						t.Errorf("%s: Starttime %q", name, f[2])
					}
					if _, err := strconv.ParseFloat(strings.TrimSpace(f[3]), 64); err != nil || len(f[3]) < 10 {
						t.Errorf("%s: JobRuntime %q", name, f[3])
					}
					f[2], f[3] = "", ""
				}
				rows = append(rows, strings.Join(f, "\t"))
			}
			return rows
		}
		if got, want := fields("pcd"), fields("parallel"); !slices.Equal(got, want) {
			t.Errorf("joblogs differ:\npcd:\n%s\nparallel:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("--bar and --eta", func(t *testing.T) {
		// The progress goes to stderr, and ends complete; stdout is the
		// commands' output alone, as parallel's is.
		for flag, parallelDone := range map[string]string{"--bar": "100%", "--eta": "Left: 0"} {
			var gnuOut, gnuErr bytes.Buffer
			cmd := exec.Command(gnu, "--will-cite", "-k", flag, "echo", ":::", "a", "b", "c")
			cmd.Stdout, cmd.Stderr = &gnuOut, &gnuErr
			if err := cmd.Run(); err != nil {
				t.Fatalf("parallel %s: %v: %s", flag, err, gnuErr.String())
			}
			r := pcd(t, db, "run", "-k", flag, "--", "echo", ":::", "a", "b", "c")
			if r.code != 0 || r.stdout != gnuOut.String() {
				t.Errorf("pcd run %s: exit %d, stdout %q; parallel's %q", flag, r.code, r.stdout, gnuOut.String())
			}
			if !strings.Contains(gnuErr.String(), parallelDone) {
				t.Errorf("parallel %s: stderr does not end complete (%q): %q", flag, parallelDone, gnuErr.String())
			}
			if !strings.Contains(r.stderr, "100%") || !strings.Contains(r.stderr, "(3/3") {
				t.Errorf("pcd run %s: stderr shows no complete progress line: %q", flag, r.stderr)
			}
		}
	})
	t.Run("{%} is a free slot", func(t *testing.T) {
		// A slot is never held by two tasks at once, and is within -j.
		r := pcd(t, db, "run", "-j", "3", "--shell", "--", `echo "{%} start"; sleep 0.05; echo "{%} end"`, ":::", "1", "2", "3", "4", "5", "6", "7", "8")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			slot, _, _ := strings.Cut(line, " ")
			if n, err := strconv.Atoi(slot); err != nil || n < 1 || n > 3 {
				t.Errorf("slot %q, want 1 to 3", slot)
			}
		}
	})
}

// An unknown flag is refused with the nearest flag named, and a typo of
// a flag parallel has too.
func TestUnknownFlagNamesTheNearest(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	for flag, want := range map[string]string{"--keep-ordr": "--keep-order", "--worker": "--workers", "--tagg": "--tag", "--dryrun": "--dry-run"} {
		r := pcd(t, db, "run", flag, "--", "true")
		if r.code != 2 || !strings.Contains(r.stderr, "unknown flag "+flag+"; did you mean "+want+"?") {
			t.Errorf("pcd run %s: exit %d, %q; want 2 and a hint of %s", flag, r.code, r.stderr, want)
		}
	}
	// A value that does not parse: the flag, and the format it wants.
	for _, c := range []struct{ args, want []string }{
		{[]string{"submit", "--in", "2x", "--sleep", "1"}, []string{`--in "2x": want a duration such as 90s`}},
		{[]string{"run", "-j", "x", "--", "true"}, []string{`-j "x": want a whole number`}},
	} {
		r := pcd(t, db, c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want[0]) || strings.Contains(r.stderr, "parse error") {
			t.Errorf("pcd %q: exit %d, %q; want 2 and %q", c.args, r.code, r.stderr, c.want[0])
		}
	}
}

// A finished pcd run says nothing in a pipe; on a terminal it shows its
// progress and ends with one summary line. --bar shows the progress
// line in a pipe too; --quiet silences the terminal.
func TestRunSummaryOnATerminal(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) is not installed: no pseudo-terminal to run pcd in")
	}
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "run", "--", "true", ":::", "1", "2", "3")
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("in a pipe: exit %d, stdout %q, stderr %q; want 0 and nothing", r.code, r.stdout, r.stderr)
	}
	tty := func(args ...string) string {
		t.Helper()
		line := pcdBin
		for _, a := range args {
			line += " '" + a + "'"
		}
		cmd := exec.Command("script", "-qec", line, "/dev/null")
		cmd.Env = append(os.Environ(), "PCD_DB="+db, raceEnv)
		out, err := cmd.Output()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatalf("script %s: %v: %s", line, err, out)
		}
		return string(out)
	}
	out := tty("run", "--shell", "--", "exit {}", ":::", "0", "0", "1")
	if !strings.Contains(out, "pcd: 3 tasks: 2 succeeded, 1 failed, in ") {
		t.Errorf("on a terminal, no summary line:\n%q", out)
	}
	if strings.Contains(out, "pcd: job ") {
		t.Errorf("on a terminal, the failure is told twice:\n%q", out)
	}
	if out := tty("run", "--quiet", "--", "true", ":::", "1", "2"); strings.Contains(out, "pcd: 2 tasks") {
		t.Errorf("--quiet on a terminal printed a summary:\n%q", out)
	}
	r = pcd(t, db, "run", "--bar", "--", "true", ":::", "1", "2", "3")
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "3/3") || !strings.Contains(r.stderr, "pcd: 3 tasks: 3 succeeded") {
		t.Errorf("--bar in a pipe: exit %d, stdout %q, stderr %q; want the progress line and the summary on stderr", r.code, r.stdout, r.stderr)
	}
}

// A halt is told once: the failed task's line and the job's, which says
// it halted.
func TestHaltIsToldOnce(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "run", "-j", "1", "--halt", "now,fail=1", "--shell", "--", "exit {}", ":::", "0", "1", "0", "0")
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.code != 1 || len(lines) != 2 || !strings.Contains(lines[0], "task 2 of job") ||
		!strings.Contains(lines[1], "halted (--halt now,fail=1): 1 of 4 tasks failed, 2 cancelled") {
		t.Errorf("exit %d, stderr:\n%s\nwant 1, the failed task's line and the job's halt", r.code, r.stderr)
	}
}

// A job made from a command line is named after the line, so that five
// jobs of sh -c are not all called sh; pcd tasks shows each command.
func TestJobsAreNamedAfterTheirCommand(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	pcd(t, db, "submit", "--", "sh", "-c", "echo one")
	pcd(t, db, "submit", "--", "convert", "{}", "{.}.png", ":::", "a.jpg")
	names := queryString(t, db, "SELECT group_concat(name, '|') FROM (SELECT name FROM jobs ORDER BY id)")
	if names != "sh -c 'echo one'|convert {} {.}.png" {
		t.Errorf("job names %q", names)
	}
	if out := pcd(t, db, "tasks", queryString(t, db, "SELECT uuid FROM jobs ORDER BY id DESC LIMIT 1")).stdout; !strings.Contains(out, "convert a.jpg a.png") {
		t.Errorf("pcd tasks does not show the command:\n%s", out)
	}
}

// Completion completes job ids: those the command can act on.
func TestCompletionCompletesJobIDs(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	failed := pcd(t, db, "run", "--json", "--shell", "--", "exit 1")
	if failed.code != 1 {
		t.Fatalf("the failing job: exit %d: %s", failed.code, failed.stderr)
	}
	done := queryString(t, db, "SELECT uuid FROM jobs")[:8]
	waiting := strings.TrimSpace(pcd(t, db, "submit", "--", "true").stdout)[:8]
	for cmd, want := range map[string]string{"cancel": waiting, "retry": done, "status": done + "\n" + waiting} {
		got := strings.TrimSpace(pcd(t, db, cmd, "--generate-bash-completion").stdout)
		lines := strings.Split(got, "\n")
		slices.Sort(lines)
		wantLines := strings.Split(want, "\n")
		slices.Sort(wantLines)
		if !slices.Equal(lines, wantLines) {
			t.Errorf("pcd %s completes %q, want %q", cmd, got, want)
		}
	}
}
