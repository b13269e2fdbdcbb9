package store

import (
	"time"
)

// Task is a task to run, as the producer reads it.
type Task struct {
	JobID      int64
	Seq        int64
	UUID       string
	Kind       string
	Payload    []byte
	Attempts   int
	Interrupts int
	Retry      Retry
	NotBefore  time.Time // zero unless waiting out a backoff
}

// MayHaveRunTwice reports whether the task may have run more often than
// its attempts say: a runner that had started it died (or lost its lease)
// before its result committed, and it was run again or failed for it.
// That is exactly an interruption: a task is counted as interrupted when
// its start mark had committed, and tasks of kinds that act outside pcd
// (exec, Go functions) start only once it has.
func (t Task) MayHaveRunTwice() bool { return t.Interrupts > 0 }

// TaskRow is a task with its outcome, for display.
type TaskRow struct {
	Task
	State      State
	Result     []byte
	Error      string
	Time       time.Duration
	StartedAt  time.Time
	FinishedAt time.Time
}

// Attempt is one recorded run of a task that may retry.
type Attempt struct {
	Seq        int64
	Attempt    int
	State      State
	Error      string
	Time       time.Duration
	StartedAt  time.Time
	FinishedAt time.Time
}
