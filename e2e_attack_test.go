package main_test

// End-to-end tests of the promises pcd keeps under attack: commands whose
// children escape, runners killed with SIGKILL, two runners at once,
// another user on the machine.

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
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

// processesWith lists the live processes whose command line holds every
// word.
func processesWith(words ...string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
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
	if r.code != 1 || !strings.Contains(r.stdout, "timed out") {
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
			d2 := startDaemon(t, db)
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
	raw, err := sql.Open("sqlite", db)
	if err != nil {
		t.Fatal(err)
	}
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
	run := start(t, db, nil, "run", "--workers", "2", "--lines", jobs)
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
