package e2e_test

// Faults of the environment: a full disk, and another process holding the
// database's write lock.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitLog waits until the process's stderr contains s.
func waitLog(t *testing.T, p *proc, s string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		select {
		case <-p.done:
			t.Fatalf("process exited (%d) before logging %q:\n%s", p.cmd.ProcessState.ExitCode(), s, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after 60s:\n%s", s, p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDiskFull(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "small")
	os.Mkdir(dir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs here (%v: %s); the disk-full test needs root", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	db := filepath.Join(dir, "pcd.db")
	job := writeJob(t, t.TempDir(), "job.json", 3000, `{"kind":"noop"}`)
	if r := pcd(t, db, "submit", "--workers", "4", job); r.code != 0 {
		t.Fatalf("submit: %s", r.stderr)
	}
	// Leave almost no room.
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	free := int64(fs.Bavail) * fs.Bsize
	if err := os.WriteFile(filler, make([]byte, max(free-96<<10, 0)), 0o600); err != nil && !strings.Contains(err.Error(), "no space") {
		t.Fatal(err)
	}

	d := startWith(t, db, nil, "daemon", "--retry-after", "100ms", "--max-jobs", "1")
	waitLog(t, d, "the disk is full")
	time.Sleep(time.Second) // several retries
	if n := strings.Count(d.stderr.String(), "the disk is full"); n != 1 {
		t.Errorf("the disk-full error was logged %d times, want once:\n%s", n, d.stderr)
	}
	done := queryDB(t, db, "SELECT count(*) FROM results WHERE state = 'succeeded'")
	if done >= 3000 {
		t.Fatal("the job finished: the disk was never full")
	}
	os.Remove(filler)
	waitLog(t, d, "resumed")
	waitFor(t, db, "SELECT count(*) = 0 FROM jobs WHERE finished_at IS NULL", 1)
	stopDaemon(t, d)
	checkInvariants(t, db)
	t.Logf("%d tasks were committed before the disk filled", done)
}

// daemonOnAJob starts a daemon (busy timeout 200 ms, and args) on a job of
// 100 sleeps of 50 ms, two at a time: long enough (2.5 s) that it is still
// running when a test takes the write lock, even on a loaded machine. It
// returns once 4 tasks are done.
func daemonOnAJob(t *testing.T, args ...string) (string, *proc) {
	t.Helper()
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	job := writeJob(t, dir, "job.json", 100, `{"kind":"sleep","payload":{"secs":0.05}}`)
	if r := pcd(t, db, "submit", "--workers", "2", job); r.code != 0 {
		t.Fatalf("submit: %s", r.stderr)
	}
	d := startWith(t, db, nil, append([]string{"--busy-timeout", "200ms", "daemon"}, args...)...)
	waitFor(t, db, "SELECT count(*) FROM results WHERE state = 'succeeded'", 4)
	return db, d
}

func TestWriteLockHeldByAnotherProcess(t *testing.T) {
	db, d := daemonOnAJob(t, "--retry-after", "100ms")
	// Another process (this test) takes the write lock and sits on it.
	ctx := context.Background()
	conn := otherConn(t, db, "BEGIN IMMEDIATE")
	var unfinished int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM jobs WHERE finished_at IS NULL").Scan(&unfinished); err != nil || unfinished != 1 {
		t.Fatalf("the job finished before the lock was taken (%d unfinished, %v): nothing left to write", unfinished, err)
	}
	waitLog(t, d, "holds the database's write lock")
	time.Sleep(time.Second)
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "resumed")
	waitFor(t, db, "SELECT count(*) = 0 FROM jobs WHERE finished_at IS NULL", 1)
	stopDaemon(t, d)
	if n := strings.Count(d.stderr.String(), "holds the database's write lock"); n != 1 {
		t.Errorf("the busy warning was logged %d times, want once", n)
	}
	// The running job waited; it was not torn down and started again.
	if n := strings.Count(d.stderr.String(), "job started"); n != 1 {
		t.Errorf("the job was started %d times, want once: a held lock tore it down:\n%s", n, d.stderr)
	}
	checkInvariants(t, db)
}

// A hard stop while another process holds the write lock does not hang:
// the waiting commit gives up, and the tasks run again at the next start.
func TestHardStopWhileTheLockIsHeld(t *testing.T) {
	db, d := daemonOnAJob(t, "--grace", "100ms")
	ctx := context.Background()
	conn := otherConn(t, db, "BEGIN IMMEDIATE")
	waitLog(t, d, "holds the database's write lock")
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(t, 30*time.Second)
	conn.ExecContext(ctx, "ROLLBACK")
	runToEnd(t, db)
	checkInvariants(t, db)
}

// A streaming submit that fills the disk stops with exit 75; its job keeps
// the batches that committed and is sealed (by the submitter, or by the
// runner once the submitter is gone), and once there is room again the
// daemon runs it to its end: it blocks nothing.
func TestStreamingSubmitFillsTheDisk(t *testing.T) {
	usePlainBinary(t)
	dir := filepath.Join(t.TempDir(), "small")
	os.Mkdir(dir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs here (%v: %s); the disk-full test needs root", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	db := filepath.Join(dir, "pcd.db")
	// Lines arrive slowly enough to commit in many batches, and there are
	// more of them than 4 MiB holds.
	line := `{"kind":"exec","payload":{"argv":["true","` + strings.Repeat("x", 500) + `"]}}` + "\n"
	sub, w := startPiped(t, db)
	go func() {
		defer w.Close()
		for range 400 {
			// 50 lines at a time, so that batches stay small.
			if _, err := w.WriteString(strings.Repeat(line, 50)); err != nil {
				return // the submitter stopped reading
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	if code := sub.wait(t, time.Minute); code != 75 {
		t.Fatalf("submit on a full disk: exit %d, want 75; stderr %s", code, sub.stderr)
	}
	// The submitter seals the job with what committed if the disk lets
	// it; if not, the runner does once the submitter is gone.
	committed := queryDB(t, db, "SELECT count(*) FROM tasks")
	if committed == 0 {
		t.Fatal("no task committed before the disk filled")
	}
	t.Logf("%d tasks committed; the submitter sealed the job: %v", committed, queryDB(t, db, "SELECT sealed FROM jobs") == 1)
	// Room again: grow the tmpfs.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	d := startDaemon(t, db)
	waitFor(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL", 1)
	stopDaemon(t, d)
	if n := queryDB(t, db, "SELECT total FROM jobs"); n != committed {
		t.Errorf("the job has %d tasks, want the %d that committed", n, committed)
	}
	checkInvariants(t, db)
}
