package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"

	"github.com/pcd-dev/pcd/store"
)

// outcome is a finished task on its way to the completer.
type outcome struct {
	task  store.Task
	event Event
	res   store.Result
}

// consume runs tasks from queue until it is closed, ctx is cancelled, or
// the controller drains.
func (c *JobController) consume(ctx context.Context, job store.Job, queue <-chan store.Task, results chan<- outcome) {
	for {
		if c.draining() {
			return
		}
		var t store.Task
		select {
		case task, ok := <-queue:
			if !ok {
				return
			}
			t = task
		case <-ctx.Done():
			return
		case <-c.drain:
			return
		}
		o, ok := c.runTask(ctx, job, t)
		if !ok {
			continue // interrupted: the task stays pending
		}
		results <- o
	}
}

// runTask runs one task and reports its outcome. ok is false when the
// task was interrupted by cancellation rather than finished.
func (c *JobController) runTask(ctx context.Context, job store.Job, t store.Task) (o outcome, ok bool) {
	task := Task{JobID: job.UUID, ID: t.UUID, Number: t.Seq, Kind: t.Kind, Payload: json.RawMessage(t.Payload), Attempt: t.Attempts + 1}
	wallStart := c.cfg.Clock.Now()
	start := c.cfg.Clock.Mono()
	result, err := c.call(ctx, task)
	took := c.cfg.Clock.Mono() - start
	if err != nil && ctx.Err() != nil {
		return outcome{}, false
	}
	state := store.Succeeded
	var errText string
	if err != nil {
		state, errText = store.Failed, err.Error()
	}
	if result != nil && !json.Valid(result) {
		state, errText, result = store.Failed, "task returned a result that is not valid JSON", nil
	}
	ev := Event{Type: store.EventTask, JobID: job.UUID, Task: &TaskEvent{
		ID: t.UUID, Number: t.Seq, Kind: t.Kind, State: state, TimeSecs: took.Seconds(),
		Attempts: task.Attempt, Result: result, Error: errText,
	}}
	msg, mErr := ev.MarshalJSON()
	if mErr != nil {
		// Unreachable for a valid event; fail loudly rather than drop it.
		panic(fmt.Sprintf("marshal task event: %v", mErr))
	}
	return outcome{task: t, event: ev, res: store.Result{
		Seq: t.Seq, State: state, Result: result, Error: errText, Time: took,
		StartedAt: wallStart, FinishedAt: wallStart.Add(took), Message: msg,
	}}, true
}

// call runs the task's kind; a panic fails the task instead of the process.
func (c *JobController) call(ctx context.Context, t Task) (res json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.cfg.Logger.Error("task panicked", "job", t.JobID, "task", t.ID, "panic", p, "stack", string(debug.Stack()))
			res, err = nil, fmt.Errorf("panic: %v", p)
		}
	}()
	k, err := c.cfg.Registry.Lookup(t.Kind)
	if err != nil {
		return nil, err
	}
	return k.Run(ctx, t)
}
