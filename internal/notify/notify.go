// Package notify broadcasts "something changed" to any number of
// waiters: the commits a runner's deliveries wait for, the wake-ups its
// jobs wait for.
package notify

import "sync"

// Notifier broadcasts "something changed" to any number of waiters.
type Notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// New returns a Notifier.
func New() *Notifier { return &Notifier{ch: make(chan struct{})} }

// C returns a channel that is closed at the next Notify. Take it before
// checking state, so that a change in between is not missed.
func (n *Notifier) C() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

// Notify wakes every current waiter.
func (n *Notifier) Notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}
