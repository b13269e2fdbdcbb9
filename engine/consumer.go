package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/pcd-dev/pcd/engine/process"
	"github.com/pcd-dev/pcd/store"
)

// outcome is a finished task on its way to the completer.
type outcome struct {
	task        store.Task
	event       Event
	res         store.Result
	interrupted bool // stopped by cancellation: back to pending
}

// startReq asks the completer to mark a task running and waits for the
// mark to commit: the reply says whether the task may run. Tasks of
// Isolated kinds do not ask; see runSlots.
type startReq struct {
	task  store.Task
	at    time.Time
	reply chan<- bool
}

// consume runs tasks from queue until it is closed, ctx is cancelled, or
// the controller drains. A task of a kind that is not Isolated is marked
// running (group-committed with other starts and results) before it runs;
// an Isolated one runs at once, in slot i of slots.
func (c *jobController) consume(ctx context.Context, job store.Job, queue <-chan store.Task,
	starts chan<- startReq, results chan<- outcome, slots *runSlots, i int) {
	reply := make(chan bool, 1)
	// An exec task reports its process group through the context, into
	// this consumer's slot, so the start mark records it.
	procCtx := withProcessReporter(ctx, func(p process.Group) { slots.setProc(i, p) })
	procCtx = withLimitGroup(procCtx, c.cfg.limitGroup)
	for {
		if c.draining() {
			return
		}
		t, ok := c.take(ctx, queue)
		if !ok {
			return
		}
		if c.draining() || ctx.Err() != nil {
			return // taken but not started: it stays pending
		}
		if c.cfg.groupSlots != nil {
			select {
			case c.cfg.groupSlots <- struct{}{}:
			case <-ctx.Done():
				return
			case <-c.drain:
				return
			}
		}
		kind, kindErr := c.cfg.Registry.Lookup(t.Kind)
		if kindErr != nil {
			// A kind this runner does not know (tasks of it were added to
			// the job as it ran): the task is left, unstarted, to a
			// runner that knows it, and the job's run here ends.
			if !c.draining() {
				c.cfg.Logger.Warn("job has tasks of a kind this runner does not know: leaving them to a runner that knows it",
					"job", job.UUID, "kind", t.Kind)
			}
			c.Drain()
			c.releaseGroupSlot()
			return
		}
		if isolated(kind) {
			if c.draining() {
				c.releaseGroupSlot()
				return // halted or paused meanwhile: it stays pending
			}
			slots.begin(i, t.Seq, c.cfg.Clock.Now(), false)
		} else {
			at := c.cfg.Clock.Now()
			starts <- startReq{task: t, at: at, reply: reply}
			if !<-reply {
				c.releaseGroupSlot()
				c.doneWith()
				continue // no longer pending (cancelled), or the commit failed
			}
			if c.draining() {
				// Halted or paused while its mark committed: it goes
				// back to pending, unstarted.
				c.releaseGroupSlot()
				results <- outcome{task: t, interrupted: true}
				return
			}
			slots.begin(i, t.Seq, at, true)
		}
		out := c.runTask(procCtx, job, t, kind, i+1)
		slots.end(i)
		c.releaseGroupSlot()
		if out.interrupted || !out.res.RetryAt.IsZero() {
			c.rerun.Store(true)
		}
		c.doneWith()
		if !out.interrupted && out.res.RetryAt.IsZero() {
			c.noteOutcome(job, out.res.State)
		}
		results <- out
	}
}

// doneWith records that a consumer is done with a task the producer
// queued, and on a shared database tells the producer, which claims only
// for free workers (see hungry).
func (c *jobController) doneWith() {
	if c.inHand.Add(-1) == 0 {
		c.noteFinishing()
	}
	c.doneN.Add(1)
	if c.shared {
		c.retries.signal()
	}
}

// take waits for the consumer's next task: one taken over from a gone
// runner first, then the queue's. False when the queue is closed, ctx is
// cancelled or the controller drains.
func (c *jobController) take(ctx context.Context, queue <-chan store.Task) (store.Task, bool) {
	select {
	case t := <-c.ahead:
		return t, true
	default:
	}
	select {
	case t := <-c.ahead:
		return t, true
	case t, ok := <-queue:
		return t, ok
	case <-ctx.Done():
		return store.Task{}, false
	case <-c.drain:
		return store.Task{}, false
	}
}

// runTask runs one task and reports its outcome, which is interrupted when
// cancellation stopped the task rather than the task finishing, and a
// retry when a failed attempt has attempts left.
func (c *jobController) runTask(ctx context.Context, job store.Job, t store.Task, kind Kind, slot int) outcome {
	attempt := t.Attempts + 1
	task := Task{JobID: job.UUID, ID: t.UUID, Number: t.Seq, Kind: t.Kind, Payload: json.RawMessage(t.Payload), Attempt: attempt, Slot: slot}
	taskCtx, stopTask := context.WithCancelCause(ctx)
	defer stopTask(nil)
	c.killable.Store(t.Seq, stopTask)
	defer c.killable.Delete(t.Seq)
	if t.Retry.Timeout > 0 {
		var cancel context.CancelFunc
		taskCtx, cancel = context.WithTimeoutCause(taskCtx, t.Retry.Timeout, errTaskTimeout)
		defer cancel()
	}
	wallStart := c.cfg.Clock.Now()
	start := c.cfg.Clock.Mono()
	result, err := c.call(taskCtx, kind, task)
	took := c.cfg.Clock.Mono() - start
	if err != nil && (ctx.Err() != nil || errors.Is(err, process.ErrFenced)) {
		// Stopped by the run's end, or by the fence of a runner whose
		// lease ran out (it was frozen): no attempt is spent.
		return outcome{task: t, interrupted: true}
	}
	killed := err != nil && errors.Is(context.Cause(taskCtx), errKilled)
	if err != nil && errors.Is(context.Cause(taskCtx), errRequeued) {
		// pcd kill --requeue: back to pending, with no attempt spent.
		c.cfg.Logger.Info("task stopped and put back to pending (pcd kill --requeue)", "job", job.UUID, "task", t.UUID)
		return runAgain(t, c.cfg.Clock.Now())
	}
	if killed {
		err = errKilled
	}
	if halt := (haltCause{}); err != nil && errors.As(context.Cause(taskCtx), &halt) {
		// The job halted now: the task is stopped, and recorded as
		// cancelled, with the attempt it ran and its time.
		return final(job, t, store.Result{
			Seq: t.Seq, State: store.Cancelled, Error: halt.Error(), Time: took,
			StartedAt: wallStart, FinishedAt: wallStart.Add(took),
			Attempt: attempt, Record: t.Retry.MaxAttempts > 1,
		})
	}
	if errors.Is(err, ErrResource) {
		// The task did not start (no file descriptors, processes or
		// memory): it waits a little and runs again, with no attempt
		// spent.
		wait := resourceWait/2 + rand.N(resourceWait)
		c.cfg.Logger.Debug("task could not start; it runs again", "job", job.UUID, "task", t.UUID, "in", wait, "err", err)
		return runAgain(t, c.cfg.Clock.Now().Add(wait))
	}
	if err != nil && taskCtx.Err() != nil && errors.Is(context.Cause(taskCtx), errTaskTimeout) {
		err = fmt.Errorf("timed out after %v", t.Retry.Timeout)
	}
	state := store.Succeeded
	var errText string
	if err != nil {
		state, errText = store.Failed, err.Error()
	}
	if result != nil && !json.Valid(result) {
		state, errText, result = store.Failed, "task returned a result that is not valid JSON", nil
	}
	res := store.Result{
		Seq: t.Seq, State: state, Result: result, Error: errText, Time: took,
		StartedAt: wallStart, FinishedAt: wallStart.Add(took),
		Attempt: attempt, Record: t.Retry.MaxAttempts > 1,
	}
	if state == store.Failed && attempt < t.Retry.MaxAttempts && !killed {
		res.RetryAt = c.cfg.Clock.Now().Add(store.Backoff(t.Retry, attempt))
		t.Attempts, t.NotBefore = attempt, res.RetryAt
		return outcome{task: t, res: res}
	}
	return final(job, t, res)
}

// runAgain is the outcome of a task that goes back to pending, to run
// again at at, with no attempt spent.
func runAgain(t store.Task, at time.Time) outcome {
	t.NotBefore = at
	return outcome{task: t, res: store.Result{Seq: t.Seq, State: store.Failed, Attempt: t.Attempts, RetryAt: at}}
}

// final is the outcome of a task's final result, with its callback.
func final(job store.Job, t store.Task, res store.Result) outcome {
	done := t
	done.Attempts = res.Attempt
	ev := taskEvent(job.UUID, done, res.State, res.Time, res.Result, res.Error)
	msg, err := ev.MarshalJSON()
	if err != nil {
		// Unreachable for a valid event; fail loudly rather than drop it.
		panic(fmt.Sprintf("marshal task event: %v", err))
	}
	res.Message = msg
	return outcome{task: t, event: ev, res: res}
}

var (
	errTaskTimeout = errors.New("task timed out")
	errKilled      = errors.New("killed (pcd kill)")
	errRequeued    = errors.New("stopped to run again (pcd kill --requeue)")
)

// resourceWait is about how long a task that could not start for want of
// a system resource waits before it runs again.
const resourceWait = 250 * time.Millisecond

// call runs the task's kind; a panic fails the task instead of the process.
func (c *jobController) call(ctx context.Context, k Kind, t Task) (res json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.cfg.Logger.Error("task panicked", "job", t.JobID, "task", t.ID, "panic", p, "stack", string(debug.Stack()))
			res, err = nil, fmt.Errorf("panic: %v", p)
		}
	}()
	return k.Run(ctx, t)
}

// releaseGroupSlot gives back the slot of the job's group, if it has
// slots.
func (c *jobController) releaseGroupSlot() {
	if c.cfg.groupSlots != nil {
		<-c.cfg.groupSlots
	}
}
