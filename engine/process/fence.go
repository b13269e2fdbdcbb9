package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// Fencing. A runner on a shared database holds its tasks by a lease, and
// stops them when it cannot renew it. A runner that is frozen (SIGSTOP,
// Ctrl-Z) or whose machine stalls cannot: its commands, in process groups
// of their own, go on running while another runner takes the tasks over.
// So each such runner starts a fence: a small process of its own (the
// same binary, RunFence), in a process group of its own, that a signal to
// the runner's group does not stop. The runner tells it, several times
// per lease, how much longer its lease holds, and which process groups
// its commands run in. When the fence hears nothing before the lease it
// was told of runs out, it kills those groups, and every group it is told
// of later, until it hears of a lease again. The fence's deadline is the
// runner's own (two thirds of the lease after its last heartbeat landed);
// other runners take the tasks over only after the whole lease. So the
// commands are gone lease/3 before another runner may start them again,
// less the fence's reaction time (fenceTick) and the clock skew between
// the machines. If the runner dies, the fence sees its pipe close, and
// kills the groups at once.
//
// The fence runs the binary again: a program that embeds a runner calls
// RunFence first thing in main. One that does not gets no fence, and a
// warning, once.

// fenceEnv marks the process that is a fence.
const fenceEnv = "PCD_FENCE_OF"

// fenceTick is how often the fence looks at its deadline.
const fenceTick = 20 * time.Millisecond

// RunFence runs this process as a runner's fence, if it was started as
// one, and returns true when the fence is over: the caller then exits.
// Otherwise it returns false at once. A program that embeds a runner on
// PostgreSQL calls it at the start of main:
//
//	func main() {
//		if engine.RunFence() {
//			return
//		}
//		...
//	}
//
// The runner's keeper, the init of the PID namespace its commands run in
// (Contain), is this binary again too, started the same way.
func RunFence() bool {
	fenceLinked.Store(true)
	if os.Getenv(keeperEnv) != "" {
		runKeeper()
		return true
	}
	if os.Getenv(fenceEnv) == "" {
		return false
	}
	// The runner's terminal and its signals are not the fence's.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGPIPE, syscall.SIGQUIT)
	runFence(os.Stdin, os.Stdout, fenceNow)
	return true
}

// runFence reads the runner's messages from r until it closes, and
// answers on w:
//   - "L N": the lease holds N more nanoseconds;
//   - "+G": a command's process group G started;
//   - "-G": it ended;
//   - "?G": it ended by SIGKILL; the fence answers "G 1" if it killed it,
//     else "G 0". The runner spends no attempt on a command its fence
//     killed: that is the fence's own word, not a guess from the clock.
//
// A group is killed once: the fence forgets it then, but for the answer,
// so that a group number the system hands out again is never killed.
func runFence(r io.Reader, w io.Writer, now func() time.Time) {
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	groups := map[int]bool{} // tracked groups; true once the fence killed one
	var deadline time.Time   // zero until the first lease
	expired := func() bool { return !deadline.IsZero() && now().After(deadline) }
	killAll := func() {
		for g, killed := range groups {
			if !killed {
				_ = syscall.Kill(-g, syscall.SIGKILL)
				groups[g] = true
			}
		}
	}
	tick := time.NewTicker(fenceTick)
	defer tick.Stop()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				killAll() // the runner is gone
				return
			}
			if len(line) < 2 {
				continue
			}
			arg := line[1:]
			switch line[0] {
			case 'L':
				if ns, err := strconv.ParseInt(strings.TrimSpace(arg), 10, 64); err == nil {
					deadline = now().Add(time.Duration(ns))
				}
			case '+':
				if g, err := strconv.Atoi(arg); err == nil && g > 1 {
					groups[g] = false
				}
			case '-':
				if g, err := strconv.Atoi(arg); err == nil {
					delete(groups, g)
				}
			case '?':
				if g, err := strconv.Atoi(arg); err == nil {
					answer := "0"
					if groups[g] {
						answer = "1"
					}
					delete(groups, g)
					_, _ = io.WriteString(w, arg+" "+answer+"\n")
				}
			}
			if expired() {
				killAll()
			}
		case <-tick.C:
			if expired() {
				killAll()
			}
		}
	}
}

// fence is a runner's end of its fence process.
type Fence struct {
	mu      sync.Mutex
	w       io.WriteCloser
	asked   map[int]chan bool // "?G" sent, answer awaited
	cmd     *exec.Cmd
	done    chan struct{}
	answers chan struct{} // closed when the fence's answers end
	log     *slog.Logger
	warned  sync.Once
}

// fenceAnswerWait bounds the wait for the fence's answer. A fence that
// does not answer (stopped) or is gone (killed by someone else: a fence
// exits by itself only once its runner has stopped its tasks) killed
// nothing: the command's end is its outcome. Taking it for the fence's
// kill instead would run a command that the OOM killer ends again and
// again, with no attempt spent.
const fenceAnswerWait = 5 * time.Second

var fenceWarnOnce sync.Once

// StartFence starts the fence of a runner that holds leased, and keeps
// telling it how long the lease holds, until stop. It returns nil where
// there can be no fence (the binary does not call RunFence, or this is
// not Linux), having said so once.
func StartFence(ctx context.Context, leased store.Leased, log *slog.Logger) *Fence {
	valid, ok := leased.(interface{ ValidFor() time.Duration })
	if !ok || !fenceSupported {
		return nil
	}
	self, err := os.Executable()
	if err == nil && !fenceLinked.Load() {
		err = fmt.Errorf("%s does not call engine.RunFence in main", self)
	}
	var f *Fence
	if err == nil {
		f, err = spawnFence(self)
	}
	if err != nil {
		fenceWarnOnce.Do(func() {
			log.Warn("no fence for this runner's commands: a frozen runner's commands may run on beside their rerun elsewhere", "err", err)
		})
		return nil
	}
	f.log = log
	f.say("L " + strconv.FormatInt(int64(valid.ValidFor()), 10))
	go func() {
		t := time.NewTicker(fenceTick)
		defer t.Stop()
		for {
			select {
			case <-f.done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				f.say("L " + strconv.FormatInt(int64(valid.ValidFor()), 10))
			}
		}
	}()
	return f
}

func spawnFence(self string) (*Fence, error) {
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fenceEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // not stopped with the runner's group
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	r, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := startFenceProcess(cmd); err != nil {
		return nil, fmt.Errorf("start the fence: %w", err)
	}
	f := &Fence{w: w, cmd: cmd, done: make(chan struct{}), answers: make(chan struct{}), asked: map[int]chan bool{}}
	go f.readAnswers(r)
	return f, nil
}

// readAnswers hands each of the fence's answers to the command that
// asked for it, until the fence's output ends.
func (f *Fence) readAnswers(r io.Reader) {
	defer close(f.answers)
	defer func() {
		select {
		case <-f.done: // stopped by its runner
		default:
			f.warn("the fence exited", nil)
		}
	}()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		g, answer, ok := strings.Cut(sc.Text(), " ")
		pgid, err := strconv.Atoi(g)
		if !ok || err != nil {
			continue
		}
		f.mu.Lock()
		c := f.asked[pgid]
		delete(f.asked, pgid)
		f.mu.Unlock()
		if c != nil {
			c <- answer == "1"
		}
	}
}

// say writes one line to the fence; a fence that is gone is ignored.
func (f *Fence) say(line string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, _ = io.WriteString(f.w, line+"\n")
}

// track and untrack tell the fence of a command's process group.
func (f *Fence) Track(pgid int)   { f.say("+" + strconv.Itoa(pgid)) }
func (f *Fence) Untrack(pgid int) { f.say("-" + strconv.Itoa(pgid)) }

// killed untracks the group of a command that ended by SIGKILL, and says
// whether the fence killed it.
func (f *Fence) Killed(pgid int) bool {
	c := make(chan bool, 1)
	f.mu.Lock()
	f.asked[pgid] = c
	_, err := io.WriteString(f.w, "?"+strconv.Itoa(pgid)+"\n")
	f.mu.Unlock()
	if err != nil {
		f.warn("the fence is gone", err)
		return false
	}
	t := time.NewTimer(fenceAnswerWait)
	defer t.Stop()
	select {
	case yes := <-c:
		return yes
	case <-f.answers:
		select {
		case yes := <-c:
			return yes
		default:
			f.warn("the fence is gone", nil)
			return false
		}
	case <-t.C:
		f.warn("the fence did not answer in "+fenceAnswerWait.String(), nil)
		return false
	}
}

// warn says, once per fence, that it does not work as it should.
func (f *Fence) warn(what string, err error) {
	f.warned.Do(func() {
		f.log.Warn(what+": this runner's commands have no fence (a frozen runner's commands may run on beside their rerun elsewhere)", "pid", f.cmd.Process.Pid, "err", err)
	})
}

// stop ends the fence: it kills the groups it still knows of (none, when
// the runner stopped its tasks first), and exits.
func (f *Fence) Stop() {
	if f == nil {
		return
	}
	close(f.done)
	f.mu.Lock()
	_ = f.w.Close()
	f.mu.Unlock()
	_ = f.cmd.Wait()
	fenceReaped(f.cmd.Process.Pid)
}

type fenceKey struct{}

func WithFence(ctx context.Context, f *Fence) context.Context {
	if f == nil {
		return ctx
	}
	return context.WithValue(ctx, fenceKey{}, f)
}

func FenceOf(ctx context.Context) *Fence {
	f, _ := ctx.Value(fenceKey{}).(*Fence)
	return f
}

// ErrFenced is the end of a command that its runner's fence killed: no
// outcome, the task runs again.
var ErrFenced = errors.New("killed by its runner's fence: the runner's lease ran out")

// fenceLinked is set once this process has called RunFence: its binary
// can be a fence.
var fenceLinked atomic.Bool
