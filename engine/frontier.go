package engine

import (
	"container/heap"
	"sync"
)

// maxFrontierFinals bounds what a frontier remembers: the tasks finished
// above the oldest unfinished one. A task that runs for hours while
// thousands finish after it stops the frontier for the rest of the run;
// that costs a slower restart, never a wrong one.
const maxFrontierFinals = 1 << 16

// frontier follows a job's finished prefix while it runs: the seq up to
// which every task has a committed final result. It is saved with each
// group commit, and a runner that resumes the job reads pending tasks from
// there instead of stepping over every finished one (which took most of a
// restart on a half-done 1M-task job).
//
// The producer reports each task it queues, in seq order, and each task it
// holds back to retry later; the completer reports each task whose final
// result has committed. Every task up to the producer's read position that
// it did not report was final when it read its page.
type frontier struct {
	mu      sync.Mutex
	read    int64   // every pending task up to here is reported
	open    seqHeap // reported, not known final (or final, not yet popped)
	final   map[int64]bool
	stopped bool // too much to remember: the frontier stays where it is
}

func newFrontier(start int64) *frontier {
	return &frontier{read: start, final: map[int64]bool{}}
}

// queued records that the producer queued task seq, having read the job's
// pending tasks up to it.
func (f *frontier) queued(seq int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		heap.Push(&f.open, seq)
	}
	f.read = max(f.read, seq)
}

// held records a task that is not final and not queued: it waits out a
// backoff.
func (f *frontier) held(seq int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		heap.Push(&f.open, seq)
	}
}

// finished records that task seq's final result has committed.
func (f *frontier) finished(seq int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.final[seq] = true
	if len(f.final) > maxFrontierFinals {
		f.stopped, f.open, f.final = true, nil, nil
	}
}

// through returns the seq up to which every task is final, or 0 when it
// no longer knows.
func (f *frontier) through() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return 0
	}
	for len(f.open) > 0 && f.final[f.open[0]] {
		delete(f.final, heap.Pop(&f.open).(int64))
	}
	if len(f.open) > 0 {
		return f.open[0] - 1
	}
	return f.read
}

type seqHeap []int64

func (h seqHeap) Len() int           { return len(h) }
func (h seqHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h seqHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *seqHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *seqHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
