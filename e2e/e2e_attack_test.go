package e2e_test

// End-to-end tests of the promises pcd keeps under attack: commands whose
// children escape, runners killed with SIGKILL, two runners at once,
// another user on the machine.

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// uniqueSleep is a sleep argument no other process on the machine has, so
// that a test can find the processes it started by their command line.
func uniqueSleep(secs int) string {
	return fmt.Sprintf("%d.%06d", secs, rand.IntN(1_000_000))
}

// procPIDs lists the pids in /proc.
func procPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// processesWith lists the live processes whose command line holds every
// word.
func processesWith(words ...string) []int {
	var out []int
	for _, pid := range procPIDs() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil || len(b) == 0 {
			continue // gone, or a zombie
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		all := true
		for _, w := range words {
			found := false
			for _, a := range args {
				if a == w {
					found = true
				}
			}
			all = all && found
		}
		if all {
			out = append(out, pid)
		}
	}
	return out
}

// waitProcesses waits until the processes with words number want.
func waitProcesses(t *testing.T, want int, d time.Duration, words ...string) []int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := processesWith(words...)
		if len(got) == want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes %v after %v, want %d", len(got), words, d, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func killAll(pids []int) {
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// A command whose child leaves the process group (setsid) holding the
// output pipes must not wedge the task: the task ends when the command
// does, and the escaped child is killed with it.
func TestEscapedChildDoesNotWedgeTheTask(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	s := uniqueSleep(40)
	t.Cleanup(func() { killAll(processesWith("sleep", s)) })
	start := time.Now()
	r := pcd(t, db, "run", "--timeout", "2s", "--", "sh", "-c", "setsid sleep "+s+" & sleep 0.5; echo done")
	took := time.Since(start)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if took > 20*time.Second {
		t.Errorf("the task took %v: its escaped child held it", took)
	}
	if left := processesWith("sleep", s); len(left) > 0 {
		t.Errorf("the escaped child outlived its task: pids %v", left)
	}
	if got := pcd(t, db, "logs", lastTaskID(t, db)); !strings.Contains(got.stdout, "done") {
		t.Errorf("logs: %q, want the command's output", got.stdout)
	}
}

// lastTaskID is the uuid of the newest task in db.
func lastTaskID(t *testing.T, db string) string {
	t.Helper()
	return queryString(t, db, "SELECT uuid FROM tasks ORDER BY job_id DESC, seq DESC LIMIT 1")
}

// A timeout holds even when the command's escaped child keeps the pipes
// open and the command itself runs on.
func TestTimeoutHoldsWhateverTheChildrenDo(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	s1, s2 := uniqueSleep(40), uniqueSleep(41)
	t.Cleanup(func() { killAll(append(processesWith("sleep", s1), processesWith("sleep", s2)...)) })
	start := time.Now()
	r := pcd(t, db, "run", "--timeout", "1s", "--", "sh", "-c", "setsid sleep "+s1+" & sleep "+s2)
	took := time.Since(start)
	if r.code != 1 || !strings.Contains(r.stderr, "failed: timed out after 1s") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want a task that timed out", r.code, r.stdout, r.stderr)
	}
	if took > 15*time.Second {
		t.Errorf("a 1s timeout took %v", took)
	}
	if left := append(processesWith("sleep", s1), processesWith("sleep", s2)...); len(left) > 0 {
		t.Errorf("processes outlived the timed-out task: %v", left)
	}
}

// A daemon running such a command still stops on SIGTERM, and cancel
// frees it.
func TestDaemonStopsWhateverTheChildrenDo(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	s := uniqueSleep(40)
	t.Cleanup(func() { killAll(processesWith("sleep", s)) })
	id := strings.TrimSpace(pcd(t, db, "submit", "--", "sh", "-c", "setsid sleep "+s+" & sleep 1000").stdout)
	d := startDaemon(t, db, "--grace", "1s")
	waitProcesses(t, 1, 30*time.Second, "sleep", s)
	if r := pcd(t, db, "cancel", id); r.code != 0 {
		t.Fatalf("cancel: exit %d: %s", r.code, r.stderr)
	}
	waitProcesses(t, 0, 15*time.Second, "sleep", s)

	id2 := strings.TrimSpace(pcd(t, db, "submit", "--", "sh", "-c", "setsid sleep "+s+" & sleep 1000").stdout)
	waitProcesses(t, 1, 30*time.Second, "sleep", s)
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("daemon exit %d after SIGTERM: %s", code, d.stderr)
	}
	if left := processesWith("sleep", s); len(left) > 0 {
		t.Errorf("the escaped child outlived the daemon: %v", left)
	}
	if st := queryString(t, db, "SELECT state FROM jobs WHERE uuid = '"+id2+"'"); st != "pending" {
		t.Errorf("a job stopped by the daemon's stop is %q, want pending", st)
	}
}

// SIGKILL of the daemon: its command dies with it (death signal), and
// what the command started in its group, or outside it, is killed by the
// next start before the task runs again. No task runs twice at once.
func TestSIGKILLedDaemonLeavesNothingRunning(t *testing.T) {
	for _, tc := range []struct{ name, script string }{
		{"grandchild in the group", "sleep %s; true"},
		{"escaped grandchild", "setsid sleep %s & wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "pcd.db")
			s := uniqueSleep(60)
			t.Cleanup(func() { killAll(processesWith("sleep", s)) })
			pcd(t, db, "submit", "--", "sh", "-c", fmt.Sprintf(tc.script, s))
			d := startDaemon(t, db)
			first := waitProcesses(t, 1, 30*time.Second, "sleep", s)
			shell := processesWith("sh", "-c", fmt.Sprintf(tc.script, s))
			// Its start mark, with its process group (written 50 ms in).
			waitFor(t, db, "SELECT count(*) FROM running WHERE pgid IS NOT NULL", 1)
			d.cmd.Process.Kill()
			d.wait(t, 10*time.Second)
			// The command itself got the death signal.
			deadline := time.Now().Add(5 * time.Second)
			for len(alive(shell)) > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if a := alive(shell); len(a) > 0 {
				t.Errorf("the command %v outlived its SIGKILLed runner", a)
			}
			d2 := startDaemon(t, db, "--grace", "100ms") // the 60 s sleep need not finish
			defer stopDaemon(t, d2)
			// The task runs again, and the old sleep is gone first.
			deadline = time.Now().Add(30 * time.Second)
			for {
				now := processesWith("sleep", s)
				if len(now) > 1 {
					t.Fatalf("the task runs twice at once: %v", now)
				}
				if len(now) == 1 && now[0] != first[0] {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the task did not run again: sleeps %v, the first was %v", now, first)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if a := alive(first); len(a) > 0 {
				t.Errorf("the first run's sleep %v still runs", a)
			}
			// The interruption is counted, and shown.
			job := queryString(t, db, "SELECT uuid FROM jobs")
			if r := pcd(t, db, "tasks", "--json", job); !strings.Contains(r.stdout, `"interrupts":1,"may_have_run_twice":true`) {
				t.Errorf("tasks --json does not show the interruption: %s", r.stdout)
			}
			if r := pcd(t, db, "tasks", job); !strings.Contains(r.stdout, "(1 interrupt: may have run twice)") {
				t.Errorf("tasks does not show interruptions:\n%s", r.stdout)
			}
		})
	}
}

// alive returns the pids that are still running (not zombies).
func alive(pids []int) []int {
	var out []int
	for _, p := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat")
		if err != nil {
			continue
		}
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
			continue
		}
		out = append(out, p)
	}
	return out
}

func queryString(t *testing.T, db, q string) string {
	t.Helper()
	var s string
	queryRow(t, db, q, &s)
	return s
}

// queryRow scans one row of q on db into dst.
func queryRow(t *testing.T, db, q string, dst ...any) {
	t.Helper()
	raw := openRaw(t, db)
	defer raw.Close()
	if err := raw.QueryRow(q).Scan(dst...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// pcd cancel stops a job that pcd run is running: its running tasks are
// stopped, and no task starts once cancel has returned.
func TestCancelStopsPcdRun(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	started := filepath.Join(dir, "started")
	s := uniqueSleep(60)
	t.Cleanup(func() { killAll(processesWith("sleep", s)) })
	lines := strings.Repeat("echo x >> "+started+"; sleep "+s+"\n", 10)
	jobs := filepath.Join(dir, "lines")
	os.WriteFile(jobs, []byte(lines), 0o600)
	run := start(t, db, nil, "run", "--no-output", "--workers", "2", "--lines", jobs)
	waitProcesses(t, 2, 30*time.Second, "sleep", s)
	id := queryString(t, db, "SELECT uuid FROM jobs")
	r := pcd(t, db, "cancel", id[:8])
	if r.code != 0 {
		t.Fatalf("cancel: exit %d: %s", r.code, r.stderr)
	}
	after, _ := os.ReadFile(started)
	if code := run.wait(t, 20*time.Second); code != 1 {
		t.Errorf("pcd run of a cancelled job: exit %d, want 1; stderr %s", code, run.stderr)
	}
	final, _ := os.ReadFile(started)
	if string(final) != string(after) || strings.Count(string(final), "x") != 2 {
		t.Errorf("tasks started: %d when cancel returned, %d in the end; want 2 and no more",
			strings.Count(string(after), "x"), strings.Count(string(final), "x"))
	}
	if left := processesWith("sleep", s); len(left) > 0 {
		t.Errorf("cancelled tasks still run: %v", left)
	}
	if !strings.Contains(run.stdout.String(), "'outcome': 'cancelled'") {
		t.Errorf("pcd run did not print the cancelled job's completion:\n%s", run.stdout)
	}
}

// bindHelper is what the test binary does as another user squatting a
// socket: it binds path and waits to be killed.
func bindHelper(path string) int {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bind:", err)
		return 1
	}
	defer conn.Close()
	os.Chmod(path, 0o777)
	fmt.Println("bound")
	buf := make([]byte, 16)
	for {
		if _, _, err := conn.ReadFromUnix(buf); err != nil {
			return 0
		}
		fmt.Println("woken") // the victim talked to us
	}
}

// sharedDir is a world-writable sticky directory, like /tmp, that the
// unprivileged user can reach. It needs root and setpriv.
func sharedDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to act as a second user with setpriv")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux) to act as a second user")
	}
	dir, err := os.MkdirTemp("", "pcd-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	return dir
}

// asNobody runs a command as uid 65534 and waits for it.
func asNobody(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody %v: %v: %s", args, err, out)
	}
}

// A database, WAL or lock file that another user made, or that others
// can write, is refused with exit 3, and left as it was.
func TestRefusesFilesAnotherUserControls(t *testing.T) {
	dir := sharedDir(t)
	for _, tc := range []struct {
		name   string
		plant  func(db string)
		args   []string
		reason string
	}{
		{"empty database made by another user", func(db string) {
			asNobody(t, "sh", "-c", "umask 0; : > "+db)
		}, []string{"run", "--demo"}, "owned by uid 65534"},
		{"database of mine that others can write", func(db string) {
			os.WriteFile(db, nil, 0o600)
			os.Chmod(db, 0o666)
		}, []string{"jobs"}, "writable by group or others"},
		{"WAL made by another user", func(db string) {
			if r := pcd(t, db, "run", "--demo"); r.code != 0 {
				t.Fatalf("demo: %s", r.stderr)
			}
			asNobody(t, "sh", "-c", "umask 0; : > "+db+"-wal")
		}, []string{"jobs"}, "owned by uid 65534"},
		{"SHM made by another user", func(db string) {
			if r := pcd(t, db, "run", "--demo"); r.code != 0 {
				t.Fatalf("demo: %s", r.stderr)
			}
			asNobody(t, "sh", "-c", "umask 0; : > "+db+"-shm")
		}, []string{"submit", "--sleep", "1"}, "owned by uid 65534"},
		{"lock file made by another user", func(db string) {
			asNobody(t, "sh", "-c", "umask 0; : > "+db+".lock")
		}, []string{"run", "--demo"}, "owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := os.MkdirTemp(dir, "case-")
			if err != nil {
				t.Fatal(err)
			}
			os.Chmod(sub, 0o777|os.ModeSticky)
			db := filepath.Join(sub, "pcd.db")
			tc.plant(db)
			before := snapshot(t, sub)
			r := pcd(t, db, tc.args...)
			if r.code != 3 || !strings.Contains(r.stderr, tc.reason) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want exit 3 and one line saying %q", r.code, r.stderr, tc.reason)
			}
			if after := snapshot(t, sub); after != before {
				t.Errorf("the files changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot describes every file in dir: name, owner, mode and content.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var b strings.Builder
	for _, e := range entries {
		fi, err := os.Lstat(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		content, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		fmt.Fprintf(&b, "%s uid=%d %v %x; ", e.Name(), fi.Sys().(*syscall.Stat_t).Uid, fi.Mode(), sha256.Sum256(content))
	}
	return b.String()
}

// A symlink planted at the lock file is not followed: the file it points
// to keeps its content.
func TestLockFileSymlinkIsNotFollowed(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	victim := filepath.Join(dir, "precious")
	os.WriteFile(victim, []byte("do not truncate me\n"), 0o600)
	if err := os.Symlink(victim, db+".lock"); err != nil {
		t.Fatal(err)
	}
	r := pcd(t, db, "run", "--demo")
	if r.code != 3 || !strings.Contains(r.stderr, "symlink") {
		t.Errorf("exit %d, stderr %q; want 3 and a word about the symlink", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(victim); string(b) != "do not truncate me\n" {
		t.Errorf("the symlink's target now holds %q", b)
	}
}

// sharedBinary copies a binary where other users can run it.
func sharedBinary(t *testing.T, dir, src string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src)+"-shared")
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// asUID returns a command that runs args as uid (and gid) n.
func asUID(n int, args ...string) *exec.Cmd {
	id := strconv.Itoa(n)
	return exec.Command("setpriv", append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", "--"}, args...)...)
}

// Another user cannot squat the wake socket: a database in a shared
// directory gets its socket in a directory private to its user. The
// victim is uid 65534 and the squatter uid 54321: root would simply
// remove the squatter's socket, which hides the attack.
func TestWakeSocketCannotBeSquatted(t *testing.T) {
	dir := sharedDir(t)
	db := filepath.Join(dir, "pcd.db")
	self, _ := os.Executable()
	helper, bin := sharedBinary(t, dir, self), sharedBinary(t, dir, pcdBin)
	squat := asUID(54321, helper)
	squat.Env = append(os.Environ(), "PCD_TEST_BIND="+db+".sock")
	out := new(buffer)
	squat.Stdout, squat.Stderr = out, out
	if err := squat.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { squat.Process.Kill(); squat.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "bound") {
		if time.Now().After(deadline) {
			t.Fatalf("squatter: %s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	victim := func(args ...string) *exec.Cmd {
		cmd := asUID(65534, append([]string{bin, "--db", db}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), raceEnv, "XDG_RUNTIME_DIR=", "TMPDIR="+dir)
		return cmd
	}
	d := victim("daemon", "--log-level", "debug")
	derr := new(buffer)
	d.Stderr = derr
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Kill(); d.Wait() })
	for !strings.Contains(derr.String(), "daemon started") {
		if time.Now().After(deadline) {
			t.Fatalf("daemon: %s", derr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sub := victim("submit", "--wait", "--sleep", "1")
	if b, err := sub.CombinedOutput(); err != nil {
		t.Fatalf("submit --wait: %v: %s", err, b)
	}
	d.Process.Signal(syscall.SIGTERM)
	d.Wait()
	if strings.Contains(out.String(), "woken") {
		t.Error("pcd sent its wake-ups to another user's socket")
	}
	if strings.Contains(derr.String(), "no wake socket") {
		t.Errorf("the daemon lost its wake socket to the squatter:\n%s", derr)
	}
}

// Two pcd run on one database: the second waits for the first, says so,
// then runs its own job. Neither hangs.
func TestSecondRunWaitsForTheFirst(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	gate := filepath.Join(dir, "go")
	// The first run's task ends only when the test opens the gate.
	first := start(t, db, nil, "run", "--no-output", "--", "sh", "-c", "while [ ! -e "+gate+" ]; do sleep 0.02; done")
	// "Starting Job" comes once the first holds the lock and made its job.
	// (Waiting for the sh process would match pcd run's own arguments.)
	for !strings.Contains(first.stdout.String(), "Starting Job") {
		select {
		case <-first.done:
			t.Fatalf("the first run ended: %s", first.stderr)
		case <-time.After(5 * time.Millisecond):
		}
	}
	second := start(t, db, nil, "run", "--sleep", "3")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(second.stderr.String(), "waiting for pid") {
		if time.Now().After(deadline) {
			t.Fatalf("the second run did not say it waits: %q; stdout %q; first: %q %q", second.stderr, second.stdout, first.stdout, first.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(second.stderr.String(), "(pcd run)") {
		t.Errorf("the second run does not say who it waits for: %q", second.stderr)
	}
	os.WriteFile(gate, nil, 0o600)
	if code := second.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("second run: exit %d: %s", code, second.stderr)
	}
	if code := first.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("first run: exit %d: %s", code, first.stderr)
	}
	if p := parseOutput(t, second.stdout.String()); len(p.numbers) != 3 || p.order[len(p.order)-1] != "job" {
		t.Errorf("second run printed %q", second.stdout)
	}
	if n := queryDB(t, db, "SELECT count(*) FROM jobs WHERE state = 'succeeded'"); n != 2 {
		t.Errorf("%d jobs succeeded, want 2", n)
	}
}

// startPiped starts pcd submit [flags] - reading the returned pipe.
func startPiped(t *testing.T, db string, flags ...string) (*proc, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	p := start(t, db, r, append([]string{"submit"}, append(flags, "-")...)...)
	r.Close()
	return p, w
}

// startStream starts pcd submit - with a pipe for stdin, writes lines to
// it, and waits until want tasks have committed.
func startStream(t *testing.T, db string, lines string, want int, flags ...string) (*proc, *os.File) {
	t.Helper()
	p, w := startPiped(t, db, flags...)
	if _, err := w.WriteString(lines); err != nil {
		t.Fatal(err)
	}
	// A query would create the file: wait for pcd to make it first.
	deadline := time.Now().Add(30 * time.Second)
	for n := 0; n == 0; {
		if _, err := os.Stat(db + ".submit"); err == nil { // made as the job is created
			n = 1
		}
		if time.Now().After(deadline) {
			t.Fatalf("no database after 30s: %s", p.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, db, "SELECT count(*) FROM tasks", want)
	return p, w
}

const noopLine = `{"kind":"noop"}` + "\n"

// A streaming submit killed with SIGKILL leaves an open job: the daemon
// sees that its submitter is gone, seals it with the tasks that committed,
// and runs it to its job callback; a job submitted after it runs too.
func TestKilledStreamingSubmitIsSealed(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	sub, _ := startStream(t, db, strings.Repeat(noopLine, 3), 3, "--key", "nightly")
	sub.cmd.Process.Kill()
	sub.wait(t, 10*time.Second)
	later := strings.TrimSpace(pcd(t, db, "submit", "--sleep", "2").stdout)
	d := startDaemon(t, db)
	defer stopDaemon(t, d)
	waitFor(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL", 2)
	if n := queryDB(t, db, "SELECT count(*) FROM callbacks WHERE event = 'job'"); n != 2 {
		t.Errorf("%d job callbacks, want 2", n)
	}
	if n := queryDB(t, db, "SELECT total FROM jobs ORDER BY id LIMIT 1"); n != 3 {
		t.Errorf("the orphan job has %d tasks, want the 3 that committed", n)
	}
	if st := queryString(t, db, "SELECT state FROM jobs WHERE uuid = '"+later+"'"); st != "succeeded" {
		t.Errorf("the job after the orphan is %s", st)
	}
	if !strings.Contains(d.stderr.String(), "submitter of an open job is gone") {
		t.Errorf("the daemon did not say why it sealed the job:\n%s", d.stderr)
	}
	// The key names the job, which is no longer stuck.
	again := pcd(t, db, "submit", "--key", "nightly", "--wait", "--sleep", "1")
	if again.code != 0 || !strings.HasPrefix(again.stdout, queryString(t, db, "SELECT uuid FROM jobs ORDER BY id LIMIT 1")) {
		t.Errorf("resubmitting with the key: exit %d, stdout %q, stderr %q", again.code, again.stdout, again.stderr)
	}
}

// Ctrl-C of a streaming submit seals the job at once.
func TestInterruptedStreamingSubmitSealsAtOnce(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	sub, _ := startStream(t, db, strings.Repeat(noopLine, 2), 2)
	sub.cmd.Process.Signal(syscall.SIGINT)
	if code := sub.wait(t, 10*time.Second); code != 130 {
		t.Errorf("exit %d after SIGINT, want 130; stderr %s", code, sub.stderr)
	}
	if n := queryDB(t, db, "SELECT sealed FROM jobs"); n != 1 {
		t.Error("the interrupted stream's job is not sealed")
	}
	if !strings.Contains(sub.stderr.String(), "sealed with the 2 tasks") {
		t.Errorf("stderr %q does not say what was kept", sub.stderr)
	}
	if r := pcd(t, db, "run", "--resume", queryString(t, db, "SELECT uuid FROM jobs")); r.code != 0 {
		t.Errorf("run --resume of the sealed job: exit %d: %s", r.code, r.stderr)
	}
}

// pcd run --resume of an orphaned open job seals it and runs it, rather
// than waiting for tasks that will never come.
func TestResumeSealsAnOrphanedStream(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	sub, _ := startStream(t, db, strings.Repeat(noopLine, 2), 2)
	sub.cmd.Process.Kill()
	sub.wait(t, 10*time.Second)
	p := start(t, db, nil, "run", "--resume", queryString(t, db, "SELECT uuid FROM jobs"))
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("run --resume: exit %d: %s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "submitter is gone") {
		t.Errorf("stderr %q", p.stderr)
	}
}

// pcd run --resume of a paused job resumes it and runs it to its end,
// rather than starting it and draining at once.
func TestResumeRunsAPausedJob(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	id := strings.TrimSpace(pcd(t, db, "submit", "--sleep", "3").stdout)
	if r := pcd(t, db, "pause", id); r.code != 0 {
		t.Fatalf("pause: exit %d: %s", r.code, r.stderr)
	}
	r := pcd(t, db, "run", "--resume", id)
	if r.code != 0 {
		t.Fatalf("run --resume of a paused job: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "was paused; it is resumed") {
		t.Errorf("run --resume did not say it resumed the job: %q", r.stderr)
	}
	if got := queryString(t, db, "SELECT state || ' ' || succeeded || ' ' || paused FROM jobs"); got != "succeeded 3 0" {
		t.Errorf("the job after run --resume: %s, want succeeded 3 0 (state, tasks succeeded, paused)", got)
	}
}

// An open job whose committed tasks are done holds no --max-jobs slot:
// the next job runs while its submitter is still streaming.
func TestOpenIdleJobHoldsNoSlot(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	d := startDaemon(t, db)
	defer stopDaemon(t, d)
	sub, w := startStream(t, db, noopLine, 1)
	waitFor(t, db, "SELECT count(*) FROM results", 1)
	later := strings.TrimSpace(pcd(t, db, "submit", "--sleep", "2").stdout)
	waitFor(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL AND uuid = '"+later+"'", 1)
	// The stream goes on, and its job ends when it does.
	w.WriteString(noopLine)
	w.Close()
	if code := sub.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("submit: exit %d: %s", code, sub.stderr)
	}
	waitFor(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL", 2)
	if n := queryDB(t, db, "SELECT total FROM jobs ORDER BY id LIMIT 1"); n != 2 {
		t.Errorf("the streamed job has %d tasks, want 2", n)
	}
}

// Commands that cannot start for want of file descriptors wait and run
// again: none fails, and none spends an attempt on it.
func TestOutOfFileDescriptorsSpendsNoAttempt(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	file := writeJob(t, dir, "true.json", 300, `{"kind":"exec","payload":{"argv":["true"]}}`)
	id := strings.TrimSpace(pcd(t, db, "submit", "--workers", "25", file).stdout)
	// Both limits, so that Go cannot raise the soft one at start.
	d := exec.Command("sh", "-c", "ulimit -n 48 && exec \"$0\" daemon --log-level debug", pcdBin)
	d.Env = append(os.Environ(), "PCD_DB="+db, raceEnv)
	errs := new(buffer)
	d.Stderr = errs
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Kill(); d.Wait() })
	r := pcd(t, db, "watch", id)
	d.Process.Signal(syscall.SIGTERM)
	d.Wait()
	if r.code != 0 {
		t.Errorf("watch: exit %d; %d tasks failed; daemon said:\n%s", r.code,
			queryDB(t, db, "SELECT count(*) FROM results WHERE state = 'failed'"), errs)
	}
	if r.code != 0 {
		t.Logf("errors: %s", queryString(t, db, "SELECT group_concat(DISTINCT error) FROM results WHERE state = 'failed'"))
	}
	if n := queryDB(t, db, "SELECT count(*) FROM results WHERE attempts != 1"); n != 0 {
		t.Errorf("%d tasks spent more than one attempt", n)
	}
	if !strings.Contains(errs.String(), "task could not start") {
		t.Errorf("no start ran out of file descriptors: the test proved nothing; daemon said:\n%s", errs)
	}
}

// A task that succeeds on a later attempt does not show an earlier
// attempt's error.
func TestSucceededTaskShowsNoEarlierError(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	mark := filepath.Join(dir, "once")
	r := pcd(t, db, "run", "--max-attempts", "2", "--backoff-base", "10ms", "--",
		"sh", "-c", "[ -e "+mark+" ] || { touch "+mark+"; echo first try fails >&2; exit 3; }")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	out := pcd(t, db, "tasks", "--json", queryString(t, db, "SELECT uuid FROM jobs")).stdout
	if !strings.Contains(out, `"attempts":2`) || strings.Contains(out, `"error"`) {
		t.Errorf("tasks --json of a task that succeeded at its second attempt: %s", out)
	}
}

// pcdIn runs the binary in dir and waits for it.
func pcdIn(t *testing.T, dir, db string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(pcdBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PCD_DB="+db, raceEnv)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("pcd %v: %v", args, err)
		}
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// A task runs in the directory it was submitted from, not the daemon's:
// a relative command, a --lines command, a relative "dir" and a job's own
// hook.
func TestTasksRunWhereTheyWereSubmitted(t *testing.T) {
	base := t.TempDir()
	db := filepath.Join(base, "db", "pcd.db")
	project := filepath.Join(base, "project")
	os.MkdirAll(filepath.Join(project, "sub"), 0o755)
	os.WriteFile(filepath.Join(project, "deploy.sh"), []byte("#!/bin/sh\necho deployed in \"$(pwd)\"\n"), 0o755)
	os.WriteFile(filepath.Join(project, "a.png"), nil, 0o644)
	os.WriteFile(filepath.Join(project, "sub", "b.png"), nil, 0o644)
	os.WriteFile(filepath.Join(project, "job.json"), []byte(`{"tasks": [{"kind": "exec", "payload": {"argv": ["ls", "b.png"], "dir": "sub"}}]}`), 0o644)
	d := startDaemon(t, db) // in the test's directory, not the project's
	defer stopDaemon(t, d)
	ids := []string{
		strings.TrimSpace(pcdIn(t, project, db, "", "submit", "--", "./deploy.sh").stdout),
		strings.TrimSpace(pcdIn(t, project, db, "ls a.png\n", "submit", "--lines", "-").stdout),
		strings.TrimSpace(pcdIn(t, project, db, "", "submit", "--on-job", "cat > outcome.json", "job.json").stdout),
		strings.TrimSpace(pcdIn(t, project, db, `{"kind":"exec","payload":{"argv":["ls","a.png"]}}`+"\n", "submit", "-").stdout),
	}
	for _, id := range ids {
		if w := pcd(t, db, "watch", id); w.code != 0 {
			t.Errorf("job %s: exit %d: %s %s", id, w.code, w.stdout, w.stderr)
		}
	}
	if out := pcd(t, db, "logs", queryString(t, db, "SELECT t.uuid FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.uuid = '"+ids[0]+"'")); !strings.Contains(out.stdout, "deployed in \""+project+"\"") && !strings.Contains(out.stdout, "deployed in "+project) {
		t.Errorf("./deploy.sh ran elsewhere: %q", out.stdout)
	}
	// pcd run hands its job to the daemon, and the job still runs here.
	handed := pcdIn(t, project, db, "", "run", "--", "./deploy.sh")
	if handed.code != 0 || !strings.Contains(handed.stderr, "was handed to it") {
		t.Errorf("pcd run beside the daemon: exit %d, stderr %q", handed.code, handed.stderr)
	}
	if out := pcd(t, db, "logs", lastTaskID(t, db)); !strings.Contains(out.stdout, project) {
		t.Errorf("the handed-off ./deploy.sh ran elsewhere: %q", out.stdout)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(project, "outcome.json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job's hook did not write outcome.json in the project")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hookCommand is a hook that appends each event to out (see hookHelper).
func hookCommand(t *testing.T, out string) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return "env PCD_TEST_HOOK_OUT=" + out + " " + self
}

// lineCount counts the lines of a file, 0 if it does not exist.
func lineCount(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// waitLines waits until path has want lines.
func waitLines(t *testing.T, path string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for lineCount(path) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d lines after 30s, want %d", path, lineCount(path), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A hook still running when the daemon is stopped gracefully finishes and
// is recorded as delivered, so the next start does not run it again.
func TestGracefulStopRecordsTheHookInFlight(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	out := filepath.Join(dir, "hook.ndjson")
	d := startDaemon(t, db, "--on-task", strings.Replace(hookCommand(t, out), "env ", "env PCD_TEST_HOOK_LINGER=1s ", 1))
	id := strings.TrimSpace(pcd(t, db, "submit", "--sleep", "1").stdout)
	waitLines(t, out, 1) // the hook has written and lingers a second
	stopDaemon(t, d)
	want := queryString(t, db, "SELECT max(c.id) FROM callbacks c JOIN jobs j ON j.id = c.job_id WHERE c.event = 'task' AND j.uuid = '"+id+"'")
	if got := queryString(t, db, "SELECT last_id FROM sink_cursors WHERE sink = 'daemon on-task'"); got != want {
		t.Fatalf("after a graceful stop the hook's cursor is %s, want its callback %s: the hook in flight was cut short and will run again", got, want)
	}
}

// A daemon sink new to the database starts with what is committed after
// it appears; a changed command is the same sink; replaying is explicit.
func TestNewSinkDoesNotReplayHistory(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	out := filepath.Join(dir, "hook.ndjson")
	for range 3 {
		if r := pcd(t, db, "run", "--sleep", "2"); r.code != 0 {
			t.Fatal(r.stderr)
		}
	}
	history := queryDB(t, db, "SELECT count(*) FROM callbacks WHERE event = 'task'")
	d := startDaemon(t, db, "--on-task", hookCommand(t, out))
	waitFor(t, db, "SELECT count(*) FROM sink_cursors WHERE sink = 'daemon on-task'", 1)
	id := strings.TrimSpace(pcd(t, db, "submit", "--sleep", "2").stdout)
	pcd(t, db, "watch", id)
	waitLines(t, out, 2)
	stopDaemon(t, d)
	if n := lineCount(out); n != 2 {
		t.Fatalf("the new hook ran %d times, want 2 (the new job's tasks only, not %d old ones)", n, history)
	}
	// One more space in the command: the same sink, nothing replayed.
	d = startDaemon(t, db, "--on-task", hookCommand(t, out)+" ")
	id = strings.TrimSpace(pcd(t, db, "submit", "--sleep", "1").stdout)
	pcd(t, db, "watch", id)
	waitLines(t, out, 3)
	stopDaemon(t, d)
	if n := lineCount(out); n != 3 {
		t.Fatalf("after a changed command the hook ran %d times in all, want 3", n)
	}
	// --replay-from replays, on request.
	d = startDaemon(t, db, "--on-task", hookCommand(t, out), "--replay-from", "1")
	all := queryDB(t, db, "SELECT count(*) FROM callbacks WHERE event = 'task'")
	waitLines(t, out, 3+all)
	stopDaemon(t, d)
}

// A retried job's new round reaches the job's own hook, and pcd callbacks
// shows the deliveries a sink has not tried as pending.
func TestRetryRoundReachesTheJobsHooks(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	out := filepath.Join(dir, "hook.ndjson")
	d := startDaemon(t, db)
	defer stopDaemon(t, d)
	id := strings.TrimSpace(pcd(t, db, "submit", "--on-task", hookCommand(t, out), "../testdata/jobs/some-fail.json").stdout)
	pcd(t, db, "watch", id)
	waitLines(t, out, 3)
	if r := pcd(t, db, "retry", id); r.code != 0 {
		t.Fatalf("retry: %s", r.stderr)
	}
	pcd(t, db, "watch", id)
	waitLines(t, out, 4) // the failed task's second round
}

// pcd run with its webhook receiver down: it waits --delivery-wait, exits
// with the job's code, and says what is left; pcd callbacks shows the
// untried ones as pending.
func TestRunDoesNotWaitLongForADownWebhook(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/hook"
	ln.Close() // nothing listens: connections are refused
	start := time.Now()
	r := pcd(t, db, "run", "--webhook", url, "--delivery-wait", "1s", "--sleep", "3")
	if r.code != 0 {
		t.Fatalf("exit %d, want the job's own 0: %s", r.code, r.stderr)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("pcd run took %v with a 1s --delivery-wait", took)
	}
	if !strings.Contains(r.stderr, "callback deliveries of job") || !strings.Contains(r.stderr, "still pending") {
		t.Errorf("stderr %q does not say what is left", r.stderr)
	}
	cb := pcd(t, db, "callbacks", "--json", queryString(t, db, "SELECT uuid FROM jobs"))
	if n := strings.Count(cb.stdout, `"state":"pending"`); n < 3 {
		t.Errorf("pcd callbacks shows %d pending rows, want the untried webhook deliveries:\n%s", n, cb.stdout)
	}
	if !strings.Contains(cb.stdout, `"sink":"webhook `+url+`"`) {
		t.Errorf("pcd callbacks has no webhook rows:\n%s", cb.stdout)
	}
}

// A read-only database file, a database directory without write
// permission, and a file that cannot be read get exit 3, not 70 (a bug).
// Root bypasses file permissions, so pcd runs as uid 65534 here.
func TestPermissionErrorsExitThree(t *testing.T) {
	shared := sharedDir(t)
	bin := filepath.Join(shared, "pcd")
	data, err := os.ReadFile(pcdBin)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, data, 0o755)
	dir := filepath.Join(shared, "state")
	os.Mkdir(dir, 0o700)
	os.Chown(dir, 65534, 65534)
	db := filepath.Join(dir, "pcd.db")
	asUser := func(args ...string) result {
		cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", bin, "--db", db}, args...)...)
		cmd.Dir = shared
		cmd.Env = append(os.Environ(), raceEnv)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Run()
		return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
	}
	if r := asUser("run", "--sleep", "2"); r.code != 0 {
		t.Fatalf("run as uid 65534: exit %d: %s", r.code, r.stderr)
	}
	for _, tc := range []struct {
		name     string
		dirMode  os.FileMode
		fileMode os.FileMode
		args     []string
	}{
		{"read-only database file", 0o700, 0o400, []string{"submit", "--sleep", "1"}},
		{"directory without write permission", 0o500, 0o600, []string{"submit", "--sleep", "1"}},
		{"unreadable database file", 0o700, 0o000, []string{"jobs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Chmod(dir, tc.dirMode)
			os.Chmod(db, tc.fileMode)
			defer os.Chmod(dir, 0o700)
			defer os.Chmod(db, 0o600)
			before := snapshot(t, dir)
			r := asUser(tc.args...)
			if r.code != 3 || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 3 and one line", r.code, r.stderr)
			}
			if after := snapshot(t, dir); after != before {
				t.Errorf("files changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// A NUL byte in an argv or env value is refused at submit, with nothing
// written; control characters in user text are escaped when printed.
func TestNULRefusedAndControlCharactersEscaped(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	pcd(t, db, "submit", "--sleep", "1") // the database exists
	before := fileSum(t, db)
	for i, payload := range []string{
		`{"argv": ["echo", "a\u0000b"]}`,
		`{"shell": "echo $X", "env": {"X": "a\u0000b"}}`,
	} {
		file := filepath.Join(dir, fmt.Sprintf("nul%d.json", i))
		os.WriteFile(file, []byte(`{"tasks": [{"kind": "exec", "payload": `+payload+`}]}`), 0o600)
		r := pcd(t, db, "submit", file)
		if r.code != 2 || !strings.Contains(r.stderr, "NUL") {
			t.Errorf("%s: exit %d, stderr %q; want 2 naming the NUL", payload, r.code, r.stderr)
		}
	}
	if fileSum(t, db) != before {
		t.Error("a refused submit changed the database")
	}
	evil := "evil\x1b]0;pwned\x07\u202ename\r\n"
	id := strings.TrimSpace(pcd(t, db, "submit", "--name", evil, "--sleep", "1").stdout)
	for _, args := range [][]string{{"jobs"}, {"status", id}} {
		out := pcd(t, db, args...).stdout
		if strings.ContainsAny(out, "\x1b\x07\r\u202e") {
			t.Errorf("pcd %v printed raw control characters: %q", args, out)
		}
		if !strings.Contains(out, `evil\x1b]0;pwned\x07\u202ename\r\n`) {
			t.Errorf("pcd %v does not show the escaped name: %q", args, out)
		}
	}
}

// The private socket directory under $TMPDIR is checked at every start:
// one that another user made first is refused with a clear message, and
// the daemon falls back to polling rather than binding in it.
func TestSquattedSocketDirectoryIsRefused(t *testing.T) {
	dir := sharedDir(t)
	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o777)
	os.Chmod(tmp, 0o777|os.ModeSticky)
	squatted := filepath.Join(tmp, fmt.Sprintf("pcd-%d", os.Geteuid()))
	asNobody(t, "sh", "-c", "umask 0; mkdir "+squatted)
	db := filepath.Join(dir, "pcd.db")
	d := startIn(t, db, []string{"TMPDIR=" + tmp, "XDG_RUNTIME_DIR="}, nil, "daemon")
	waitLog(t, d, "no wake socket")
	if !strings.Contains(d.stderr.String(), "not a directory private to you") {
		t.Errorf("the daemon does not say why: %s", d.stderr)
	}
	if entries, _ := os.ReadDir(squatted); len(entries) > 0 {
		t.Errorf("pcd put %v in another user's directory", entries)
	}
	id := strings.TrimSpace(pcd(t, db, "submit", "--sleep", "1").stdout)
	if w := pcd(t, db, "watch", id); w.code != 0 {
		t.Errorf("watch: exit %d: %s", w.code, w.stderr)
	}
	stopDaemon(t, d)
}

// pcd retry keeps a task's count of interruptions.
func TestRetryKeepsInterruptions(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	gate := filepath.Join(dir, "gate")
	s := uniqueSleep(60)
	t.Cleanup(func() { killAll(processesWith("sleep", s)) })
	id := strings.TrimSpace(pcd(t, db, "submit", "--", "sh", "-c", "[ -e "+gate+" ] && exit 1; sleep "+s).stdout)
	d := startDaemon(t, db)
	waitFor(t, db, "SELECT count(*) FROM running WHERE pgid IS NOT NULL", 1)
	d.cmd.Process.Kill()
	d.wait(t, 10*time.Second)
	os.WriteFile(gate, nil, 0o600)
	d = startDaemon(t, db)
	defer stopDaemon(t, d)
	if w := pcd(t, db, "watch", id); w.code != 1 {
		t.Fatalf("watch: exit %d, want the job to fail: %s", w.code, w.stderr)
	}
	if r := pcd(t, db, "retry", id); r.code != 0 {
		t.Fatalf("retry: %s", r.stderr)
	}
	pcd(t, db, "watch", id)
	if out := pcd(t, db, "tasks", "--json", id).stdout; !strings.Contains(out, `"interrupts":1`) {
		t.Errorf("after a retry the task shows: %s", out)
	}
}

// A hook command goes through the same process rules as a task: one whose
// child escapes its group ends when it does, and the child is killed.
func TestHookWithAnEscapedChild(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	s := uniqueSleep(40)
	t.Cleanup(func() { killAll(processesWith("sleep", s)) })
	start := time.Now()
	r := pcd(t, db, "run", "--on-job", "setsid sleep "+s+" & echo hooked", "--sleep", "1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the hook held pcd run for %v", took)
	}
	if left := processesWith("sleep", s); len(left) > 0 {
		t.Errorf("the hook's escaped child outlived it: %v", left)
	}
	if cb := pcd(t, db, "callbacks", "--json", queryString(t, db, "SELECT uuid FROM jobs")); !strings.Contains(cb.stdout, `"state":"delivered"`) ||
		!strings.Contains(cb.stdout, "on-job") {
		t.Errorf("the hook's delivery: %s", cb.stdout)
	}
}
