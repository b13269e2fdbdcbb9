package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/pcd-dev/pcd/engine/jobfile"
	"github.com/pcd-dev/pcd/engine/process"
)

// DefaultOutputCap is how much of each of stdout and stderr an exec task
// keeps: the last 64 KiB.
const DefaultOutputCap = 64 << 10

// Exec is the exec kind: a command run with no shell, {"argv": [...]}, or
// with sh -c, {"shell": "..."}. Options: dir, env (added to pcd's
// environment), stdin (a string) and timeout (seconds, or a duration such
// as "30s").
//
// Each command runs in its own process group. On a timeout, a cancel or a
// hard stop, the group gets SIGTERM, then SIGKILL after KillGrace. When
// the command exits, whatever it left running in its group is killed, so
// no child or grandchild outlives its task.
type Exec struct {
	OutputCap int           // bytes of each stream kept; default DefaultOutputCap
	KillGrace time.Duration // SIGTERM to SIGKILL; default 5s
	// LiveDir, when set, is where a running command's stdout and stderr
	// go as they come, together in <task id>.<pid>.log (0600), for pcd
	// logs --follow. The file goes when the command ends, and starts
	// over past LiveCap bytes (default DefaultLiveCap).
	LiveDir string
	LiveCap int64
	// SpoolDir is where a stream goes whole when it is longer than
	// OutputCap, or is not text (see SpoolPath). Empty: such a stream is
	// cut to its last OutputCap bytes, and the result says so.
	SpoolDir string
}

// ExecResult is an exec task's result.
type ExecResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	// Truncated: the result keeps the stream's last OutputCap bytes only.
	StdoutTruncated bool `json:"stdout_truncated,omitempty"`
	StderrTruncated bool `json:"stderr_truncated,omitempty"`
	// Spooled: the stream is whole in its spool file (SpoolPath), on the
	// host that ran the task, until the job is pruned.
	StdoutSpooled bool `json:"stdout_spooled,omitempty"`
	StderrSpooled bool `json:"stderr_spooled,omitempty"`
	// SpoolError is why a stream could not be spooled, and was cut.
	SpoolError string `json:"spool_error,omitempty"`
	TimedOut   bool   `json:"timed_out,omitempty"`
	// Signal is the signal that killed the command, 0 if none.
	Signal int `json:"signal,omitempty"`
	// Tag is the payload's tag (pcd run --tag), for the printer.
	Tag string `json:"tag,omitempty"`
	// MaxRSSKiB is the command's peak resident memory, and CPUSecs its CPU
	// time, user and system, each with those of the descendants it waited
	// for (Linux: getrusage; absent elsewhere).
	//
	// With a memory limit, or a group's, the peak is its cgroup's: the
	// most memory charged to it at once, resident memory and page cache,
	// as the limit counts it.
	MaxRSSKiB int64   `json:"max_rss_kib,omitempty"`
	CPUSecs   float64 `json:"cpu_secs,omitempty"`
	// OOMKilled: the kernel killed the command, or one of its processes,
	// for want of memory, and the command failed.
	OOMKilled bool `json:"oom_killed,omitempty"`
}

// Exec is not Isolated: a command acts on the world, so it starts only
// once its start mark has committed. If its runner dies, the task is then
// always counted as interrupted, and shown as one that may have run twice.

// Validate checks the payload, and that the directory and command exist
// here, so that a typo is refused at submit rather than at run time.
func (Exec) Validate(payload json.RawMessage) error {
	p, err := jobfile.ParseExec(payload)
	if err != nil {
		return err
	}
	if p.Dir != "" {
		fi, err := os.Stat(p.Dir)
		if err != nil {
			return fmt.Errorf("dir: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("dir %s is not a directory", p.Dir)
		}
	}
	if err := CheckLimits(p.Limits); err != nil {
		return err
	}
	if len(p.Argv) > 0 {
		return process.CheckCommand(p.Argv[0], p.Dir)
	}
	return nil
}

// CheckLimits says why this process cannot enforce the limits l, if it
// cannot: they are refused, never ignored.
func CheckLimits(l Limits) error {
	if l.IsZero() {
		return nil
	}
	if err := process.CheckLimits(process.Limits{Memory: int64(l.Memory), CPUs: l.CPUs}); err != nil {
		return fmt.Errorf("memory and cpus limits cannot be enforced here: %w", err)
	}
	return nil
}

var hookRuns atomic.Int64

// ErrResource marks a command that could not start for want of a resource
// that may come back (file descriptors, processes, memory). The task did
// not run: it waits and runs again without spending an attempt.
var ErrResource = errors.New("out of a system resource")

// drainWait bounds how long the output pipes may stay open once the
// command and everything it left behind are killed: a process outside the
// task's reach (one that cleared its environment and left its group) may
// still hold them, and a task must end anyway.
const drainWait = 2 * time.Second

// Run runs the command.
func (e Exec) Run(ctx context.Context, t Task) (json.RawMessage, error) {
	p, err := jobfile.ParseExec(t.Payload)
	if err != nil {
		return nil, err
	}
	capBytes := e.OutputCap
	if capBytes <= 0 {
		capBytes = DefaultOutputCap
	}
	grace := e.KillGrace
	if grace <= 0 {
		grace = 5 * time.Second
	}
	cmd, cookie := command(p, t)
	cg, err := taskCgroup(ctx, p, cookie)
	if err != nil {
		return nil, err
	}
	// Our own pipes: when the command exits we kill what it left behind,
	// and only then wait, a bounded time, for the pipes to drain.
	live := openLive(e.LiveDir, t.ID, e.LiveCap)
	out, err := captureOutput(cmd, live,
		newSpool(SpoolPath(e.SpoolDir, t.JobID, t.ID, "stdout"), capBytes),
		newSpool(SpoolPath(e.SpoolDir, t.JobID, t.ID, "stderr"), capBytes))
	if err != nil {
		live.close()
		return nil, startError(cmd.Args[0], fmt.Errorf("pipe: %w", err))
	}
	defer out.close()
	defer live.close()
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, time.Duration(p.Timeout), errTimedOut)
		defer cancel()
	}
	release, err := process.Start(cmd, cg)
	if err != nil {
		removeCgroup(cg)
		if errors.Is(err, syscall.EBADF) && nearFDLimit(cmd) {
			// The child could not move its descriptors above ours: the
			// descriptor limit, not a bad descriptor.
			err = fmt.Errorf("%w: %w", syscall.EMFILE, err)
		}
		closeWriters(cmd)
		out.readers.Wait()
		return nil, startError(cmd.Args[0], err)
	}
	closeWriters(cmd)
	pgid := cmd.Process.Pid
	process.FenceOf(ctx).Track(pgid)
	reportProcess(ctx, process.Group{Pgid: pgid, Start: process.StartTime(pgid)})
	state := waitStopping(ctx, cmd, grace)
	release()
	process.Done(pgid)
	fenced := false
	if f := process.FenceOf(ctx); f != nil {
		if ws, ok := sysStatus(state); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			fenced = f.Killed(pgid)
		} else {
			f.Untrack(pgid)
		}
	}
	// Sweep the group, then what left it: nothing the command started
	// outlives it.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	process.SweepAdopted(cookie)
	var usage *process.CgroupUsage
	if cg != nil {
		u := cg.Usage()
		usage = &u
		cg.Remove()
	}
	out.drain()
	if fenced {
		return nil, process.ErrFenced
	}
	return execOutcome(ctx, p, state, out, usage)
}

// taskCgroup is the cgroup of a command with limits, its own or its
// group's (withLimitGroup); nil for one with none.
func taskCgroup(ctx context.Context, p ExecPayload, cookie string) (*process.Cgroup, error) {
	lim := process.Limits{Memory: int64(p.Memory), CPUs: p.CPUs}
	group, _ := ctx.Value(limitGroupKey{}).(limitGroup)
	if group.err != nil {
		return nil, fmt.Errorf("cannot enforce the limits of its group %s: %w", group.name, group.err)
	}
	if lim.IsZero() && group.cg == nil {
		return nil, nil
	}
	cg, err := process.NewCgroup(group.cg, "task-"+cookie, lim)
	if err != nil {
		return nil, fmt.Errorf("cannot enforce the command's limits: %w", err)
	}
	return cg, nil
}

func removeCgroup(cg *process.Cgroup) {
	if cg != nil {
		cg.Remove()
	}
}

// limitGroup is the cgroup of a group with limits, in this runner, or
// why the runner could not make it.
type limitGroup struct {
	name string
	cg   *process.Cgroup
	err  error
}

type limitGroupKey struct{}

// withLimitGroup runs the exec tasks under ctx in the cgroup of their
// job's group, which holds the group's limits for them together.
func withLimitGroup(ctx context.Context, g limitGroup) context.Context {
	if g.cg == nil && g.err == nil {
		return ctx
	}
	return context.WithValue(ctx, limitGroupKey{}, g)
}

var runnerPid = strconv.Itoa(os.Getpid())

// command builds the command of an exec payload, and the cookie in its
// environment by which the processes it leaves behind are found.
func command(p ExecPayload, t Task) (*exec.Cmd, string) {
	argv, shell := p.Argv, p.Shell
	if p.Slot != "" {
		slot := strconv.Itoa(t.Slot)
		argv = make([]string, len(p.Argv))
		for i, a := range p.Argv {
			argv[i] = strings.ReplaceAll(a, p.Slot, slot)
		}
		shell = strings.ReplaceAll(shell, p.Slot, slot)
	}
	if shell != "" {
		argv = []string{"/bin/sh", "-c", shell}
	}
	cookie := t.ID + "." + strconv.Itoa(t.Attempt)
	if t.ID == "" {
		cookie = "hook." + strconv.FormatInt(hookRuns.Add(1), 10)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = p.Dir
	// The runner's pid: in the runner's PID namespace (process.Contain) a
	// command's parent is outside it, and $PPID is 0.
	cmd.Env = append(os.Environ(), process.RunIDVar+"="+cookie, "PCD_RUNNER_PID="+runnerPid)
	if t.ID != "" {
		cmd.Env = append(cmd.Env, "PCD_JOB_ID="+t.JobID, "PCD_TASK_ID="+t.ID, "PCD_SLOT="+strconv.Itoa(t.Slot))
	}
	for k, v := range p.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if p.Stdin != "" {
		cmd.Stdin = strings.NewReader(p.Stdin)
	}
	return cmd, cookie
}

// output is a command's stdout and stderr, each read from a pipe of our
// own into a spool: memory of bounded size, then a file.
type output struct {
	stdout, stderr *spool
	readers        sync.WaitGroup
	readEnds       []*os.File
}

// captureOutput sets cmd's stdout and stderr to pipes read into the
// spools, and into live as they come.
func captureOutput(cmd *exec.Cmd, live *liveOutput, stdout, stderr *spool) (*output, error) {
	o := &output{stdout: stdout, stderr: stderr}
	for _, pipe := range []struct {
		set  *io.Writer
		tail *spool
	}{{&cmd.Stdout, o.stdout}, {&cmd.Stderr, o.stderr}} {
		r, w, err := os.Pipe()
		if err != nil {
			closeWriters(cmd)
			o.readers.Wait()
			o.close()
			return nil, err
		}
		*pipe.set = w
		o.readEnds = append(o.readEnds, r)
		o.readers.Add(1)
		go func() {
			defer o.readers.Done()
			var w io.Writer = pipe.tail
			if live != nil {
				w = io.MultiWriter(pipe.tail, live)
			}
			_, _ = io.Copy(w, r)
		}()
	}
	return o, nil
}

// drain waits for the readers to reach the end of the pipes, at most
// drainWait: a process that escaped the sweeps may hold them open.
func (o *output) drain() {
	drained := make(chan struct{})
	go func() {
		o.readers.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(drainWait):
		o.closePipes() // ends the readers' Copy
		<-drained
	}
}

func (o *output) closePipes() {
	for _, r := range o.readEnds {
		r.Close()
	}
}

// close closes the pipes, and the spool files of a run that ended with no
// result. The readers must have ended.
func (o *output) close() {
	o.closePipes()
	for _, s := range []*spool{o.stdout, o.stderr} {
		if s.f != nil {
			s.f.Close()
			s.f = nil
		}
	}
}

// waitStopping waits for cmd to exit, and reaps it (no zombie). If ctx
// ends first it stops the command's process group: SIGTERM, then SIGKILL
// after grace.
func waitStopping(ctx context.Context, cmd *exec.Cmd, grace time.Duration) *os.ProcessState {
	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	var stopper sync.WaitGroup
	stopper.Add(1)
	go func() {
		defer stopper.Done()
		select {
		case <-exited:
			return
		case <-ctx.Done():
		}
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-exited:
		case <-timer.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}()
	state, _ := cmd.Process.Wait()
	close(exited)
	stopper.Wait()
	return state
}

// sysStatus is state's wait status, if there is one.
func sysStatus(state *os.ProcessState) (syscall.WaitStatus, bool) {
	if state == nil {
		return 0, false
	}
	ws, ok := state.Sys().(syscall.WaitStatus)
	return ws, ok
}

// execOutcome is the task's result (an ExecResult) and its error: a
// timeout, a stop, a signal or a non-zero exit status.
//
// usage is what its cgroup says, if it had one: the exact peak, and
// whether the kernel killed it for memory.
func execOutcome(ctx context.Context, p ExecPayload, state *os.ProcessState, o *output, usage *process.CgroupUsage) (json.RawMessage, error) {
	stdout, stderr := o.stdout.finish(), o.stderr.finish()
	res := ExecResult{ExitCode: -1, Stdout: stdout.text, Stderr: stderr.text,
		StdoutTruncated: stdout.cut, StderrTruncated: stderr.cut,
		StdoutSpooled: stdout.spooled, StderrSpooled: stderr.spooled}
	for _, lost := range []struct {
		name string
		err  error
	}{{"stdout", stdout.err}, {"stderr", stderr.err}} {
		if lost.err != nil && res.SpoolError == "" && !errors.Is(lost.err, errNoSpool) {
			res.SpoolError = lost.name + ": " + lost.err.Error()
		}
	}
	if state != nil {
		res.ExitCode = state.ExitCode()
		peak, cpu := process.Usage(state)
		res.MaxRSSKiB, res.CPUSecs = peak, cpu.Seconds()
		if ws, ok := sysStatus(state); ok && ws.Signaled() {
			res.Signal = int(ws.Signal())
		}
	}
	if usage != nil {
		if usage.Peak > 0 {
			res.MaxRSSKiB = usage.Peak >> 10
		}
		res.OOMKilled = usage.OOMKilled && state != nil && !state.Success()
	}
	res.Tag = p.Tag
	timedOut := errors.Is(context.Cause(ctx), errTimedOut)
	res.TimedOut = timedOut
	out, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	switch {
	case timedOut:
		return out, fmt.Errorf("timed out after %v", time.Duration(p.Timeout))
	case ctx.Err() != nil:
		return out, context.Cause(ctx)
	case state == nil:
		return out, errors.New("lost track of the process")
	case res.OOMKilled && usage.OverOwn:
		return out, fmt.Errorf("killed: over its memory limit of %v", p.Memory)
	case res.OOMKilled:
		if g, _ := ctx.Value(limitGroupKey{}).(limitGroup); g.cg != nil && g.cg.Limits().Memory > 0 {
			return out, fmt.Errorf("killed: its group %s is over its memory limit of %v", g.name, ByteSize(g.cg.Limits().Memory))
		}
		return out, errors.New("killed: out of memory (the machine's, or the runner's cgroup's)")
	case !state.Success():
		if ws, ok := sysStatus(state); ok && ws.Signaled() {
			return out, fmt.Errorf("killed by signal %v", ws.Signal())
		}
		return out, fmt.Errorf("exit status %d", state.ExitCode())
	}
	return out, nil
}

// startError reports a command that did not start, marked ErrResource
// when the cause may go away.
func startError(name string, err error) error {
	if isResourceError(err) {
		return fmt.Errorf("start %s: %w (%w)", name, err, ErrResource)
	}
	return fmt.Errorf("start %s: %w", name, err)
}

// isResourceError reports a failure for want of a resource that may come
// back: file descriptors, processes, memory.
func isResourceError(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.EAGAIN, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

var errTimedOut = errors.New("timed out")

// nearFDLimit reports whether the process is close to its descriptor
// limit, where a child has no room to rearrange its descriptors: cmd's
// output descriptors sit at the top of it, or most of it is open. Other
// goroutines open and close descriptors meanwhile, so "close" is wide: a
// quarter of the limit, or 16.
func nearFDLimit(cmd *exec.Cmd) bool {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return false
	}
	margin := max(lim.Cur/4, 16)
	for _, w := range []io.Writer{cmd.Stdout, cmd.Stderr} {
		if f, ok := w.(*os.File); ok && uint64(f.Fd())+margin >= lim.Cur {
			return true
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil && uint64(len(fds))+margin >= lim.Cur {
		return true
	}
	return false
}

func closeWriters(cmd *exec.Cmd) {
	for _, w := range []io.Writer{cmd.Stdout, cmd.Stderr} {
		if f, ok := w.(*os.File); ok {
			f.Close()
		}
	}
}

// tail keeps the last max bytes written to it.
type tail struct {
	max int
	buf []byte
	cut bool
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.cut = t.cut || len(t.buf) > 0 || len(p) > t.max
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.cut = true
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String returns the kept bytes as text; a multi-byte character cut at the
// start is dropped rather than shown broken.
func (t *tail) String() string {
	b := t.buf
	if t.cut {
		for i := 0; i < len(b) && i < utf8.UTFMax && !utf8.RuneStart(b[i]); i++ {
			b = b[1:]
		}
	}
	return string(b)
}

type procReporterKey struct{}

// withProcessReporter returns a context through which the exec kind
// reports the process group of the command it starts.
func withProcessReporter(ctx context.Context, f func(process.Group)) context.Context {
	return context.WithValue(ctx, procReporterKey{}, f)
}

func reportProcess(ctx context.Context, p process.Group) {
	if f, ok := ctx.Value(procReporterKey{}).(func(process.Group)); ok {
		f(p)
	}
}
