package e2e_test

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/internal/pgtest"
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

// runner is a pcd binary that a test runs as a given user: root, or uid
// 65534 (nobody) through setpriv, whose runner contains its commands in a
// user namespace of its own.
type runner struct {
	user string
	bin  string
	dir  string // where its databases go
}

// runnerUsers are the users a containment test runs its runners as.
var runnerUsers = []string{"root", "nobody"}

// newRunner sets up a runner as user, or skips where that cannot be.
func newRunner(t *testing.T, user string) runner {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containment tests need root, to run as root and as uid 65534; as another user a runner contains its commands in a user namespace of its own")
	}
	if user == "root" {
		return runner{user: user, bin: binary(t), dir: t.TempDir()}
	}
	dir := sharedDir(t)
	bin := plainIn(t, dir)
	if out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "unshare", "--user", "--pid", "--fork", "true").CombinedOutput(); err != nil {
		t.Skipf("this machine gives uid 65534 no user and PID namespace: %v: %s", err, out)
	}
	return runner{user: user, bin: bin, dir: dir}
}

// plainIn copies the pcd binary without the race detector into dir, for
// another user to run.
func plainIn(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "pcd")
	b, err := os.ReadFile(buildPlain(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// cmd is pcd args on db, as the runner's user.
func (r runner) cmd(db string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(r.bin, args...)
	if r.user != "root" {
		cmd = exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", r.bin}, args...)...)
	}
	cmd.Env = append(append(os.Environ(), "PCD_DB="+db, "HOME="+r.dir, raceEnv), env...)
	return cmd
}

// run runs pcd args on db and waits for it.
func (r runner) run(t *testing.T, db string, env []string, args ...string) result {
	t.Helper()
	cmd := r.cmd(db, env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("pcd %v: %v", args, err)
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// TestSIGKILLedRunnerLeavesNoProcess: when a daemon or a pcd run is
// SIGKILLed, every process its task started is gone within a second,
// with no runner started again: in its group or not, with its run id or
// not. The runner's PID namespace dies with it, and the kernel kills
// what is in it. As root and as another user.
func TestSIGKILLedRunnerLeavesNoProcess(t *testing.T) {
	for _, user := range runnerUsers {
		// A daemon on PostgreSQL has a fence process too.
		for _, role := range []string{"daemon", "run", "postgres-daemon"} {
			t.Run(user+"/"+role, func(t *testing.T) {
				r := newRunner(t, user)
				db := filepath.Join(r.dir, role+".db")
				if role == "postgres-daemon" {
					db = pgURLAs(t)
				}
				s := uniqueSleep(300)
				t.Cleanup(func() { killAll(processesWith("sleep", s)) })
				var p *proc
				if role != "run" {
					if res := r.run(t, db, nil, "submit", "--", "sh", "-c", escapes(s)); res.code != 0 {
						t.Fatalf("submit: exit %d: %s", res.code, res.stderr)
					}
					p = startProc(t, r.cmd(db, nil, "daemon", "--log-level", "debug"))
				} else {
					p = startProc(t, r.cmd(db, nil, "run", "--log-level", "debug", "--", "sh", "-c", escapes(s)))
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
}

// TestContainedTaskSeesItself: inside the runner's namespace a task's $$,
// its /proc and ps agree, SIGTERM still ends a plain sleep at a timeout,
// exit codes are the command's, and a command has no capability its user
// does not have. As root and as another user.
func TestContainedTaskSeesItself(t *testing.T) {
	for _, user := range runnerUsers {
		t.Run(user, func(t *testing.T) {
			r := newRunner(t, user)
			db := filepath.Join(r.dir, "pcd.db")
			res := r.run(t, db, nil, "run", "--", "sh", "-c", `echo "$$ $(cut -d' ' -f1 /proc/$$/stat) $(ps -o pid= -p $$)"; id -u; grep -E '^Cap(Eff|Prm|Amb|Inh)' /proc/self/status`)
			if res.code != 0 {
				t.Fatalf("run: exit %d: %s", res.code, res.stderr)
			}
			lines := strings.Split(res.stdout, "\n")
			f := strings.Fields(lines[0])
			if len(f) != 3 || f[0] != f[1] || f[0] != f[2] {
				t.Errorf("$$, /proc/$$/stat and ps -p $$ say %q, want the same pid thrice", lines[0])
			}
			if user != "root" {
				if len(lines) < 2 || lines[1] != "65534" {
					t.Errorf("id -u says %q, want 65534: %s", lines[1], res.stdout)
				}
				for _, l := range lines[2:] {
					if k, v, ok := strings.Cut(l, ":"); ok && strings.Trim(strings.TrimSpace(v), "0") != "" {
						t.Errorf("a command of uid 65534 has the capabilities %s %s", k, strings.TrimSpace(v))
					}
				}
			}
			start := time.Now()
			res = r.run(t, db, nil, "run", "--timeout", "1s", "--", "sleep", "60")
			if took := time.Since(start); res.code == 0 || !strings.Contains(res.stderr, "timed out") || took > 30*time.Second {
				t.Errorf("sleep 60 with --timeout 1s: exit %d after %v: %s", res.code, took, res.stderr)
			}
			if res = r.run(t, db, nil, "run", "--", "sh", "-c", "exit 3"); res.code != 1 || !strings.Contains(res.stderr, "exit status 3") {
				t.Errorf("exit 3: pcd run exit %d: %s", res.code, res.stderr)
			}
		})
	}
}

// TestUncontainedRunnerSaysSo: where a runner cannot have a PID
// namespace (PCD_CONTAIN=off, or a user who may make no user namespace
// that maps its uid), it runs its tasks as before and says once why what
// they start may outlive it if it is killed (a pcd run at debug level).
func TestUncontainedRunnerSaysSo(t *testing.T) {
	r := newRunner(t, "nobody")
	for _, c := range []struct {
		name string
		env  []string
		pre  []string // what pcd runs under
		why  string
	}{
		{"off", []string{"PCD_CONTAIN=off"}, nil, "PCD_CONTAIN=off"},
		// In a user namespace that maps no uid, pcd's own cannot map its.
		{"no user namespace", nil, []string{"unshare", "--user"}, "user namespace"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append(append(c.pre, r.bin), "run", "--log-level", "debug", "--", "sh", "-c", "echo ran $PPID")
			cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, args...)...)
			cmd.Env = append(append(os.Environ(), "PCD_DB="+filepath.Join(r.dir, strings.ReplaceAll(c.name, " ", "-")+".db"), "HOME="+r.dir), c.env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("pcd run as nobody: %v: %s", err, out)
			}
			if !strings.Contains(string(out), "ran") || strings.Contains(string(out), "ran 0\n") {
				t.Errorf("the task did not run, or ran in a PID namespace ($PPID 0): %s", out)
			}
			if n := strings.Count(string(out), "not contained"); n != 1 {
				t.Errorf("said %d times that its tasks are not contained, want once:\n%s", n, out)
			}
			if !strings.Contains(string(out), c.why) {
				t.Errorf("the runner does not say why (%q):\n%s", c.why, out)
			}
		})
	}
}

// TestUserNamespaceRunnerTakesSignals: a runner that runs again in a user
// namespace of its own still stops as asked: the process the user
// started passes SIGTERM and SIGINT on, and exits as the runner did.
func TestUserNamespaceRunnerTakesSignals(t *testing.T) {
	r := newRunner(t, "nobody")
	db := filepath.Join(r.dir, "pcd.db")
	d := startProc(t, r.cmd(db, nil, "daemon", "--log-level", "debug"))
	waitStderr(t, d, "daemon started")
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(t, 30*time.Second); code != 0 || !strings.Contains(d.stderr.String(), "stopping") {
		t.Errorf("daemon after SIGTERM: exit %d:\n%s", code, d.stderr)
	}
	s := uniqueSleep(300)
	t.Cleanup(func() { killAll(processesWith("sleep", s)) })
	p := startProc(t, r.cmd(db, nil, "run", "--grace", "0s", "--", "sh", "-c", "sleep "+s+"; true"))
	waitProcesses(t, 1, 30*time.Second, "sleep", s)
	p.cmd.Process.Signal(syscall.SIGINT)
	code := p.wait(t, 30*time.Second)
	if code == 0 || !strings.Contains(p.stderr.String(), "stopping") {
		t.Errorf("pcd run after SIGINT: exit %d:\n%s", code, p.stderr)
	}
	if left := processesWith("sleep", s); len(left) > 0 {
		t.Errorf("the stopped run's command is still running: %v", left)
	}
}

// waitStderr waits until p has written want to its stderr.
func waitStderr(t *testing.T, p *proc, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.stderr.String(), want) {
		select {
		case <-p.done:
			t.Fatalf("%v exited %d before it said %q:\n%s", p.cmd.Args, p.cmd.ProcessState.ExitCode(), want, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v did not say %q within 30 s:\n%s", p.cmd.Args, want, p.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pgURLAs is a new schema's URL that names the test's own role, so that
// a pcd run as another user connects as it.
func pgURLAs(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	if u.User == nil {
		me, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User(me.Username)
	}
	return u.String()
}
