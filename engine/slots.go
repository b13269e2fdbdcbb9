package engine

import (
	"sync"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// runSlots show the completer what each consumer is running. A task of an
// Isolated kind runs at once, without waiting for its start mark to
// commit: the completer marks it running with its next commit, if it is
// still running then. Most short tasks finish first and never need a mark,
// and none costs a message to the completer.
type runSlots struct {
	slots []runSlot
	// poke (capacity 1) wakes the completer when a task starts, so that a
	// long task gets its mark even when nothing else is committing.
	poke chan struct{}
}

type runSlot struct {
	mu     sync.Mutex
	seq    int64 // 0 when idle
	at     time.Time
	marked bool
	// proc is the task's process group, once an exec task has started
	// it; procMarked once a mark with it has been handed out.
	proc       Proc
	procMarked bool
}

func newRunSlots(n int) *runSlots {
	return &runSlots{slots: make([]runSlot, n), poke: make(chan struct{}, 1)}
}

// begin records that consumer i runs task seq from at.
func (r *runSlots) begin(i int, seq int64, at time.Time) {
	s := &r.slots[i]
	s.mu.Lock()
	s.seq, s.at, s.marked = seq, at, false
	s.proc, s.procMarked = Proc{}, false
	s.mu.Unlock()
	r.wake()
}

func (r *runSlots) wake() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// setProc records the process group of consumer i's task, to be written
// with (or added to) its start mark.
func (r *runSlots) setProc(i int, p Proc) {
	s := &r.slots[i]
	s.mu.Lock()
	if s.seq != 0 {
		s.proc, s.procMarked = p, false
	}
	s.mu.Unlock()
	r.wake()
}

// end records that consumer i is done with its task. It must come before
// the task's outcome is sent, so a task whose outcome is in a batch never
// looks running to that batch.
func (r *runSlots) end(i int) {
	s := &r.slots[i]
	s.mu.Lock()
	s.seq = 0
	s.mu.Unlock()
}

// unmarked appends to dst a start for each task still running that has no
// mark yet, or whose process group is not in its mark yet, and counts them
// as marked.
func (r *runSlots) unmarked(dst []store.Start) []store.Start {
	for i := range r.slots {
		s := &r.slots[i]
		s.mu.Lock()
		if s.seq != 0 && (!s.marked || (s.proc.Pgid != 0 && !s.procMarked)) {
			dst = append(dst, store.Start{Seq: s.seq, At: s.at, Pgid: s.proc.Pgid, PStart: s.proc.Start})
			s.marked = true
			s.procMarked = s.proc.Pgid != 0
		}
		s.mu.Unlock()
	}
	return dst
}
