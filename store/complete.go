package store

import (
	"errors"
	"fmt"
	"time"
)

// ErrNotDone is returned by FinishJob while a job still has unfinished
// tasks or is not sealed.
var ErrNotDone = errors.New("job has unfinished tasks")

// Result is the outcome of one attempt of a task, with its callback
// message when the outcome is final.
type Result struct {
	Seq        int64
	State      State // Succeeded, Failed or Cancelled
	Result     []byte
	Error      string
	Time       time.Duration // monotonic
	StartedAt  time.Time
	FinishedAt time.Time
	Message    []byte // the task callback's JSON
	// Attempt is this attempt's number, 1-based: the attempts spent on the
	// task, this one included.
	Attempt int
	// Record keeps a row for this attempt in the attempts table (tasks
	// that may retry).
	Record bool
	// RetryAt, if set, makes this a failed attempt that is not final: the
	// task goes back to pending until then, with no callback.
	RetryAt time.Time
}

// Span is a range of callback ids, inclusive.
type Span struct{ From, To int64 }

// Start marks a task as started by this runner.
type Start struct {
	Seq int64
	At  time.Time // wall clock, for display
	// Pgid and PStart, if set, are the process group the task runs in and
	// its leader's start time, for the next runner to kill if this one
	// dies. A task already marked gets them added.
	Pgid   int
	PStart uint64
}

// Batch is one group commit for a job.
type Batch struct {
	JobID int64
	Round int
	// Starts are tasks about to run. Each is marked running, durably,
	// before it runs, so that a crash while it runs is counted against it.
	Starts  []Start
	Results []Result
	// Interrupted are running tasks this runner stopped (a hard stop):
	// they go back to pending, with nothing counted against them.
	Interrupted []int64
	// Elapsed is the job's elapsed time so far, saved with the batch.
	Elapsed time.Duration
	// Delivered marks the job's callbacks up to Delivered.To delivered.
	Released Span
	// DoneThrough, if more than the job's, is saved as its DoneThrough:
	// every task up to it has a committed final result.
	DoneThrough int64
	// StartedAt is when this run of the job started: a job the batch
	// writes to is running, and this is its first start if it has none.
	StartedAt time.Time
	// Marks record other jobs' callbacks delivered, riding on this
	// commit instead of one of their own.
	Marks []Mark
	// Finish, if set, finishes the job in the same transaction when the
	// batch makes its last task final and the job is sealed: the job's
	// state, and its job-callback record with Finish's JSON.
	Finish func(Job) ([]byte, error)
}

// Mark says that a job's callbacks up to To were delivered.
type Mark struct{ JobID, To int64 }

// Committed is what a batch's transaction did.
type Committed struct {
	// Callbacks are the new task-callback records, in the order of the
	// results; a task that was already final has none, and neither has a
	// result that retries. ResultIndex[i] is the index in Batch.Results
	// of the result that Callbacks[i] records.
	Callbacks   []Callback
	ResultIndex []int
	// Started[i] is false when Starts[i] must not run: the task is already
	// final (pcd cancel finished it, say).
	Started []bool
	// Job and JobCallback are set when the batch finished the job (see
	// Batch.Finish).
	Job         Job
	JobCallback *Callback
	// Discarded counts results not written because their task is no
	// longer this runner's: its lease ran out and another runner took
	// the task over (PostgreSQL). The task runs there, or ran.
	Discarded int
}

// RunningGroup is the process group of a task marked running.
type RunningGroup struct {
	Pgid   int
	PStart uint64
}

// Finals gathers what a batch's final results add to their job: each
// one's task-callback record (with its result, which the record refers
// to) and the counts by state. Every store counts a batch with it.
type Finals struct {
	Now       time.Time
	Callbacks []Callback
	Index     []int // of each callback's result in the batch
	Results   [][]byte
	Counts    [3]int64 // succeeded, failed, cancelled
}

// Add adds b.Results[i], a final result that applied (its task had none).
func (f *Finals) Add(b Batch, i int) error {
	r := b.Results[i]
	switch r.State {
	case Succeeded:
		f.Counts[0]++
	case Failed:
		f.Counts[1]++
	case Cancelled:
		f.Counts[2]++
	default:
		return fmt.Errorf("task %d: %q is not a final state", r.Seq, r.State)
	}
	f.Callbacks = append(f.Callbacks, Callback{Event: EventTask, JobID: b.JobID, TaskSeq: r.Seq,
		Round: b.Round, Message: r.Message, CreatedAt: f.Now})
	f.Index = append(f.Index, i)
	f.Results = append(f.Results, r.Result)
	return nil
}
