package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/internal/rundir"
)

// pcd help, pcd help CMD, an unknown command.
func TestHelpAndUnknownCommands(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "help")
	if r.code != 0 || !strings.Contains(r.stdout, "COMMANDS:") || !strings.Contains(r.stdout, "submit") {
		t.Fatalf("pcd help: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = pcd(t, db, "help", "tasks")
	if r.code != 0 || !strings.Contains(r.stdout, "pcd tasks") {
		t.Fatalf("pcd help tasks: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, args := range [][]string{{"frobnicate"}, {"help", "frobnicate"}, {"--db", db, "frobnicate", "x"}} {
		r = pcd(t, db, args...)
		want := "pcd: unknown command \"frobnicate\": see pcd help\n"
		if r.code != 2 || r.stderr != want || r.stdout != "" {
			t.Fatalf("pcd %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", args, r.code, r.stdout, r.stderr, want)
		}
	}
	// A flag's value before the command is not taken for a command.
	r = pcd(t, db, "--log-level", "warn", "jobs")
	if r.code != 8 {
		t.Fatalf("pcd --log-level warn jobs (no database yet): exit %d, want 8\n%s", r.code, r.stderr)
	}
}

// pcd --version prints the module version and the VCS revision it was
// built from.
func TestVersion(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "pcd")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "github.com/pcd-dev/pcd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("pcd --version: %v", err)
	}
	rev := strings.TrimSpace(string(head))[:12]
	if !strings.HasPrefix(string(out), "pcd version ") || !strings.Contains(string(out), rev) {
		t.Fatalf("pcd --version: %q, want the revision %s", out, rev)
	}
}

// pcd logs --follow prints a running task's output as it comes, and ends
// with the task; pcd logs JOB N names a task by its number.
func TestLogsFollow(t *testing.T) {
	for _, store := range bothStores {
		t.Run(store.name, func(t *testing.T) { logsFollow(t, store.db(t)) })
	}
}

func logsFollow(t *testing.T, db string) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	d := controlDaemon(t, db)
	defer stopDaemon(t, d)
	id := strings.TrimSpace(pcd(t, db, "submit", "--", "sh", "-c",
		"echo first; echo oops >&2; while [ ! -e "+gate+" ]; do sleep 0.02; done; echo second; exit 3").stdout)
	if len(id) != 36 {
		t.Fatalf("submit printed %q, want a job id", id)
	}
	f := start(t, db, nil, "logs", "--follow", id[:8], "1")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(f.stdout.String(), "first\n") || !strings.Contains(f.stdout.String(), "oops\n") {
		if time.Now().After(deadline) {
			t.Fatalf("logs --follow showed %q in 30 s; want the running task's first lines", f.stdout.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The task is still running: what came is live output, in a file only
	// this user can read, in a directory only this user can enter.
	live, _ := filepath.Glob(filepath.Join(runtimeDir(t), rundir.Key(db)+".live", "*.log"))
	if len(live) != 1 {
		t.Fatalf("live output files: %v, want the running task's", live)
	}
	for _, p := range []string{live[0], filepath.Dir(live[0])} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v, mode %v; want it private to the user", p, err, fi.Mode())
		}
	}
	os.WriteFile(gate, nil, 0o600)
	if code := f.wait(t, 30*time.Second); code != 1 {
		t.Errorf("logs --follow of a task that exits 3: exit %d, want 1; stderr %s", code, f.stderr)
	}
	// stdout and stderr are two pipes: the order between them is the
	// order pcd read them in.
	if got := f.stdout.String(); got != "first\noops\nsecond\n" && got != "oops\nfirst\nsecond\n" {
		t.Errorf("logs --follow printed %q, want the whole output, stdout and stderr together", got)
	}
	if _, err := os.Stat(live[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the live output file outlived its task: %v", err)
	}
	// Once the task is done, JOB N and a follow both print the stored
	// output, stdout and stderr apart.
	for _, args := range [][]string{{"logs", id[:8], "1"}, {"logs", "-f", id, "1"}} {
		r := pcd(t, db, args...)
		if r.stdout != "first\nsecond\n" || !strings.Contains(r.stderr, "oops\n") {
			t.Errorf("pcd %v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	for args, code := range map[string]int{"logs " + id[:8] + " 2": 5, "logs " + id[:8] + " x": 2, "logs": 2} {
		if r := pcd(t, db, strings.Fields(args)...); r.code != code {
			t.Errorf("pcd %s: exit %d, want %d; stderr %s", args, r.code, code, r.stderr)
		}
	}
}

// runtimeDir is where pcd keeps its per-user files in these tests.
func runtimeDir(t *testing.T) string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("pcd-%d", os.Geteuid()))
}

// pcd status with no job is the overview: the daemon (pid, uptime,
// version), jobs by state, running tasks, the rate, and the callbacks
// that sinks have yet to take.
func TestStatusOverview(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	if r := pcd(t, db, "submit", "--", "true"); r.code != 0 {
		t.Fatalf("submit: exit %d: %s", r.code, r.stderr)
	}
	r := pcd(t, db, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "daemon: none running") || !strings.Contains(r.stdout, "jobs:           1 pending\n") {
		t.Fatalf("status with no daemon: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	d := startDaemon(t, db, "--delivery-backoff", "1h")
	defer stopDaemon(t, d)
	// 10 workers on sleeps of up to 1 s, callbacks to a webhook that
	// refuses them (port 1): running tasks, a rate, and a backlog.
	id := strings.TrimSpace(pcd(t, db, "submit", "--sleep", "400", "--workers", "10", "--webhook", "http://127.0.0.1:1/hook").stdout)
	waitFor(t, db, "SELECT count(*) FROM results WHERE job_id = (SELECT id FROM jobs WHERE uuid = '"+id+"')", 5)
	r = pcd(t, db, "status")
	pid := fmt.Sprint(d.cmd.Process.Pid)
	for _, want := range []string{"daemon: running, pid " + pid + ", up ", ", pcd ", "jobs:           1 running, 1 succeeded\n",
		"running tasks:  ", "tasks/s (over the last", "webhook http://127.0.0.1:1/hook\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status does not hold %q:\n%s%s", want, r.stdout, r.stderr)
		}
	}
	// Between one task and the next a worker is idle for a moment: up to
	// the 10 workers run.
	if m := regexp.MustCompile(`running tasks:  (\d+)\n`).FindStringSubmatch(r.stdout); m == nil || m[1] == "0" || len(m[1]) > 2 || (len(m[1]) == 2 && m[1] != "10") {
		t.Errorf("status: running tasks not 1 to 10:\n%s", r.stdout)
	}
	var v struct {
		Runners []struct {
			PID     int    `json:"pid"`
			Version string `json:"version"`
			Alive   bool   `json:"alive"`
		} `json:"runners"`
		Jobs    map[string]int   `json:"jobs"`
		Running int              `json:"running_tasks"`
		Rate    float64          `json:"tasks_per_sec"`
		Pending map[string]int64 `json:"pending_callbacks"`
	}
	r = pcd(t, db, "status", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	if len(v.Runners) != 1 || fmt.Sprint(v.Runners[0].PID) != pid || !v.Runners[0].Alive || v.Runners[0].Version == "" ||
		v.Jobs["running"] != 1 || v.Running < 1 || v.Running > 10 || v.Rate <= 0 || v.Pending["webhook http://127.0.0.1:1/hook"] < 5 {
		t.Errorf("status --json: %+v", v)
	}
	pcd(t, db, "cancel", id)
}

// pcd completion bash completes commands and flags by asking pcd; zsh
// and fish get their scripts.
func TestCompletion(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	script := pcd(t, db, "completion", "bash")
	if script.code != 0 || !strings.Contains(script.stdout, "complete -o default") {
		t.Fatalf("completion bash: exit %d: %s%s", script.code, script.stdout, script.stderr)
	}
	file := filepath.Join(t.TempDir(), "pcd.bash")
	os.WriteFile(file, []byte(script.stdout), 0o600)
	complete := func(words ...string) string {
		t.Helper()
		sh := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _pcd_complete; echo "${COMPREPLY[*]}"`
		out, err := exec.Command("bash", append([]string{"-c", sh, "bash", file, pcdBin}, words...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := complete("sub"); got != "submit" {
		t.Errorf("pcd sub<TAB>: %q, want submit", got)
	}
	if got := complete("submit", "--prio"); got != "--priority" {
		t.Errorf("pcd submit --prio<TAB>: %q, want --priority", got)
	}
	if got := complete("run", "--", "ec"); got != "" {
		t.Errorf("pcd run -- ec<TAB>: %q, want nothing from pcd (the shell completes files)", got)
	}
	for shell, want := range map[string]string{"zsh": "bashcompinit", "fish": "complete -c pcd"} {
		if r := pcd(t, db, "completion", shell); r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: exit %d, no %q", shell, r.code, want)
		}
	}
	if r := pcd(t, db, "completion", "tcsh"); r.code != 2 {
		t.Errorf("completion tcsh: exit %d, want 2", r.code)
	}
}

// A watch says when the daemon dies under it, and when one is back; pcd
// run that hands its job to a daemon prints what pcd run prints (issue
// 14, point 5).
func TestWatchSaysTheDaemonIsGone(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	gate := filepath.Join(dir, "gate")
	d := startDaemon(t, db)
	// Task 1 prints at once; task 2 waits for the gate.
	id := strings.TrimSpace(pcd(t, db, "submit", "--workers", "1", "--", "sh", "-c",
		"if [ {} = 1 ]; then echo first; else while [ ! -e "+gate+" ]; do sleep 0.02; done; fi", ":::", "1", "2").stdout)
	w := start(t, db, nil, "watch", id)
	waitFor := func(b *buffer, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(b.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in 30 s: %s", want, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitStderr := func(p *proc, want string) { t.Helper(); waitFor(p.stderr, want) }
	waitFor(w.stdout, "first\n") // the watch runs
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.wait(t, 10*time.Second)
	waitStderr(w, "the daemon is gone")
	d = startDaemon(t, db)
	defer stopDaemon(t, d)
	waitStderr(w, "a daemon runs the jobs again")
	os.WriteFile(gate, nil, 0o600)
	if code := w.wait(t, 30*time.Second); code != 0 {
		t.Errorf("watch: exit %d: %s", code, w.stderr)
	}

	// The same job, run here and handed to the daemon: the same lines.
	job := filepath.Join(dir, "job.json")
	os.WriteFile(job, []byte(`{"workers": 1, "tasks": [{"kind": "noop"}, {"kind": "fail", "payload": {"error": "no"}}]}`), 0o600) // one worker: one order
	handed := pcd(t, db, "run", job)
	stopDaemon(t, d)
	here := pcd(t, db, "run", job)
	shape := func(out string) string {
		return regexp.MustCompile(`[0-9a-f-]{36}|time_secs=[0-9.]+|'elapsed_secs': [0-9.]+`).ReplaceAllString(out, "X")
	}
	if handed.code != here.code || shape(handed.stdout) != shape(here.stdout) {
		t.Errorf("pcd run handed to a daemon: exit %d\n%s\nrun here: exit %d\n%s", handed.code, handed.stdout, here.code, here.stdout)
	}
	lastLine := func(s string) string {
		lines := strings.Split(strings.TrimSpace(s), "\n")
		return shape(lines[len(lines)-1])
	}
	if lastLine(handed.stderr) != lastLine(here.stderr) {
		t.Errorf("the last word differs: handed %q, here %q", lastLine(handed.stderr), lastLine(here.stderr))
	}
}
