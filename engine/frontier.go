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
	// floor is the lowest task sent back to wait out a backoff in this
	// run (0 for none): the frontier stays below it. A waiting task is not
	// remembered one by one: a million of them cost nothing here.
	floor int64
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

// held records that tasks from seq on may wait out a backoff (the lowest
// waiting when the run starts): the frontier stays below seq.
func (f *frontier) held(seq int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.below(seq)
}

// waiting records that task seq went back to wait out a backoff: it is
// dropped from the tasks followed, and the frontier stays below it.
func (f *frontier) waiting(seq int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.below(seq)
	f.finishedLocked(seq)
}

// below keeps the frontier under task seq, which waits out a backoff.
func (f *frontier) below(seq int64) {
	if f.floor == 0 || seq < f.floor {
		f.floor = seq
	}
}

// finished records that task seq's final result has committed.
func (f *frontier) finished(seq int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finishedLocked(seq)
}

func (f *frontier) finishedLocked(seq int64) {
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
	through := f.read
	if len(f.open) > 0 {
		through = f.open[0] - 1
	}
	if f.floor > 0 {
		through = min(through, f.floor-1)
	}
	return through
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
