package store

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// The rules of jobs and tasks, written once: every store applies them,
// inside the transaction that makes the change, so that the databases
// cannot drift apart. What differs per database (SQL, claims, locks,
// wake-ups) lives in the drivers.

// FinalState is the state a job whose tasks are all final ends in: failed
// if any task failed, whatever else was cancelled (a job halted at its
// first failure, or cancelled after one, failed); else cancelled if any
// task was cancelled; else succeeded. Every store finishes a job with it.
func FinalState(succeeded, failed, cancelled int64) State {
	switch {
	case failed > 0:
		return Failed
	case cancelled > 0:
		return Cancelled
	}
	return Succeeded
}

// Complete reports whether a job's completion may commit: it is sealed
// (no task may be added) and every task is final.
func Complete(j Job) bool { return j.Sealed && j.Done() >= j.Total }

// CanCancel says whether a job may be cancelled: it is not finished.
func CanCancel(j Job) error {
	if j.Finished() {
		return Conflictf("job %s already %s", j.UUID, j.State)
	}
	return nil
}

// CanRetry says whether a job may be retried (a new round for its failed
// and cancelled tasks): it is finished, not being pruned, and has such a
// task. Every store applies this one rule.
func CanRetry(job Job, pruning bool) error {
	switch {
	case !job.Finished():
		return Conflictf("job %s is still %s: only a finished job can be retried", job.UUID, job.State)
	case pruning:
		return Conflictf("job %s is being pruned", job.UUID)
	case job.Failed+job.Cancelled == 0:
		return Conflictf("job %s has no failed or cancelled task to retry", job.UUID)
	}
	return nil
}

// Retried is a job as a retry leaves it: pending, in its next round, its
// failed and cancelled tasks pending again, not halting and not paused
// (a retry is a request to run it). Every store's retry writes this.
func Retried(job Job) Job {
	job.State, job.Round, job.Failed, job.Cancelled, job.FinishedAt = Pending, job.Round+1, 0, 0, time.Time{}
	job.DoneThrough, job.Halting, job.Paused = 0, "", false
	return job
}

// CanPause says whether a job may be paused or resumed: it is not
// finished.
func CanPause(j Job, pause bool) error {
	if j.Finished() {
		verb := "pause"
		if !pause {
			verb = "resume"
		}
		return Conflictf("job %s already %s: nothing to %s", j.UUID, j.State, verb)
	}
	return nil
}

// CanKill says whether a task may be killed: it is running.
func CanKill(t TaskRow) error {
	if t.State != Running {
		return Conflictf("task %d (%s) is %s, not running", t.Seq, t.UUID, t.State)
	}
	return nil
}

// KindSet collects the distinct kinds of a job's tasks, as the stores
// record them (Job.Kinds): a runner takes only the jobs whose every kind
// it knows (RunnableQuery.Kinds).
type KindSet map[string]struct{}

// Add adds the kinds of tasks.
func (s KindSet) Add(tasks []NewTask) {
	for _, t := range tasks {
		if _, ok := s[t.Kind]; !ok {
			s[t.Kind] = struct{}{}
		}
	}
}

// AddNames adds kinds by name.
func (s KindSet) AddNames(names []string) {
	for _, n := range names {
		s[n] = struct{}{}
	}
}

// Names lists the kinds, sorted.
func (s KindSet) Names() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// JSON is the kinds as the stores keep them: a JSON array of names,
// sorted.
func (s KindSet) JSON() []byte {
	b, _ := json.Marshal(s.Names()) // strings always encode
	return b
}

// ParseKinds reads a kinds column (KindSet.JSON); nil for none recorded.
func ParseKinds(b []byte) []string {
	var names []string
	if len(b) == 0 || json.Unmarshal(b, &names) != nil {
		return nil
	}
	return names
}

// MissingKinds lists the kinds among kinds that known does not hold. A
// job with a missing kind waits for a runner that knows it: no runner
// fails a task for want of its kind.
func MissingKinds(kinds, known []string) []string {
	var missing []string
	for _, k := range kinds {
		if !slices.Contains(known, k) {
			missing = append(missing, k)
		}
	}
	return missing
}

// Interruption is the rule for a task whose runner died while it ran:
// interrupts counts its interruptions, this one included, and base those
// it had when its job was last retried. It runs again, with no attempt
// spent, until max interruptions in a row; then it fails, with the
// reason, so that a task that kills its runner cannot wedge the queue.
func Interruption(interrupts, base, max int) (fail bool, reason string) {
	if interrupts-base < max {
		return false, ""
	}
	return true, fmt.Sprintf("interrupted by %d restarts", max)
}

// CancelPending is the rule of a cancel: every task of a job without a
// result is cancelled, with its task callback. page reads the job's tasks
// without a result after a seq, a page at a time (none: the end); cancel
// records one cancelled, with its callback message. Both stores cancel
// with it, inside the cancel's transaction.
func CancelPending(page func(after int64) ([]Task, error), message func(Task) ([]byte, error),
	cancel func(t Task, msg []byte) error) error {
	var after int64
	for {
		tasks, err := page(after)
		if err != nil || len(tasks) == 0 {
			return err
		}
		for _, t := range tasks {
			after = t.Seq
			msg, err := message(t)
			if err != nil {
				return err
			}
			if err := cancel(t, msg); err != nil {
				return err
			}
		}
	}
}

// Backoff is the wait after a failed attempt: base×2^(attempt-1), at most
// cap, with jitter that keeps it in [d/2, d).
func Backoff(r Retry, attempt int) time.Duration {
	d := r.BackoffBase
	for i := 1; i < attempt && d < r.BackoffCap; i++ {
		d *= 2
	}
	d = min(d, r.BackoffCap)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}
