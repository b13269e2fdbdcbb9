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
