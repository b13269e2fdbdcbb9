package engine

import (
	"sync"
	"time"

	"github.com/pcd-dev/pcd/engine/process"
	"github.com/pcd-dev/pcd/store"
)

// runSlots show the completer what each consumer is running. A task of an
// Isolated kind runs at once, without waiting for its start mark to
// commit: the completer marks it running once it has run for markDelay,
// with the next commit then. Most short tasks finish first and never need
// a mark, and none costs a message to the completer.
type runSlots struct {
	slots []runSlot
	// poke (capacity 1) wakes the completer when a task starts, so that a
	// long task gets its mark even when nothing else is committing.
	poke chan struct{}
}

type runSlot struct {
	mu     sync.Mutex
	seq    int64     // 0 when idle
	at     time.Time // the job clock's wall time, for display
	since  time.Time // this process's clock, for markDelay
	marked bool
	// proc is the task's process group, once an exec task has started
	// it; procMarked once a mark with it has been handed out.
	proc       process.Group
	procMarked bool
}

// markDelay is how long an Isolated task runs before the completer commits
// for its start mark alone. A commit that happens anyway (for results)
// carries the marks of every task running then, as it always did; but a
// commit forced at once for each new task cost an fsync per exec task:
// 2,000 `true` commands took 1.4 s instead of 1.0. A task running this
// long gets its mark, and an exec task its process group, even when
// nothing else commits. (A dead runner's commands are also found by their
// run id, so a command whose group is not recorded yet is still killed.)
const markDelay = 50 * time.Millisecond

func newRunSlots(n int) *runSlots {
	return &runSlots{slots: make([]runSlot, n), poke: make(chan struct{}, 1)}
}

// begin records that consumer i runs task seq from at; marked when its
// start mark has committed already (a task that waited for it), so that
// only its process group remains to be written.
func (r *runSlots) begin(i int, seq int64, at time.Time, marked bool) {
	s := &r.slots[i]
	s.mu.Lock()
	s.seq, s.at, s.since, s.marked = seq, at, time.Now(), marked
	s.proc, s.procMarked = process.Group{}, false
	s.mu.Unlock()
	if !marked {
		r.wake() // its mark is due in markDelay
	}
}

func (r *runSlots) wake() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// setProc records the process group of consumer i's task, to be written
// with its start mark, or added to it if the mark is out already. It wakes
// the completer only for a task whose mark had committed before it began:
// otherwise begin did, and the group rides with the mark, due markDelay
// after the task began.
func (r *runSlots) setProc(i int, p process.Group) {
	s := &r.slots[i]
	s.mu.Lock()
	if s.seq == 0 {
		s.mu.Unlock()
		return
	}
	s.proc, s.procMarked = p, false
	marked := s.marked
	s.mu.Unlock()
	if marked {
		r.wake()
	}
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

// unmarked appends to dst a start for each running task that has no mark
// yet, or whose process group is not in its mark yet, and counts them as
// marked. With due, the completer commits only for these marks: only
// tasks that have run for markDelay are taken, and next is how soon
// another will be due (0 for none).
func (r *runSlots) unmarked(dst []store.Start, due bool) (_ []store.Start, next time.Duration) {
	var now time.Time
	if due {
		now = time.Now()
	}
	for i := range r.slots {
		s := &r.slots[i]
		s.mu.Lock()
		if s.seq != 0 && (!s.marked || (s.proc.Pgid != 0 && !s.procMarked)) {
			wait := time.Duration(0)
			if due {
				wait = markDelay - now.Sub(s.since)
			}
			if wait > 0 {
				if next == 0 || wait < next {
					next = wait
				}
			} else {
				dst = append(dst, store.Start{Seq: s.seq, At: s.at, Pgid: s.proc.Pgid, PStart: s.proc.Start})
				s.marked = true
				s.procMarked = s.proc.Pgid != 0
			}
		}
		s.mu.Unlock()
	}
	return dst, next
}
