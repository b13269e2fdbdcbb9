package engine

import "sync"

// notifier broadcasts "something changed" to any number of waiters.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// newNotifier returns a notifier.
func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

// C returns a channel that is closed at the next Notify. Take it before
// checking state, so that a change in between is not missed.
func (n *notifier) C() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

// Notify wakes every current waiter.
func (n *notifier) Notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}
