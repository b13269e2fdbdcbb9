package process

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// sleeper starts a command in a process group of its own.
func sleeper(t *testing.T) (*exec.Cmd, <-chan error) {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	return cmd, done
}

// The fence kills the groups it knows of once the lease it was told of
// runs out with no word from the runner, and when the runner's pipe
// closes; a group that ended is left alone, and a lease renewed in time
// kills nothing.
func TestFenceKillsWhenTheLeaseRunsOut(t *testing.T) {
	r, w := io.Pipe()
	ar, aw := io.Pipe()
	fenced := make(chan struct{})
	go func() { runFence(r, aw, time.Now); aw.Close(); close(fenced) }()
	say := func(s string) { fmt.Fprintln(w, s) }
	answers := bufio.NewScanner(ar)
	ask := func(pid int) string {
		t.Helper()
		say(fmt.Sprint("?", pid))
		if !answers.Scan() {
			t.Fatalf("no answer for group %d", pid)
		}
		return answers.Text()
	}

	renewed, renewedDone := sleeper(t)
	say(fmt.Sprint("+", renewed.Process.Pid))
	for range 10 { // the runner renews: nothing dies
		say(fmt.Sprint("L ", int64(100*time.Millisecond)))
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-renewedDone:
		t.Fatalf("a command died while the lease was renewed: %v", err)
	default:
	}
	// The runner freezes: no word for longer than the lease it told.
	start := time.Now()
	select {
	case <-renewedDone:
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("the fence killed the group %v after the lease ran out", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fence did not kill the group of a runner that went silent")
	}
	// Asked, the fence says it killed that group: the runner spends no
	// attempt on it.
	if got, want := ask(renewed.Process.Pid), fmt.Sprint(renewed.Process.Pid, " 1"); got != want {
		t.Errorf("asked about the group it killed, the fence says %q, want %q", got, want)
	}
	// A group it hears of after the lease ran out dies at once.
	late, lateDone := sleeper(t)
	say(fmt.Sprint("+", late.Process.Pid))
	select {
	case <-lateDone:
	case <-time.After(10 * time.Second):
		t.Fatal("a group started after the lease ran out lives on")
	}
	// The runner rejoins (a new lease); its next group lives until the
	// pipe closes, as when the runner dies.
	say(fmt.Sprint("L ", int64(time.Hour)))
	last, lastDone := sleeper(t)
	say(fmt.Sprint("+", last.Process.Pid))
	ended, endedDone := sleeper(t)
	say(fmt.Sprint("+", ended.Process.Pid))
	// Ended (here by the test's own kill): not the fence's doing, nor the
	// fence's any more.
	syscall.Kill(-ended.Process.Pid, syscall.SIGKILL)
	<-endedDone
	if got, want := ask(ended.Process.Pid), fmt.Sprint(ended.Process.Pid, " 0"); got != want {
		t.Errorf("asked about a group it did not kill, the fence says %q, want %q", got, want)
	}
	// A group the runner is done with (its leader ended, others may
	// linger) is left alone.
	untracked, untrackedDone := sleeper(t)
	say(fmt.Sprint("+", untracked.Process.Pid))
	say(fmt.Sprint("-", untracked.Process.Pid))
	time.Sleep(50 * time.Millisecond)
	select {
	case <-lastDone:
		t.Fatal("a group died under a valid lease")
	default:
	}
	w.Close()
	select {
	case <-lastDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the fence did not kill the groups when the runner's pipe closed")
	}
	<-fenced
	select {
	case <-untrackedDone:
		t.Error("the fence killed a group it was told had ended")
	default:
	}
}

// pipedFence is a runner's end of a fence that runs in this process.
func pipedFence(t *testing.T) (f *Fence, fenceDone <-chan struct{}) {
	t.Helper()
	r, w := io.Pipe()
	ar, aw := io.Pipe()
	done := make(chan struct{})
	go func() { runFence(r, aw, time.Now); aw.Close(); close(done) }()
	f = &Fence{w: w, cmd: exec.Command("true"), done: make(chan struct{}), answers: make(chan struct{}),
		asked: map[int]chan bool{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.cmd.Process = &os.Process{Pid: 1}
	go f.readAnswers(ar)
	t.Cleanup(func() { w.Close(); <-done })
	return f, done
}

// A command that ends by SIGKILL spends no attempt only when its fence
// says it killed it: a group killed by someone else (the OOM killer, a
// user), or while the fence is gone, is the command's own failure.
func TestFenceTellsWhatItKilled(t *testing.T) {
	f, _ := pipedFence(t)
	other, otherDone := sleeper(t)
	f.Track(other.Process.Pid)
	syscall.Kill(-other.Process.Pid, syscall.SIGKILL)
	<-otherDone
	if f.Killed(other.Process.Pid) {
		t.Error("the fence says it killed a group that someone else killed")
	}

	fenced, fencedDone := sleeper(t)
	f.Track(fenced.Process.Pid)
	f.say("L 1") // the lease runs out at once
	select {
	case <-fencedDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the fence did not kill the group of a runner whose lease ran out")
	}
	if !f.Killed(fenced.Process.Pid) {
		t.Error("the fence does not say it killed the group it killed")
	}

	g, gone := pipedFence(t)
	late, lateDone := sleeper(t)
	g.Track(late.Process.Pid)
	g.w.Close() // the fence is gone: it kills what it knew of, and exits
	<-gone
	<-lateDone
	if g.Killed(late.Process.Pid) {
		t.Error("a fence that is gone answers that it killed a group")
	}
}
