package engine

import (
	"context"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// retries tracks, for the producer, the tasks it has queued whose outcome
// is not committed yet. Tasks waiting out a backoff are not held here:
// they go back to the database (tasks.not_before, indexed), and the
// producer reads a page of those that are due when they are, so memory
// does not grow with the number waiting.
type retries struct {
	mu       sync.Mutex
	inflight map[int64]bool
	// waits is set once a task of the job may be waiting: one was at the
	// start, or an outcome sent one back. Until then the producer never
	// looks for due tasks, so a job without retries pays nothing.
	waits bool
	poke  chan struct{} // cap 1: something changed
}

func newRetries() *retries {
	return &retries{inflight: map[int64]bool{}, poke: make(chan struct{}, 1)}
}

func (r *retries) signal() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// resolved records that queued tasks got an outcome (or will not run).
func (r *retries) resolved(seqs []int64) {
	if len(seqs) == 0 {
		return
	}
	r.mu.Lock()
	for _, seq := range seqs {
		delete(r.inflight, seq)
	}
	r.mu.Unlock()
	r.signal()
}

// wait records that a task went back to wait out a backoff; its due time
// is in the database, committed.
func (r *retries) wait() {
	r.mu.Lock()
	r.waits = true
	r.mu.Unlock()
	r.signal()
}

// queue counts seq in flight; false if it is in flight already.
func (r *retries) queue(seq int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight[seq] {
		return false
	}
	r.inflight[seq] = true
	return true
}

func (r *retries) state() (waits bool, inflight int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waits, len(r.inflight)
}

// minPage is the smallest page of pending tasks the producer reads: a
// read costs about as much per query as 300 rows do (BenchmarkPendingTasks:
// 300k tasks/s in pages of 100, 430k in pages of 1000).
const minPage = 1000

// produce streams the job's pending tasks, in seq order, into queue, then
// the tasks that come back from a failed attempt as their backoff ends.
// Pages are read by key, each the size of the queue or minPage tasks if
// that is more, so memory stays bounded whatever the size of the job. It blocks while queue is full, and
// returns once every task it queued has an outcome and none waits.
func (c *jobController) produce(ctx context.Context, job store.Job, queue chan<- store.Task) error {
	// One instant splits the tasks waiting out a backoff (read when due)
	// from those the first pass reads.
	passDue := c.cfg.Clock.Now()
	// The finished prefix stops below the lowest task already waiting.
	if seq, err := c.db.MinWaitingSeq(ctx, job.ID); err != nil {
		return err
	} else if seq > 0 {
		c.frontier.held(seq)
		c.retries.wait()
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
	page := max(job.QueueSize, minPage)
	after := job.DoneThrough // every task up to it is final
	passDone := false
	for {
		if c.draining() {
			return nil
		}
		// Take the wake channel and the seal before reading, so that a
		// task added in between is never missed.
		wake := c.cfg.wake.C()
		waits, inflight := c.retries.state()
		var due time.Time
		if waits {
			// Tasks whose backoff has ended, a page at a time; one that is
			// in flight already (queued by the first pass, or before its
			// last outcome committed) is left alone.
			now := c.cfg.Clock.Now()
			tasks, err := c.db.DueTasks(ctx, job.ID, now, page)
			if err != nil {
				return err
			}
			sent := 0
			for _, t := range tasks {
				if !c.retries.queue(t.Seq) {
					continue
				}
				if !send(t) {
					return context.Cause(ctx)
				}
				sent++
			}
			if sent > 0 {
				continue
			}
			if len(tasks) > 0 {
				// Due, but all in flight: their outcomes come first.
				due = now.Add(c.cfg.PollEvery)
			} else if next, ok, err := c.db.NextDue(ctx, job.ID); err != nil {
				return err
			} else if ok {
				due = next
			}
		}
		if !passDone {
			if !job.Sealed {
				j, err := c.db.Job(ctx, job.ID)
				if err != nil {
					return err
				}
				job.Sealed = j.Sealed
			}
			tasks, err := c.db.PendingTasks(ctx, job.ID, after, page, passDue)
			if err != nil {
				return err
			}
			if len(tasks) > 0 {
				// A sealed job gets no new tasks: a short page ends the pass.
				passDone = job.Sealed && len(tasks) < page
				for _, t := range tasks {
					after = t.Seq
					c.frontier.queued(t.Seq)
					if !c.retries.queue(t.Seq) {
						// Due at the start, and queued already as a due retry.
						continue
					}
					if !send(t) {
						return context.Cause(ctx)
					}
				}
				continue
			}
			if job.Sealed {
				passDone = true
				continue
			}
		} else if due.IsZero() && inflight == 0 {
			return nil // nothing in flight, nothing waiting
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
