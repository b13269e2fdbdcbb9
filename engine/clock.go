package engine

import "time"

// Clock reads time. Durations come from Mono only, so a wall-clock jump
// changes no time_secs or elapsed_secs; Now is for display.
type Clock interface {
	Now() time.Time      // wall clock
	Mono() time.Duration // monotonic reading from an arbitrary origin
}

// SystemClock is the real clock; Mono uses Go's monotonic clock reading.
func SystemClock() Clock { return systemClock{origin: time.Now()} }

type systemClock struct{ origin time.Time }

func (systemClock) Now() time.Time        { return time.Now() }
func (c systemClock) Mono() time.Duration { return time.Since(c.origin) }
