package process

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Containment. A runner that is SIGKILLed cannot kill what its tasks
// started: Pdeathsig ends a command, not its children, and a descendant
// that left the command's process group lives on until the next runner
// sweeps it (KillLeftovers). So where the machine allows it, a runner
// starts every command inside a PID namespace of its own:
//
//   - A spawner goroutine, locked to its thread for the runner's life,
//     unshares a PID and a mount namespace on that thread. Every command
//     is forked from there (Start): it runs in the new PID namespace, with
//     its own pid, process group and signals as before.
//   - The first process forked there is the namespace's init, the keeper:
//     this binary again (RunFence). It mounts a /proc of the namespace, so
//     that $$, /proc and ps inside a task agree, reaps the orphans
//     re-parented to it, and dies with the runner (a death signal tied to
//     the spawner's thread).
//   - When the namespace's init dies, the kernel kills every process left
//     in it, whichever group, session or environment it has. So nothing a
//     task started outlives its runner, however the runner ends.
//
// It needs CAP_SYS_ADMIN: root, or a runner in a user namespace of its
// own (RunInUserNamespace). Without it, or with PCD_CONTAIN=off, the
// runner keeps the subreaper, the sweeps and the next runner's
// KillLeftovers.

// keeperEnv marks the process that is the keeper of a runner's namespace.
const keeperEnv = "PCD_KEEPER_OF"

// contained is the runner's namespace, while it has one.
var contained struct {
	spawn  chan spawnReq
	quit   chan struct{} // closed to end the spawner
	keeper *exec.Cmd
	stdin  io.Closer
	done   chan struct{} // closed when the spawner has returned
}

type spawnReq struct {
	cmd   *exec.Cmd
	cg    *Cgroup
	reply chan error
}

// Contain starts the runner's namespace: from then on Start forks every
// command inside it. stop ends it, and the kernel kills what is still in
// it. An error says why the machine does not allow it; Start then forks
// in the runner's own namespace, as before.
func Contain() (stop func(), err error) {
	if !fenceLinked.Load() {
		return nil, errors.New("the program does not call process.RunFence, which runs the namespace's init")
	}
	if os.Getenv(ContainVar) == "off" {
		return nil, containError(nil)
	}
	procs.mu.Lock()
	active := contained.spawn != nil
	procs.mu.Unlock()
	if active {
		return nil, errors.New("the tasks' namespace is running already")
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// The os package probes, before its first fork, whether pidfds work,
	// with a child that exits at once: forked from the spawner's thread,
	// that child would be the namespace's init, and the namespace would
	// die with it. FindProcess makes the probe happen here.
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Release()
	}
	spawn := make(chan spawnReq)
	ready := make(chan error, 1)
	quit, done := make(chan struct{}), make(chan struct{})
	go spawner(self, spawn, quit, ready, done)
	if err := <-ready; err != nil {
		<-done
		return nil, containError(err)
	}
	procs.mu.Lock()
	contained.spawn, contained.quit, contained.done = spawn, quit, done
	procs.mu.Unlock()
	return stopContaining, nil
}

// stopContaining ends the namespace: the keeper exits, and the kernel
// kills every process still in the namespace; then the spawner's thread
// ends.
func stopContaining() {
	procs.mu.Lock()
	quit, done, keeper, stdin := contained.quit, contained.done, contained.keeper, contained.stdin
	contained.spawn, contained.quit, contained.keeper, contained.stdin = nil, nil, nil, nil
	procs.mu.Unlock()
	if quit == nil {
		return
	}
	_ = stdin.Close()
	_ = keeper.Wait()
	Done(keeper.Process.Pid)
	close(quit)
	<-done
}

// spawner runs on a thread of its own, which it leaves in the new
// namespaces: it never unlocks it, so the thread ends with it, and with
// the thread every process forked from it gets its death signal.
func spawner(self string, reqs <-chan spawnReq, quit <-chan struct{}, ready chan<- error, done chan<- struct{}) {
	defer close(done)
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_NEWPID); err != nil {
		ready <- fmt.Errorf("unshare a PID namespace: %w", err)
		return
	}
	// The /proc of the namespace must not show on the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		ready <- fmt.Errorf("make the mounts private: %w", err)
		return
	}
	if err := startKeeper(self); err != nil {
		ready <- err
		return
	}
	if err := dropAmbientCaps(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for {
		select {
		case req := <-reqs:
			req.reply <- req.cg.start(req.cmd)
		case <-quit:
			return
		}
	}
}

// startKeeper starts the namespace's init and waits until it has mounted
// the namespace's /proc.
func startKeeper(self string) error {
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), keeperEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	w, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	r, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := startFenceProcess(cmd); err != nil {
		return fmt.Errorf("start the namespace's init: %w", err)
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || line != "ready\n" {
		_ = w.Close()
		_ = cmd.Wait()
		Done(cmd.Process.Pid)
		if err == nil {
			err = errors.New(line)
		}
		return fmt.Errorf("the namespace's init: %w", err)
	}
	contained.keeper, contained.stdin = cmd, w
	return nil
}

// startContained forks cmd in the runner's namespace, if it has one, and
// in the cgroup cg if not nil; false if it has no namespace.
func startContained(cmd *exec.Cmd, cg *Cgroup) (bool, error) {
	procs.mu.Lock()
	spawn, quit := contained.spawn, contained.quit
	procs.mu.Unlock()
	if spawn == nil {
		return false, nil
	}
	reply := make(chan error, 1)
	select {
	case spawn <- spawnReq{cmd: cmd, cg: cg, reply: reply}:
		return true, <-reply
	case <-quit:
		// The runner is closing: no namespace to start in any more.
		return false, nil
	}
}

// keeperPid is the host pid of the namespace's init, 0 without one.
func keeperPid() int {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if contained.keeper == nil {
		return 0
	}
	return contained.keeper.Process.Pid
}

// runKeeper is the namespace's init: it mounts the namespace's /proc,
// says so, then reaps orphans until the runner closes its input (or
// dies: the death signal kills it). When it returns, the process exits
// and the kernel kills what is left in the namespace.
func runKeeper() {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGPIPE, syscall.SIGQUIT)
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		fmt.Fprintf(os.Stdout, "mount the namespace's /proc: %v\n", err)
		return
	}
	os.Stdout.WriteString("ready\n")
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(closed)
	}()
	tick := time.NewTicker(time.Second) // a SIGCHLD merged with another
	defer tick.Stop()
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		select {
		case <-children:
		case <-tick.C:
		case <-closed:
			return
		}
	}
}
