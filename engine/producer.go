package engine

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// retries tracks, for the producer, the tasks it has queued whose outcome
// is not committed yet, and the tasks waiting out a backoff. Waiting tasks
// hold no worker: they sit here, by due time, until the producer queues
// them again.
type retries struct {
	mu       sync.Mutex
	inflight int
	waiting  retryHeap
	poke     chan struct{} // cap 1: something changed
}

func newRetries() *retries { return &retries{poke: make(chan struct{}, 1)} }

func (r *retries) signal() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// resolved records that n queued tasks got an outcome (or will not run).
func (r *retries) resolved(n int) {
	if n == 0 {
		return
	}
	r.mu.Lock()
	r.inflight -= n
	r.mu.Unlock()
	r.signal()
}

// wait adds a task that waits until t.NotBefore.
func (r *retries) wait(t store.Task) {
	r.mu.Lock()
	heap.Push(&r.waiting, t)
	r.mu.Unlock()
	r.signal()
}

// next pops a due task, counting it in flight; or says when the next one
// is due (zero if none waits) and whether nothing is in flight or waiting.
func (r *retries) next(now time.Time) (t store.Task, ok bool, due time.Time, idle bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.waiting) > 0 {
		if top := r.waiting[0]; !top.NotBefore.After(now) {
			heap.Pop(&r.waiting)
			r.inflight++
			return top, true, time.Time{}, false
		}
		due = r.waiting[0].NotBefore
	}
	return store.Task{}, false, due, len(r.waiting) == 0 && r.inflight == 0
}

func (r *retries) queued() {
	r.mu.Lock()
	r.inflight++
	r.mu.Unlock()
}

// minPage is the smallest page of pending tasks the producer reads: a
// read costs about as much per query as 300 rows do (BenchmarkPendingTasks:
// 300k tasks/s in pages of 100, 430k in pages of 1000).
const minPage = 1000

type retryHeap []store.Task

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].NotBefore.Before(h[j].NotBefore) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(store.Task)) }
func (h *retryHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// produce streams the job's pending tasks, in seq order, into queue, then
// the tasks that come back from a failed attempt as their backoff ends.
// Pages are read by key, each the size of the queue or minPage tasks if
// that is more, so memory stays bounded whatever the size of the job. It blocks while queue is full, and
// returns once every task it queued has an outcome and none waits.
func (c *JobController) produce(ctx context.Context, job store.Job, queue chan<- store.Task) error {
	// One instant splits the tasks waiting out a backoff (kept here until
	// due) from those the first pass reads.
	passDue := c.cfg.Clock.Now()
	waiting, err := c.db.WaitingTasks(ctx, job.ID, passDue)
	if err != nil {
		return err
	}
	for _, t := range waiting {
		c.retries.wait(t)
		c.frontier.held(t.Seq)
	}
	send := func(t store.Task) bool {
		select {
		case queue <- t:
		case <-ctx.Done():
			return false
		case <-c.drain:
			return false
		}
		if c.onProduce != nil {
			c.onProduce(t)
		}
		return true
	}
	after := job.DoneThrough // every task up to it is final
	passDone := false
	for {
		if c.draining() {
			return nil
		}
		// Take the wake channel and the seal before reading, so that a
		// task added in between is never missed.
		wake := c.cfg.Wake.C()
		t, ok, due, idle := c.retries.next(c.cfg.Clock.Now())
		if ok {
			if !send(t) {
				return context.Cause(ctx)
			}
			continue
		}
		if !passDone {
			if !job.Sealed {
				j, err := c.db.Job(ctx, job.ID)
				if err != nil {
					return err
				}
				job.Sealed = j.Sealed
			}
			page, err := c.db.PendingTasks(ctx, job.ID, after, max(job.QueueSize, minPage), passDue)
			if err != nil {
				return err
			}
			if len(page) > 0 {
				for _, t := range page {
					c.retries.queued()
					c.frontier.queued(t.Seq)
					if !send(t) {
						return context.Cause(ctx)
					}
					after = t.Seq
				}
				continue
			}
			if job.Sealed {
				passDone = true
				continue
			}
		} else if idle {
			return nil
		}
		// Nothing to queue now: wait for a change.
		wait := c.cfg.PollEvery
		if !due.IsZero() {
			wait = min(wait, max(due.Sub(c.cfg.Clock.Now()), 0))
		}
		if passDone && due.IsZero() {
			wait = time.Hour // only an outcome (a poke) can change anything
		}
		timer := time.NewTimer(wait)
		select {
		case <-wake:
		case <-c.retries.poke:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return context.Cause(ctx)
		case <-c.drain:
			timer.Stop()
			return nil
		}
		timer.Stop()
	}
}
