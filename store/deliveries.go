package store

import (
	"time"
)

// Delivery is one attempt's outcome at a sink.
type Delivery struct {
	Sink       string
	CallbackID int64
	State      DeliveryState
	Attempts   int
	LastError  string
}

// DeliveryState is where a callback stands at a sink (a hook, a
// webhook). The runner's own output is another matter: a callback is
// released to it (MarkReleased), not delivered.
type DeliveryState string

// The delivery states.
const (
	DeliveryRetrying  DeliveryState = "retrying"  // an attempt failed; another comes
	DeliveryDelivered DeliveryState = "delivered" // the sink took it
	DeliveryDead      DeliveryState = "dead"      // the attempts ran out
)

// DeliveryRow is a callback with its delivery state at one sink, for
// display; a callback no sink has tried yet has an empty Sink.
type DeliveryRow struct {
	Callback
	// Released is true once the runner has delivered the callback to its
	// own output (log, stdout).
	Released    bool
	Sink        string
	State       DeliveryState // "" when no sink has tried it
	Attempts    int
	LastError   string
	DeliveredAt time.Time
}
