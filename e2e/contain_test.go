package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// escapes is a command whose processes leave it every way they can: a
// child in its group, one in a session of its own, a double fork
// re-parented away, one with an empty environment (no run id), and a
// double fork inside a new session; s is their unique sleep.
func escapes(s string) string {
	return fmt.Sprintf(`sleep %[1]s & setsid sleep %[1]s & (sleep %[1]s &); env -i sleep %[1]s & setsid sh -c '(sleep %[1]s &)'; sleep %[1]s`, s)
}

// escapees is how many sleeps escapes starts.
const escapees = 6

// needsContainment skips where the runner cannot have a PID namespace.
func needsContainment(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a runner's PID namespace needs root here; as another user the runner says so and the next runner kills what is left")
	}
}

// TestSIGKILLedRunnerLeavesNoProcess: when a daemon or a pcd run is
// SIGKILLed, every process its task started is gone within a second,
// with no runner started again: in its group or not, with its run id or
// not. The runner's PID namespace dies with it, and the kernel kills
// what is in it.
func TestSIGKILLedRunnerLeavesNoProcess(t *testing.T) {
	needsContainment(t)
	for _, runner := range []string{"daemon", "run"} {
		t.Run(runner, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "pcd.db")
			s := uniqueSleep(300)
			t.Cleanup(func() { killAll(processesWith("sleep", s)) })
			var p *proc
			if runner == "daemon" {
				pcd(t, db, "submit", "--", "sh", "-c", escapes(s))
				p = startDaemon(t, db)
			} else {
				p = start(t, db, nil, "run", "--", "sh", "-c", escapes(s))
			}
			waitProcesses(t, escapees, 30*time.Second, "sleep", s)
			p.cmd.Process.Kill()
			p.wait(t, 10*time.Second)
			gone := time.Now()
			for len(processesWith("sleep", s)) > 0 && time.Since(gone) < 10*time.Second {
				time.Sleep(time.Millisecond)
			}
			took := time.Since(gone)
			if left := processesWith("sleep", s); len(left) > 0 {
				t.Fatalf("%d of the task's processes outlived its SIGKILLed runner by 10 s: %v", len(left), left)
			}
			t.Logf("the task's %d processes were gone %v after the runner", escapees, took.Round(time.Millisecond))
			if took > time.Second {
				t.Errorf("the task's processes were gone only %v after the runner, want within 1 s", took)
			}
			if strings.Contains(p.stderr.String(), "not contained") {
				t.Errorf("the runner says its tasks are not contained:\n%s", p.stderr)
			}
		})
	}
}

// TestContainedTaskSeesItself: inside the runner's namespace a task's $$,
// its /proc and ps agree, SIGTERM still ends a plain sleep at a timeout,
// and exit codes are the command's.
func TestContainedTaskSeesItself(t *testing.T) {
	needsContainment(t)
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "run", "--", "sh", "-c", `echo "$$ $(cut -d' ' -f1 /proc/$$/stat) $(ps -o pid= -p $$)"`)
	if r.code != 0 {
		t.Fatalf("run: exit %d: %s", r.code, r.stderr)
	}
	f := strings.Fields(r.stdout)
	if len(f) != 3 || f[0] != f[1] || f[0] != f[2] {
		t.Errorf("$$, /proc/$$/stat and ps -p $$ say %q, want the same pid thrice", r.stdout)
	}
	start := time.Now()
	r = pcd(t, db, "run", "--timeout", "1s", "--", "sleep", "60")
	if took := time.Since(start); r.code == 0 || !strings.Contains(r.stderr, "timed out") || took > 30*time.Second {
		t.Errorf("sleep 60 with --timeout 1s: exit %d after %v: %s", r.code, took, r.stderr)
	}
	if r = pcd(t, db, "run", "--", "sh", "-c", "exit 3"); r.code != 1 || !strings.Contains(r.stderr, "exit status 3") {
		t.Errorf("exit 3: pcd run exit %d: %s", r.code, r.stderr)
	}
}

// TestUncontainedRunnerSaysSo: as a user who may not make a PID
// namespace, a runner runs its tasks as before and says once that what
// they start may outlive it if it is killed (a pcd run at debug level).
func TestUncontainedRunnerSaysSo(t *testing.T) {
	dir := sharedDir(t)
	bin := filepath.Join(dir, "pcd")
	b, err := os.ReadFile(buildPlain(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		bin, "run", "--log-level", "debug", "--", "sh", "-c", "echo ran")
	cmd.Env = append(os.Environ(), "PCD_DB="+filepath.Join(dir, "pcd.db"), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pcd run as nobody: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "ran") {
		t.Errorf("the task did not run: %s", out)
	}
	if n := strings.Count(string(out), "not contained"); n != 1 {
		t.Errorf("said %d times that its tasks are not contained, want once:\n%s", n, out)
	}
}
