package store

import (
	"time"
)

// The callback events.
const (
	EventTask = "task"
	EventJob  = "job"
)

// Callback is a record of the callback outbox.
type Callback struct {
	ID        int64 // increasing; receivers drop duplicates by it
	Event     string
	JobID     int64
	TaskSeq   int64 // 0 for a job event
	Round     int
	Message   []byte // JSON
	CreatedAt time.Time
}
